//! `kompakt bench` on the tiny fixture model: every stage measured, the
//! requested number of tokens decoded, memory parts consistent, bad
//! arguments refused with a message.
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{convert_fixture, kompakt};

/// The tiny fixture model in q4_k, converted once per test run.
fn model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(convert).clone()
}

fn convert() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-tiny-gqa-q4k.kpk");
    let o = convert_fixture("tiny-gqa", &out, "q4_k", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn json_report_covers_every_stage() {
    let m = model();
    let o = kompakt(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--audio-seconds",
        "2,6",
        "--threads",
        "1",
        "--repeat",
        "1",
        "--tokens",
        "7",
        "--probe-mib",
        "64",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let file_bytes = r["model"]["file_bytes"].as_u64().unwrap();
    assert_eq!(file_bytes, std::fs::metadata(&m).unwrap().len());
    let per_token = r["model"]["decode_bytes_per_token"].as_u64().unwrap();
    assert!(per_token > 0 && per_token < file_bytes, "{per_token}");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        // EOS is suppressed: exactly the requested tokens come out.
        assert_eq!(run["decode_tokens"], 7);
        for k in [
            "features_s",
            "encoder_s",
            "prefill_s",
            "decode_s",
            "total_s",
        ] {
            assert!(f(run, k) > 0.0, "{k} in {run}");
        }
        let parts = f(run, "features_s") + f(run, "encoder_s") + f(run, "prefill_s");
        assert!(f(run, "total_s") >= parts, "{run}");
        assert!((f(run, "rtf") - f(run, "total_s") / f(run, "audio_s")).abs() < 1e-9);
        let frac = f(run, "bandwidth_fraction");
        let bw = f(&r["bandwidth"][0], "read_gb_s");
        assert!((frac - f(run, "decode_gb_s") / bw).abs() < 1e-9);
        let frac = f(run, "model_bandwidth_fraction");
        let bw = f(&r["bandwidth"][0], "model_read_gb_s");
        assert!(bw > 0.0, "{r}");
        assert!((frac - f(run, "decode_gb_s") / bw).abs() < 1e-9);
    }
    // 25 audio tokens per second of audio (Whisper frames pooled by 2).
    assert_eq!(runs[0]["audio_tokens"], 50);
    assert_eq!(runs[1]["audio_tokens"], 150);
    let p0 = runs[0]["prompt_tokens"].as_u64().unwrap();
    let p1 = runs[1]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(p1 - p0, 100);
    let mem = &r["memory"];
    let peak = mem["peak_rss_bytes"].as_u64().unwrap();
    let file = mem["peak_mapped_bytes"].as_u64().unwrap();
    let anon = mem["peak_anon_bytes"].as_u64().unwrap();
    assert!(peak > 0 && file <= peak && anon <= peak, "{mem}");
    let resident = mem["model_resident_bytes"].as_u64().unwrap();
    assert!(
        resident > 0 && resident <= file_bytes.next_multiple_of(4096),
        "{mem}"
    );
    assert!(f(&r["load"], "cold_s") > 0.0);
}

#[test]
fn bad_arguments_are_named() {
    let m = model();
    let m = m.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--audio-seconds", "31"], "at most 30 s"),
        (&["--threads", "0"], "--threads"),
        (&["--tokens", "0"], "--tokens"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["bench", "--model", m];
        args.extend_from_slice(extra);
        let o = kompakt(&args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let o = kompakt(&["bench", "--model", "/nonexistent.kpk", "--no-cold"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.kpk"));
}
