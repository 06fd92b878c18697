//! `kompakt inspect` end to end: a small file written with the writer,
//! checked in text and JSON form, and a corrupted copy.
use kompakt_format::{DType, KpkWriter};
use std::path::{Path, PathBuf};
use std::process::Command;

fn write_model(path: &Path) {
    let mut w = KpkWriter::create(path).unwrap();
    let m = w.metadata_mut();
    m.insert("general.architecture", "qwen2_audio").unwrap();
    m.insert("general.name", "tiny-test").unwrap();
    m.insert("audio.d_model", 8u64).unwrap();
    m.insert("audio.n_layers", 1u64).unwrap();
    m.insert("llm.hidden_size", 16u64).unwrap();
    m.insert("llm.n_layers", 1u64).unwrap();
    m.insert("llm.vocab_size", 4u64).unwrap();
    m.insert("prompt.style", "chat").unwrap();
    m.insert("prompt.languages", vec!["de"]).unwrap();
    m.insert("provenance.techniques", vec!["q8_0 quantization"])
        .unwrap();
    m.insert("provenance.datasets", vec!["none"]).unwrap();
    m.insert("params.projector", 128u64).unwrap();
    m.insert("params.total", 1u64).unwrap();
    w.write_tensor("audio.conv1.weight", DType::F32, &[8], &[0; 32])
        .unwrap();
    w.write_tensor("projector.weight", DType::F16, &[16, 8], &[0; 256])
        .unwrap();
    w.write_tensor(
        "llm.layers.0.mlp.up.weight",
        DType::Q8_0,
        &[2, 64],
        &[0; 136],
    )
    .unwrap();
    w.write_tensor("llm.norm.weight", DType::F32, &[16], &[0; 64])
        .unwrap();
    w.write_tensor("llm.embed.weight", DType::F16, &[4, 16], &[0; 128])
        .unwrap();
    w.finish().unwrap();
}

fn model(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&p);
    write_model(&p);
    p
}

fn inspect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kompakt"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn human_output() {
    let p = model("inspect-human.kpk");
    let size = std::fs::metadata(&p).unwrap().len();
    let out = inspect(&[p.to_str().unwrap(), "--verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "qwen2_audio (tiny-test)",
        "hidden 16",
        &format!("storage:       {size} bytes"),
        "Bin5 (under 200 MB)",
        "all 5 tensors verified",
        "q8_0",
        "warning: params.total = 1 in metadata, but the tensors hold 344",
        "TEAM_IWSLT25_ModelCompression_en-de_Bin5_constrained_primary",
        "q8_0 quantization",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("params.projector ="), "{text}");
}

#[test]
fn json_output() {
    let p = model("inspect-json.kpk");
    let size = std::fs::metadata(&p).unwrap().len();
    let out = inspect(&[p.to_str().unwrap(), "--json", "--team", "ACME"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["storage"]["bytes"], size);
    assert_eq!(v["size_bin"]["number"], 5);
    assert_eq!(v["params"]["audio_encoder"]["params"], 8);
    assert_eq!(v["params"]["projector"]["params"], 128);
    assert_eq!(v["params"]["llm_layers"]["params"], 128 + 16);
    assert_eq!(v["params"]["embeddings"]["params"], 64);
    assert_eq!(v["params"]["lm_head"]["params"], 0);
    assert_eq!(v["params"]["total"]["params"], 344);
    assert_eq!(v["params"]["llm_layers"]["bytes"], 136 + 64);
    assert_eq!(v["params"]["projector"]["bits_per_weight"], 16.0);
    assert_eq!(v["llm"]["hidden"], 16);
    assert_eq!(v["param_mismatches"][0]["key"], "params.total");
    assert_eq!(
        v["submission"]["model_names"][0],
        "ACME_IWSLT25_ModelCompression_en-de_Bin5_constrained_primary"
    );
}

#[test]
fn corrupted_file_fails_with_one_line() {
    let p = model("inspect-bad.kpk");
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    let bad = p.with_file_name("inspect-bad-flipped.kpk");
    std::fs::write(&bad, &bytes).unwrap();
    let out = inspect(&[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && err.contains("checksum"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let mut bytes = std::fs::read(&p).unwrap();
    bytes[128] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    assert!(inspect(&[bad.to_str().unwrap()]).status.success());
    let out = inspect(&[bad.to_str().unwrap(), "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("audio.conv1.weight"), "{err}");

    let out = inspect(&["/nonexistent/x.kpk"]);
    assert_eq!(out.status.code(), Some(1));
}
