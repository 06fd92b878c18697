//! `kompakt score` from the command line: the scores sacreBLEU gives on the committed files
//! (tests/fixtures/mt, made by make_scores.py), and clear errors for bad input.
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{convert_fixture, kompakt, ok};

fn mt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mt")
}

fn score(args: &[&str]) -> Output {
    kompakt(&[&["score"], args].concat())
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

/// `kompakt eval --mt-src/--mt-ref`: every model translates every line; the
/// hypotheses land in --mt-out and score as `kompakt score` scores them.
#[test]
fn eval_translation_meter() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    for (name, dtype) in [("ref.kpk", "f32"), ("cand.kpk", "q8_0")] {
        ok(convert_fixture(
            "tiny-mha",
            &dir.path().join(name),
            dtype,
            &[],
        ));
    }
    std::fs::write(
        d("src.en"),
        "Please save your work.\nThe file was not found.\n",
    )
    .unwrap();
    std::fs::write(
        d("ref.de"),
        "Bitte speichern Sie Ihre Arbeit.\nDie Datei wurde nicht gefunden.\n",
    )
    .unwrap();
    std::fs::write(d("zh.txt"), "请保存您的工作。\n找不到文件。\n").unwrap();
    let out = d("hyps");
    let (reference, candidate, src) = (d("ref.kpk"), d("cand.kpk"), d("src.en"));
    let eval = |extra: &[&str]| {
        let base = [
            "eval",
            "--reference",
            &reference,
            "--model",
            &candidate,
            "--mt-src",
            &src,
        ];
        kompakt(&[&base[..], extra].concat())
    };
    let o = eval(&[
        "--mt-ref",
        &format!("de={}", d("ref.de")),
        "--mt-ref",
        &d("zh.txt"),
        "--mt-out",
        &out,
        "--mt-max-tokens",
        "6",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (who, mt) in [
        ("ref", &j["reference"]["mt"]),
        ("cand", &j["candidates"][0]["mt"]),
    ] {
        for (lang, reference) in [("de", d("ref.de")), ("zh", d("zh.txt"))] {
            let m = &mt[lang];
            let hyp = format!("{out}/{who}.{lang}.hyp");
            assert_eq!(m["hyp"], hyp.as_str());
            assert_eq!(m["lines"], 2);
            assert_eq!(std::fs::read_to_string(&hyp).unwrap().lines().count(), 2);
            let s = kompakt(&[
                "score", "--hyp", &hyp, "--ref", &reference, "--lang", lang, "--json",
            ]);
            let s: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
            assert_eq!(s["bleu"], m["bleu"], "{who} {lang}");
            assert_eq!(s["chrf"], m["chrf"], "{who} {lang}");
        }
    }
    // Bad input: a reference of another length, a language the model has no prompt for.
    std::fs::write(d("short.de"), "Nur eine Zeile.\n").unwrap();
    let fail = |extra: &[&str]| {
        let o = eval(extra);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        String::from_utf8(o.stderr).unwrap()
    };
    let e = fail(&["--mt-ref", &d("short.de")]);
    assert!(
        e.contains("1 lines, but --mt-src") && e.contains("has 2"),
        "{e}"
    );
    let e = fail(&["--mt-ref", &format!("fr={}", d("ref.de")), "--mt-out", &out]);
    assert!(
        e.contains("(language `fr`)") && e.contains("available: de, zh"),
        "{e}"
    );
    let e = fail(&["--mt-ref", &d("ref.de"), "--mt-ref", &d("src.en")]);
    assert!(e.contains("src.en (language `en`)"), "{e}");
}
