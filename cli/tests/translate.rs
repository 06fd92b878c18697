//! `kompakt translate` end to end on the long-form fixture (tests/fixtures/longform: 41 s of
//! espeak-ng speech, 10 segments) with the tiny random-weight model: segment lists, automatic
//! segmentation, resume, bad entries, and the evaluation script.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn longform() -> PathBuf {
    root().join("tests/fixtures/longform")
}

fn kompakt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kompakt"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "kompakt failed: {}", stderr(&o));
    o
}

/// The tiny fixture model, converted once per test run.
fn model() -> &'static str {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("translate-tiny-mha.kpk");
        common::ok(common::convert_fixture("tiny-mha", &out, "f32", &[]));
        out.to_str().unwrap().to_string()
    })
}

/// `translate --model M --lang de --max-tokens 6 --threads 1` plus `args`.
fn translate(args: &[&str]) -> Output {
    let mut all = vec![
        "translate",
        "--model",
        model(),
        "--lang",
        "de",
        "--max-tokens",
        "6",
        "--threads",
        "1",
    ];
    all.extend_from_slice(args);
    kompakt(&all)
}

fn lines(text: &str) -> Vec<String> {
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines().map(str::to_string).collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fixture's segment list translated into `dir/full.txt`.
fn full_run(dir: &Path) -> (PathBuf, Vec<String>) {
    let out = dir.join("full.txt");
    let yaml = longform().join("talk.yaml");
    ok(translate(&[
        "--segments",
        s(&yaml),
        "--wav-dir",
        s(&longform()),
        "-o",
        s(&out),
    ]));
    let l = lines(&read(&out));
    (out, l)
}

#[test]
fn segment_list_gives_one_line_per_entry_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_, full) = full_run(dir.path());
    assert_eq!(full.len(), 10, "{full:?}");
    assert!(full.iter().any(|l| !l.is_empty()), "{full:?}");

    // Entries 3 and 7 alone, in reverse order (block style): the same lines, reversed.
    let yaml = read(&longform().join("talk.yaml"));
    let entries: Vec<&str> = yaml.lines().collect();
    let block = |flow: &str| {
        let inner = flow.trim_start_matches("- {").trim_end_matches('}');
        let mut out = String::new();
        for (k, kv) in inner.split(", ").enumerate() {
            out.push_str(if k == 0 { "- " } else { "  " });
            out.push_str(kv);
            out.push('\n');
        }
        out
    };
    let sub = dir.path().join("sub.yaml");
    std::fs::write(
        &sub,
        format!("# two entries\n{}{}", block(entries[6]), block(entries[2])),
    )
    .unwrap();
    // Default --wav-dir: the list's directory; there is no WAV there.
    let o = translate(&["--segments", s(&sub)]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("segment 1") && err.contains("talk.wav"),
        "{err}"
    );
    let o = ok(translate(&[
        "--segments",
        s(&sub),
        "--wav-dir",
        s(&longform()),
    ]));
    let got = lines(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(got, vec![full[6].clone(), full[2].clone()]);
}

#[test]
fn segments_over_30s_are_split_and_joined() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("long.yaml");
    std::fs::write(
        &yaml,
        "- {duration: 35.0, offset: 0.5, speaker_id: spk.1, wav: talk.wav}\n\
         - {duration: 4.0, offset: 36.0, speaker_id: spk.1, wav: talk.wav}\n",
    )
    .unwrap();
    let o = ok(translate(&[
        "--segments",
        s(&yaml),
        "--wav-dir",
        s(&longform()),
        "--json",
    ]));
    let out = String::from_utf8(o.stdout).unwrap();
    let v: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["pieces"], 2, "{out}");
    assert_eq!(v[1]["pieces"], 1, "{out}");
    assert_eq!(v[0]["offset"], 0.5);
}

#[test]
fn automatic_segmentation_round_trips_through_the_saved_list() {
    let dir = tempfile::tempdir().unwrap();
    let wav = longform().join("talk.wav");
    let out = dir.path().join("auto.txt");
    let seg = dir.path().join("auto.yaml");
    ok(translate(&[
        s(&wav),
        "-o",
        s(&out),
        "--segments-out",
        s(&seg),
    ]));
    let auto = lines(&read(&out));
    let yaml = read(&seg);
    let n = yaml.lines().count();
    assert_eq!(auto.len(), n, "{yaml}");
    assert!((8..=12).contains(&n), "{yaml}");
    // Every reference segment's middle lies inside one detected segment.
    let parse = |l: &str, key: &str| -> f64 {
        let at = l.find(&format!("{key}: ")).unwrap() + key.len() + 2;
        l[at..].split([',', '}']).next().unwrap().parse().unwrap()
    };
    let detected: Vec<(f64, f64)> = yaml
        .lines()
        .map(|l| {
            (
                parse(l, "offset"),
                parse(l, "offset") + parse(l, "duration"),
            )
        })
        .collect();
    for w in detected.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap: {yaml}");
    }
    for r in read(&longform().join("talk.yaml")).lines() {
        let mid = parse(r, "offset") + parse(r, "duration") / 2.0;
        assert!(
            detected.iter().any(|&(a, b)| a <= mid && mid <= b),
            "{r} not covered by {yaml}"
        );
    }

    let again = dir.path().join("again.txt");
    ok(translate(&[
        "--segments",
        s(&seg),
        "--wav-dir",
        s(&longform()),
        "-o",
        s(&again),
    ]));
    assert_eq!(read(&again), read(&out));
}

#[test]
fn short_files_give_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture's third sentence as a file of its own (16-bit PCM, 16 kHz).
    let a =
        kompakt_audio::read_wav_range(&longform().join("talk.wav"), 8.808938, 2.629938).unwrap();
    let short = dir.path().join("short.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&short, spec).unwrap();
    for x in &a.samples {
        w.write_sample((x * 32768.0).round() as i16).unwrap();
    }
    w.finalize().unwrap();
    let o = ok(translate(&[s(&short), s(&short)]));
    let got = lines(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], got[1]);
    let (_, full) = full_run(dir.path());
    assert_eq!(got[0], full[2]);
}

#[test]
fn resume_after_a_truncated_output_gives_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (full_path, full) = full_run(dir.path());
    let whole = read(&full_path);
    let yaml = longform().join("talk.yaml");
    let out = dir.path().join("resumed.txt");
    // Four complete lines and a partial fifth one.
    let mut partial: String = full[..4].iter().map(|l| format!("{l}\n")).collect();
    partial.push_str("half a li");
    std::fs::write(&out, &partial).unwrap();
    let o = ok(translate(&[
        "--segments",
        s(&yaml),
        "--wav-dir",
        s(&longform()),
        "-o",
        s(&out),
        "--resume",
    ]));
    assert!(stderr(&o).contains("resuming: 4 of 10"), "{}", stderr(&o));
    assert_eq!(read(&out), whole);
    // Resuming a finished run changes nothing.
    ok(translate(&[
        "--segments",
        s(&yaml),
        "--wav-dir",
        s(&longform()),
        "-o",
        s(&out),
        "--resume",
    ]));
    assert_eq!(read(&out), whole);
}

#[test]
fn bad_entries_fail_or_give_empty_lines() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("bad.yaml");
    std::fs::write(
        &yaml,
        "- {duration: 2.6, offset: 8.8, speaker_id: spk.1, wav: talk.wav}\n\
         - {duration: 5.0, offset: 40.0, speaker_id: spk.1, wav: talk.wav}\n\
         - {duration: 1.0, offset: 0.0, speaker_id: spk.1, wav: missing.wav}\n\
         - {duration: 2.6, offset: 8.8, speaker_id: spk.1, wav: talk.wav}\n",
    )
    .unwrap();
    let out = dir.path().join("out.txt");
    let wav_dir = longform();
    let args = [
        "--segments",
        s(&yaml),
        "--wav-dir",
        s(&wav_dir),
        "-o",
        s(&out),
    ];
    let o = translate(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("segment 2") && err.contains("line 2") && err.contains("talk.wav"),
        "{err}"
    );
    assert!(err.contains("past the end"), "{err}");

    let mut kg = args.to_vec();
    kg.push("--keep-going");
    let o = ok(translate(&kg));
    let err = stderr(&o);
    assert!(err.contains("warning: segment 2"), "{err}");
    assert!(
        err.contains("warning: segment 3") && err.contains("missing.wav"),
        "{err}"
    );
    let got = lines(&read(&out));
    assert_eq!(got.len(), 4);
    assert_eq!(got[1], "");
    assert_eq!(got[2], "");
    assert_eq!(got[0], got[3]);
}

#[test]
fn malformed_yaml_is_an_error_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("broken.yaml");
    std::fs::write(
        &yaml,
        "- {duration: 2.6, offset: 8.8, speaker_id: spk.1, wav: talk.wav}\n\
         - {duration: 2.6, offset: 8.8, speaker_id: spk.1, wav: talk.wav\n",
    )
    .unwrap();
    let o = translate(&["--segments", s(&yaml), "--wav-dir", s(&longform())]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("broken.yaml") && err.contains("line "),
        "{err}"
    );
    std::fs::write(&yaml, "- {duration: abc, offset: 0, wav: talk.wav}\n").unwrap();
    let o = translate(&["--segments", s(&yaml), "--wav-dir", s(&longform())]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 1"), "{}", stderr(&o));
}

/// The evaluation script on the segment-list output and on the automatic segmentation output
/// (resegmented); skipped with a message when sacrebleu (or mweralign) is missing.
#[test]
fn evaluation_script_scores_the_output() {
    let has = |module: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("sacrebleu") {
        eprintln!(
            "SKIPPED: python3 with sacrebleu is needed (pip install -r scripts/eval/requirements.txt)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (hyp, _) = full_run(dir.path());
    let script = root().join("scripts/eval/evaluate.py");
    let refs = longform().join("reference.de");
    let run = |hyp: &Path| {
        let o = Command::new("python3")
            .args([s(&script), "--hyp", s(hyp), "--ref", s(&refs), "--json"])
            .arg("--src")
            .arg(longform().join("source.en"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v
    };
    let v = run(&hyp);
    assert_eq!(v["segments"], 10);
    assert_eq!(v["resegmented"], false);
    assert!(v["bleu"].as_f64().unwrap() >= 0.0 && v["chrf"].as_f64().is_some());
    assert!(v["comet"].is_null());

    if !has("mweralign") {
        eprintln!("SKIPPED resegmentation: pip install mweralign==1.4.1");
        return;
    }
    // Two lines for ten references: resegmented.
    let text = read(&hyp);
    let joined: Vec<String> = text.lines().map(str::to_string).collect();
    let two = dir.path().join("two.txt");
    std::fs::write(
        &two,
        format!("{}\n{}\n", joined[..5].join(" "), joined[5..].join(" ")),
    )
    .unwrap();
    let v = run(&two);
    assert_eq!(v["segments"], 10);
    assert_eq!(v["hypothesis_lines"], 2);
    assert_eq!(v["resegmented"], true);
}

#[test]
fn submission_name_and_description() {
    let m = model();
    let size = std::fs::metadata(m).unwrap().len();
    let o = ok(kompakt(&[
        "inspect",
        "--submission",
        "--team",
        "KOMPAKT",
        "--lang",
        "de",
        "--condition",
        "unconstrained",
        "--type",
        "contrastive",
        m,
    ]));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.starts_with(
            "Model name: KOMPAKT_IWSLT25_ModelCompression_en-de_Bin5_unconstrained_contrastive\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("Exact storage size: {size} bytes")),
        "{text}"
    );
    for field in ["Number of parameters: ", "Techniques: ", "Data: "] {
        assert!(text.contains(field), "{text}");
    }
    let o = ok(kompakt(&[
        "inspect",
        "--submission",
        "--json",
        "--team",
        "T",
        m,
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["model_name"],
        "T_IWSLT25_ModelCompression_en-de_Bin5_constrained_primary"
    );
    assert_eq!(v["storage_bytes"], size);
    let o = kompakt(&["inspect", "--submission", "--lang", "fr", m]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--lang fr"), "{}", stderr(&o));
}

#[cfg(target_os = "linux")]
#[test]
fn huge_pages_translate_like_the_mapping() {
    let wav = root().join("tests/fixtures/audio/short_16k_mono_s16.wav");
    let mapped = ok(translate(&["--json", s(&wav)]));
    let huge = ok(translate(&["--json", "--huge-pages", s(&wav)]));
    // Same token ids and text; the JSON also carries timings, so compare those fields.
    let field = |o: &Output, key: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_slice(o.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        v[key].to_string()
    };
    for key in ["text", "token_ids"] {
        assert_eq!(field(&huge, key), field(&mapped, key), "{key}");
    }
    assert_ne!(field(&mapped, "token_ids"), "null");
    // A missing model is named, as without the flag.
    let o = kompakt(&[
        "translate",
        "--model",
        "/nonexistent/m.kpk",
        "--huge-pages",
        s(&wav),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/m.kpk"), "{}", stderr(&o));
}
