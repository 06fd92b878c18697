//! `kompakt score` from the command line: the scores sacreBLEU gives on the committed files
//! (tests/fixtures/mt, made by make_scores.py), and clear errors for bad input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mt")
}

fn score(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kompakt"))
        .arg("score")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_scores_equal_sacrebleus() {
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mt().join("scores.json")).unwrap()).unwrap();
    for c in f["cases"].as_array().unwrap() {
        let hyp = mt().join(c["hyp"].as_str().unwrap());
        let reference = mt().join(c["ref"].as_str().unwrap());
        let o = score(&[
            "--hyp",
            hyp.to_str().unwrap(),
            "--ref",
            reference.to_str().unwrap(),
            "--lang",
            c["lang"].as_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for key in ["bleu", "chrf"] {
            let (got, want) = (j[key].as_f64().unwrap(), c[key].as_f64().unwrap());
            // To two decimals as printed, and in fact to rounding error.
            assert!(
                (got - want).abs() < 1e-9,
                "{hyp:?} {key}: {got} vs sacreBLEU {want}"
            );
        }
        assert_eq!(j["bleu_detail"]["tokenize"], c["tokenize"]);
    }
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (two, three, empty) = (
        write("two", "a\nb\n"),
        write("three", "a\nb\nc\n"),
        write("empty", ""),
    );
    let err = |o: Output| {
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        String::from_utf8(o.stderr).unwrap()
    };
    let e = err(score(&["--hyp", &two, "--ref", &three, "--lang", "de"]));
    assert!(e.contains("has 2 lines but") && e.contains("has 3"), "{e}");
    let e = err(score(&["--hyp", &empty, "--ref", &three, "--lang", "de"]));
    assert!(
        e.contains("hypotheses") && e.contains("the file is empty"),
        "{e}"
    );
    let e = err(score(&["--hyp", &two, "--ref", &two, "--lang", "d e"]));
    assert!(e.contains("--lang `d e`"), "{e}");
    let missing = dir.path().join("none.txt");
    let e = err(score(&[
        "--hyp",
        missing.to_str().unwrap(),
        "--ref",
        &two,
        "--lang",
        "de",
    ]));
    assert!(e.contains("none.txt"), "{e}");
    // Human-readable output: both scores, two decimals.
    let o = score(&["--hyp", &two, "--ref", &two, "--lang", "de"]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.starts_with("BLEU 0.00") || text.starts_with("BLEU "),
        "{text}"
    );
    assert!(text.contains("chrF"), "{text}");
}
