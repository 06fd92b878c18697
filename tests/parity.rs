//! The runtime against transformers: log-mel features, encoder and projector
//! outputs, prompt ids and logits, greedy and 4-beam token ids, for both
//! fixture models (plain multi-head and grouped KV heads) and every input.
use std::path::Path;
use std::sync::Arc;

use kompakt_converter::PromptStyle;
use kompakt_format::DType;
use kompakt_runtime::{
    KvPrecision, Model, Quiet, Session, Timings, TranslateOptions, PREFILL_CHUNK,
};
use kompakt_tests::*;

/// Largest logit difference allowed with the f16 KV cache (the fixtures'
/// logits have a standard deviation of about 30 and reach 133; f16 rounding
/// of keys and values moved them by at most 0.035 when this was written).
const F16_KV_LOGIT_TOL: f32 = 0.1;

const AUDIO: [&str; 3] = [
    "short_16k_mono_s16",
    "medium_44k1_stereo_s24",
    "long_48k_mono_f32",
];

#[test]
fn audio_front_end_matches_whisper_feature_extractor() {
    let model = Model::load(converted("tiny-mha", DType::F32, PromptStyle::Chat)).unwrap();
    let session = Session::new(Arc::new(model), 2).unwrap();
    for name in AUDIO {
        let g = load_golden(&fixtures().join(format!("golden/audio/{name}.safetensors")));
        let pcm =
            kompakt_audio::load_16k_mono(&fixtures().join(format!("audio/{name}.wav"))).unwrap();
        let wave = assert_close(
            &format!("{name} waveform"),
            &pcm,
            &g["waveform_16k"].data,
            1e-5,
        );
        let mel = session.features(&pcm).unwrap();
        let valid = g["feature_attention_mask"]
            .data
            .iter()
            .filter(|&&m| m > 0.5)
            .count();
        assert_eq!(mel.valid_frames, valid, "{name}: valid frames");
        let feat = assert_close(
            &format!("{name} log-mel"),
            &mel.data,
            &g["input_features"].data,
            1e-4,
        );
        eprintln!("{name}: waveform max abs diff {wave:.2e}, log-mel {feat:.2e}");
    }
}

fn check_case(model_name: &str, audio: &str, lang: &str, style: PromptStyle, suffix: &str) {
    check_file(
        &converted(model_name, DType::F32, style),
        model_name,
        audio,
        lang,
        suffix,
    );
}

fn check_file(kpk: &Path, model_name: &str, audio: &str, lang: &str, suffix: &str) {
    let stem = format!("{audio}_{lang}{suffix}");
    let dir = fixtures().join("golden").join(model_name);
    let g = load_golden(&dir.join(format!("{stem}.safetensors")));
    let j = load_json(&dir.join(format!("{stem}.json")));
    let model = Arc::new(Model::load(kpk).unwrap());
    let mut s = Session::new(model, 2).unwrap();
    // Exactness against the reference needs the exact keys and values; the
    // default f16 cache is checked against it below.
    s.set_kv_precision(KvPrecision::F32);

    let pcm = kompakt_audio::load_16k_mono(&fixtures().join(format!("audio/{audio}.wav"))).unwrap();
    let mel = s.features(&pcm).unwrap();
    let emb = s.encode(&mel).unwrap();
    assert_eq!(
        emb.n as u64,
        j["n_audio_tokens"].as_u64().unwrap(),
        "{stem}: audio tokens"
    );
    let d = g["encoder_output"].shape[1];
    let enc = assert_close(
        &format!("{stem} encoder"),
        &emb.encoder,
        &g["encoder_output"].data[..emb.n * d],
        1e-3,
    );
    let proj = assert_close(
        &format!("{stem} projector"),
        &emb.projected,
        &g["projector_output"].data,
        1e-3,
    );

    let (ids, logits) = s.prompt_logits(lang, &emb).unwrap();
    let want: Vec<u32> = g["input_ids"].data.iter().map(|&v| v as u32).collect();
    assert_eq!(ids, want, "{stem}: prompt ids");
    let lg = assert_close(&format!("{stem} logits"), &logits, &g["logits"].data, 1e-3);

    let ids_of = |key: &str| -> Vec<u32> {
        j[key]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let generated_ids = |s: &mut Session, beams: usize| -> Vec<u32> {
        let opts = TranslateOptions {
            lang: lang.into(),
            beams,
            max_new_tokens: 20,
            ..Default::default()
        };
        s.generate(&emb, &opts, &mut Quiet, Timings::default())
            .unwrap()
            .token_ids
    };
    for (beams, key) in [(1, "greedy"), (4, "beam")] {
        assert_eq!(
            generated_ids(&mut s, beams),
            ids_of(key),
            "{stem}: {key} ids"
        );
    }

    // Prefill in micro-batches of 5 positions: same logits and greedy ids.
    s.set_prefill_chunk(5);
    assert!(ids.len() > 10, "{stem}: prompt too short to chunk");
    let (_, logits_c) = s.prompt_logits(lang, &emb).unwrap();
    let lgc = assert_close(
        &format!("{stem} logits, prefill in chunks of 5"),
        &logits_c,
        &g["logits"].data,
        1e-3,
    );
    assert_eq!(
        generated_ids(&mut s, 1),
        ids_of("greedy"),
        "{stem}: chunked greedy ids"
    );
    s.set_prefill_chunk(PREFILL_CHUNK);

    // The f16 KV cache (the default): close to the reference, not identical.
    s.set_kv_precision(KvPrecision::F16);
    let (_, logits16) = s.prompt_logits(lang, &emb).unwrap();
    let lg16 = max_abs_diff(&logits16, &g["logits"].data);
    assert!(
        lg16 > 0.0 && lg16 <= F16_KV_LOGIT_TOL,
        "{stem}: logits with the f16 KV cache differ by {lg16} (limit {F16_KV_LOGIT_TOL})"
    );
    eprintln!("{model_name}/{stem}: encoder {enc:.2e}, projector {proj:.2e}, logits {lg:.2e} (chunked prefill {lgc:.2e}, f16 KV cache {lg16:.2e}); greedy and beam ids equal");
}

#[test]
fn tiny_mha_matches_transformers() {
    for audio in AUDIO {
        check_case("tiny-mha", audio, "de", PromptStyle::Chat, "");
    }
    check_case("tiny-mha", AUDIO[0], "zh", PromptStyle::Chat, "");
    check_case("tiny-mha", AUDIO[0], "de", PromptStyle::Base, "_base");
}

#[test]
fn tiny_gqa_matches_transformers() {
    for audio in AUDIO {
        check_case("tiny-gqa", audio, "de", PromptStyle::Chat, "");
    }
}

/// A user's own instruction (`--instruction de=...`) and template
/// (`--prompt-template`), given at conversion or per call: the prompt ids,
/// logits and generated ids equal transformers' for that prompt.
#[test]
fn custom_prompts_match_transformers() {
    let golden = |suffix: &str| {
        load_json(
            &fixtures()
                .join("golden/tiny-mha")
                .join(format!("{}_de{suffix}.json", AUDIO[0])),
        )
    };
    let (custom, template) = (golden("_custom"), golden("_template"));
    let instruction = custom["instruction"].as_str().unwrap().to_string();
    assert_eq!(template["instruction"].as_str().unwrap(), instruction);
    let dir = tempfile::tempdir().unwrap();
    let convert = |name: &str, template: Option<&str>| {
        let out = dir.path().join(name);
        let mut opts = kompakt_converter::ConvertOptions::new(
            fixtures().join("models/tiny-mha"),
            &out,
            DType::F32,
        );
        opts.prompt_style = Some(PromptStyle::Chat);
        opts.instructions = vec![("de".into(), instruction.clone())];
        opts.prompt_template = template.map(str::to_string);
        kompakt_converter::convert(&opts, &mut |_| true).unwrap();
        out
    };
    // Stored at conversion: the chat template with the user's instruction,
    // then the user's template.
    check_file(
        &convert("custom.kpk", None),
        "tiny-mha",
        AUDIO[0],
        "de",
        "_custom",
    );
    let kpk = convert("template.kpk", template["template"].as_str());
    check_file(&kpk, "tiny-mha", AUDIO[0], "de", "_template");
    let m = Model::load(&kpk).unwrap();
    assert_eq!(m.config().prompt_style, "custom");
    assert_eq!(m.config().instructions["de"], instruction);
    // The built-in Chinese instruction is still there, in the user's template.
    assert!(m
        .template("zh")
        .unwrap()
        .starts_with("<|im_start|>user\n<|audio_bos|>"));

    // Given per call on a file converted with the built-in prompts.
    let model =
        Arc::new(Model::load(converted("tiny-mha", DType::F32, PromptStyle::Chat)).unwrap());
    let mut s = Session::new(model, 2).unwrap();
    s.set_kv_precision(KvPrecision::F32);
    let pcm =
        kompakt_audio::load_16k_mono(&fixtures().join(format!("audio/{}.wav", AUDIO[0]))).unwrap();
    for (beams, key) in [(1, "greedy"), (4, "beam")] {
        let opts = TranslateOptions {
            lang: "zh".into(), // not used with an instruction
            instruction: Some(instruction.clone()),
            beams,
            max_new_tokens: 20,
            ..Default::default()
        };
        let out = s.translate(&pcm, &opts, &mut Quiet).unwrap();
        let want: Vec<u32> = custom[key]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(out.token_ids, want, "one-off instruction: {key} ids");
        assert_eq!(
            out.prompt_tokens as u64,
            custom["seq_len"].as_u64().unwrap()
        );
    }
    // A bad one-off instruction is refused before any audio work.
    let bad = TranslateOptions {
        instruction: Some("  ".into()),
        ..Default::default()
    };
    let err = s.translate(&pcm, &bad, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("instruction is empty"), "{err}");
}

/// The translation meter's text prompt (the English text where the audio
/// goes): prompt ids, logits and greedy ids equal transformers'.
#[test]
fn text_prompt_matches_transformers() {
    let model =
        Arc::new(Model::load(converted("tiny-mha", DType::F32, PromptStyle::Chat)).unwrap());
    let mut s = Session::new(model.clone(), 2).unwrap();
    s.set_kv_precision(KvPrecision::F32);
    for lang in ["de", "zh"] {
        let dir = fixtures().join("golden/tiny-mha");
        let g = load_golden(&dir.join(format!("text_{lang}.safetensors")));
        let j = load_json(&dir.join(format!("text_{lang}.json")));
        let ids = model
            .text_prompt_ids(lang, j["text"].as_str().unwrap())
            .unwrap();
        let want: Vec<u32> = g["input_ids"].data.iter().map(|&v| v as u32).collect();
        assert_eq!(ids, want, "{lang}: text prompt ids");
        let logits = s.text_logits(&ids, ids.len()).unwrap();
        let lg = assert_close(
            &format!("text {lang} logits"),
            &logits,
            &g["logits"].data,
            1e-3,
        );
        let greedy: Vec<u32> = j["greedy"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let out = s.generate_text(&ids, greedy.len(), false).unwrap();
        assert_eq!(out.token_ids, greedy, "{lang}: greedy ids");
        eprintln!(
            "text prompt {lang}: {} tokens, logits {lg:.2e}, greedy ids equal",
            ids.len()
        );
    }
}
