//! How a checkpoint was made by `kompakt-train` (structured pruning, distillation), read from its
//! `kompakt_train.json` into the `.kpk`'s provenance: the techniques list and the datasets of
//! `kompakt inspect --submission`, and the whole record under `training` in the recipe.
//!
//! The record is written by `train/src/kompakt_train/checkpoint.py`; fields this reader does
//! not know are kept in the recipe and otherwise ignored.
use std::path::Path;

use serde_json::Value;

use crate::checkpoint::read_json;
use crate::error::{ConvertError, Result};

/// File name of the record inside a checkpoint directory.
pub const FILE: &str = "kompakt_train.json";

/// File name of the kept vocabulary that `kompakt-train prune --keep-vocab` writes.
pub const VOCAB_FILE: &str = "kompakt_vocab.json";

/// The token ids a pruned student was trained on (`{"kept_ids": [...]}`), or
/// `None` when the checkpoint has no such file. `kompakt convert` trims the
/// vocabulary to them when no `--keep-vocab` is given.
pub fn kept_vocab(dir: &Path) -> Result<Option<Vec<u32>>> {
    let path = dir.join(VOCAB_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let (v, _) = read_json(&path)?;
    let bad = |msg: &str| ConvertError::Json {
        path: path.clone(),
        msg: msg.into(),
    };
    let ids = v
        .get("kept_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("expected an object with a `kept_ids` list"))?;
    ids.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| bad("`kept_ids` must hold token ids (non-negative integers)"))
        })
        .collect::<Result<Vec<u32>>>()
        .map(Some)
}

/// The record, or `None` when the checkpoint was not made by `kompakt-train`.
pub fn read(dir: &Path) -> Result<Option<Value>> {
    let path = dir.join(FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let (v, _) = read_json(&path)?;
    if !v.is_object() {
        return Err(ConvertError::Json {
            path,
            msg: "expected a JSON object".into(),
        });
    }
    Ok(Some(v))
}

fn steps(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("steps_done")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn dims_change(v: &Value) -> String {
    let (Some(t), Some(s)) = (v.get("teacher_dims"), v.get("student_dims")) else {
        return String::new();
    };
    let changed: Vec<String> = [
        ("layers", "decoder layers"),
        ("hidden", "hidden"),
        ("ffn", "FFN"),
        ("heads", "heads"),
        ("kv_heads", "KV heads"),
        ("audio_layers", "audio layers"),
        ("audio_ffn", "audio FFN"),
    ]
    .iter()
    .filter_map(|(key, label)| {
        let (a, b) = (t.get(key)?.as_u64()?, s.get(key)?.as_u64()?);
        (a != b).then(|| format!("{label} {a} -> {b}"))
    })
    .collect();
    if changed.is_empty() {
        "no dimension changed".into()
    } else {
        changed.join(", ")
    }
}

/// One line per training stage, for `provenance.techniques`.
pub fn techniques(v: &Value) -> Vec<String> {
    steps(v)
        .filter_map(|step| match step.get("stage")?.as_str()? {
            "prune" => Some(format!(
                "structured pruning of the teacher by kompakt-train ({}; ranked by {}; {} -> {} parameters)",
                dims_change(v),
                step.get("ranked_by").and_then(Value::as_str).unwrap_or("?"),
                v.get("teacher_params").and_then(Value::as_u64).unwrap_or(0),
                v.get("student_params").and_then(Value::as_u64).unwrap_or(0),
            )),
            stage @ ("distill" | "qat") => Some(format!(
                "{} from the teacher by kompakt-train ({}; {} tokens, {} steps; held-out KL {:.4} -> {:.4})",
                if stage == "qat" {
                    "quantization-aware knowledge distillation (weights trained in their kompakt formats)"
                } else {
                    "knowledge distillation"
                },
                step.get("loss").and_then(Value::as_str).unwrap_or("KL"),
                step.get("tokens").and_then(Value::as_u64).unwrap_or(0),
                step.get("steps").and_then(Value::as_u64).unwrap_or(0),
                step.get("kl_initial").and_then(Value::as_f64).unwrap_or(f64::NAN),
                step.get("kl_final").and_then(Value::as_f64).unwrap_or(f64::NAN),
            )),
            _ => None,
        })
        .collect()
}

/// The data files of the distillation stages, for `provenance.datasets`.
pub fn datasets(v: &Value) -> Vec<String> {
    let mut out = vec![];
    for step in steps(v) {
        let Some(data) = step.get("data") else {
            continue;
        };
        for key in ["text", "segments", "audio"] {
            let items: Vec<&Value> = match data.get(key) {
                Some(Value::Array(a)) => a.iter().collect(),
                Some(x @ Value::String(_)) => vec![x],
                _ => vec![],
            };
            for i in items.into_iter().filter_map(Value::as_str) {
                out.push(format!("distillation {key}: {i}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn techniques_and_datasets_from_a_record() {
        let v: Value = serde_json::json!({
            "teacher_dims": {"layers": 24, "hidden": 896, "ffn": 4864, "heads": 14, "kv_heads": 2},
            "student_dims": {"layers": 24, "hidden": 640, "ffn": 2432, "heads": 14, "kv_heads": 2},
            "teacher_params": 630, "student_params": 400,
            "steps_done": [
                {"stage": "prune", "ranked_by": "weight norms"},
                {"stage": "distill", "loss": "forward KL", "tokens": 3000, "steps": 12,
                 "kl_initial": 2.5, "kl_final": 0.75, "data": {"text": ["a.en", "b.de"], "segments": null}},
                {"stage": "something new"}
            ]
        });
        let t = techniques(&v);
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(
            t[0].contains("hidden 896 -> 640, FFN 4864 -> 2432"),
            "{}",
            t[0]
        );
        assert!(!t[0].contains("layers"), "{}", t[0]);
        assert!(t[0].contains("630 -> 400 parameters"), "{}", t[0]);
        assert!(
            t[1].contains("3000 tokens, 12 steps; held-out KL 2.5000 -> 0.7500"),
            "{}",
            t[1]
        );
        assert_eq!(
            datasets(&v),
            ["distillation text: a.en", "distillation text: b.de"]
        );
    }

    #[test]
    fn absent_record_is_none_and_bad_json_is_named() {
        let dir = std::env::temp_dir().join(format!("kompakt-training-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read(&dir).unwrap().is_none());
        std::fs::write(dir.join(FILE), b"{not json").unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains(FILE), "{e}");
        std::fs::write(dir.join(FILE), b"[1]").unwrap();
        assert!(read(&dir).unwrap_err().to_string().contains("JSON object"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
