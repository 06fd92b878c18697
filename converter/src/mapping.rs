//! The one table that maps Hugging Face tensor names to `.kpk` names and
//! shapes (normative list in `format-spec/FORMAT.md`).
use crate::hparams::HParams;

/// What a tensor is, which decides how it may be compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Norm weights and biases: kept in f32.
    Vector,
    /// Convolution kernels and position embeddings: float only.
    Float,
    /// Linear layer weights: any dtype.
    Linear,
    /// Token embeddings (rows looked up, not multiplied).
    Embedding,
    /// Output projection.
    LmHead,
}

/// Component a tensor's parameters are counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    AudioEncoder,
    Projector,
    LlmLayers,
    Embeddings,
    LmHead,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub hf: String,
    pub kpk: String,
    pub shape: Vec<usize>,
    pub role: Role,
    pub component: Component,
    /// Decoder or encoder layer index, if any.
    pub layer: Option<usize>,
}

fn spec(
    hf: String,
    kpk: String,
    shape: Vec<usize>,
    role: Role,
    component: Component,
    layer: Option<usize>,
) -> TensorSpec {
    TensorSpec {
        hf,
        kpk,
        shape,
        role,
        component,
        layer,
    }
}

/// Every tensor of the model in file order. `enc_layers` and `llm_layers`
/// are the source layer indices to keep (all of them without pruning); kept
/// layers are renumbered from 0 in the output.
pub fn tensors(hp: &HParams, enc_layers: &[usize], llm_layers: &[usize]) -> Vec<TensorSpec> {
    use Component::*;
    use Role::*;
    let d = hp.d_model;
    let mut v = Vec::new();
    let a = "audio_tower";
    v.push(spec(
        format!("{a}.conv1.weight"),
        "audio.conv1.weight".into(),
        vec![d, hp.n_mels, 3],
        Float,
        AudioEncoder,
        None,
    ));
    v.push(spec(
        format!("{a}.conv1.bias"),
        "audio.conv1.bias".into(),
        vec![d],
        Vector,
        AudioEncoder,
        None,
    ));
    v.push(spec(
        format!("{a}.conv2.weight"),
        "audio.conv2.weight".into(),
        vec![d, d, 3],
        Float,
        AudioEncoder,
        None,
    ));
    v.push(spec(
        format!("{a}.conv2.bias"),
        "audio.conv2.bias".into(),
        vec![d],
        Vector,
        AudioEncoder,
        None,
    ));
    v.push(spec(
        format!("{a}.embed_positions.weight"),
        "audio.pos_embed".into(),
        vec![hp.max_source_positions, d],
        Float,
        AudioEncoder,
        None,
    ));
    for (i, &src) in enc_layers.iter().enumerate() {
        let h = format!("{a}.layers.{src}");
        let k = format!("audio.layers.{i}");
        let l = Some(src);
        let mut push = |hf: &str, kpk: &str, shape: Vec<usize>, role: Role| {
            v.push(spec(
                format!("{h}.{hf}"),
                format!("{k}.{kpk}"),
                shape,
                role,
                AudioEncoder,
                l,
            ));
        };
        push(
            "self_attn_layer_norm.weight",
            "attn_norm.weight",
            vec![d],
            Vector,
        );
        push(
            "self_attn_layer_norm.bias",
            "attn_norm.bias",
            vec![d],
            Vector,
        );
        push(
            "self_attn.q_proj.weight",
            "attn.q.weight",
            vec![d, d],
            Linear,
        );
        push("self_attn.q_proj.bias", "attn.q.bias", vec![d], Vector);
        push(
            "self_attn.k_proj.weight",
            "attn.k.weight",
            vec![d, d],
            Linear,
        );
        push(
            "self_attn.v_proj.weight",
            "attn.v.weight",
            vec![d, d],
            Linear,
        );
        push("self_attn.v_proj.bias", "attn.v.bias", vec![d], Vector);
        push(
            "self_attn.out_proj.weight",
            "attn.o.weight",
            vec![d, d],
            Linear,
        );
        push("self_attn.out_proj.bias", "attn.o.bias", vec![d], Vector);
        push(
            "final_layer_norm.weight",
            "ffn_norm.weight",
            vec![d],
            Vector,
        );
        push("final_layer_norm.bias", "ffn_norm.bias", vec![d], Vector);
        push("fc1.weight", "ffn.fc1.weight", vec![hp.enc_ffn, d], Linear);
        push("fc1.bias", "ffn.fc1.bias", vec![hp.enc_ffn], Vector);
        push("fc2.weight", "ffn.fc2.weight", vec![d, hp.enc_ffn], Linear);
        push("fc2.bias", "ffn.fc2.bias", vec![d], Vector);
    }
    v.push(spec(
        format!("{a}.layer_norm.weight"),
        "audio.norm.weight".into(),
        vec![d],
        Vector,
        AudioEncoder,
        None,
    ));
    v.push(spec(
        format!("{a}.layer_norm.bias"),
        "audio.norm.bias".into(),
        vec![d],
        Vector,
        AudioEncoder,
        None,
    ));
    v.push(spec(
        "multi_modal_projector.linear.weight".into(),
        "projector.weight".into(),
        vec![hp.hidden, d],
        Linear,
        Projector,
        None,
    ));
    v.push(spec(
        "multi_modal_projector.linear.bias".into(),
        "projector.bias".into(),
        vec![hp.hidden],
        Vector,
        Projector,
        None,
    ));

    let (h, q, kv, f) = (
        hp.hidden,
        hp.heads * hp.head_dim,
        hp.kv_heads * hp.head_dim,
        hp.ffn,
    );
    let m = "language_model.model";
    v.push(spec(
        format!("{m}.embed_tokens.weight"),
        "llm.embed.weight".into(),
        vec![hp.vocab, h],
        Embedding,
        Embeddings,
        None,
    ));
    for (i, &src) in llm_layers.iter().enumerate() {
        let hf = format!("{m}.layers.{src}");
        let k = format!("llm.layers.{i}");
        let l = Some(src);
        let mut push = |name: &str, kpk: &str, shape: Vec<usize>, role: Role| {
            v.push(spec(
                format!("{hf}.{name}"),
                format!("{k}.{kpk}"),
                shape,
                role,
                LlmLayers,
                l,
            ));
        };
        push(
            "input_layernorm.weight",
            "attn_norm.weight",
            vec![h],
            Vector,
        );
        push(
            "self_attn.q_proj.weight",
            "attn.q.weight",
            vec![q, h],
            Linear,
        );
        push("self_attn.q_proj.bias", "attn.q.bias", vec![q], Vector);
        push(
            "self_attn.k_proj.weight",
            "attn.k.weight",
            vec![kv, h],
            Linear,
        );
        push("self_attn.k_proj.bias", "attn.k.bias", vec![kv], Vector);
        push(
            "self_attn.v_proj.weight",
            "attn.v.weight",
            vec![kv, h],
            Linear,
        );
        push("self_attn.v_proj.bias", "attn.v.bias", vec![kv], Vector);
        push(
            "self_attn.o_proj.weight",
            "attn.o.weight",
            vec![h, q],
            Linear,
        );
        push(
            "post_attention_layernorm.weight",
            "ffn_norm.weight",
            vec![h],
            Vector,
        );
        push(
            "mlp.gate_proj.weight",
            "mlp.gate.weight",
            vec![f, h],
            Linear,
        );
        push("mlp.up_proj.weight", "mlp.up.weight", vec![f, h], Linear);
        push(
            "mlp.down_proj.weight",
            "mlp.down.weight",
            vec![h, f],
            Linear,
        );
    }
    v.push(spec(
        format!("{m}.norm.weight"),
        "llm.norm.weight".into(),
        vec![h],
        Vector,
        LlmLayers,
        None,
    ));
    v.push(spec(
        "language_model.lm_head.weight".into(),
        "llm.lm_head.weight".into(),
        vec![hp.vocab, h],
        Role::LmHead,
        Component::LmHead,
        None,
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_of_the_real_model() {
        let hp = crate::synth::qwen2_audio_7b(32, 32);
        let all: Vec<usize> = (0..32).collect();
        let t = tensors(&hp, &all, &all);
        let count = |c: Component| -> usize {
            t.iter()
                .filter(|s| s.component == c)
                .map(|s| s.shape.iter().product::<usize>())
                .sum()
        };
        // Figures of ../shared/docs/qwen2-audio.md.
        assert_eq!(count(Component::Embeddings), 156032 * 4096);
        assert_eq!(count(Component::LmHead), 156032 * 4096);
        assert!((count(Component::LlmLayers) as f64 / 1e9 - 6.477).abs() < 0.001);
        assert!((count(Component::AudioEncoder) as f64 / 1e9 - 0.637).abs() < 0.001);
        assert!((count(Component::Projector) as f64 / 1e6 - 5.2).abs() < 0.1);
        let total: usize = t.iter().map(|s| s.shape.iter().product::<usize>()).sum();
        assert!((total as f64 / 1e9 - 8.397).abs() < 0.001);
        let names: std::collections::HashSet<_> = t.iter().map(|s| s.kpk.clone()).collect();
        assert_eq!(names.len(), t.len());
    }
}
