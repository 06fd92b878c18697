//! Prompts a user sets: `convert --instruction LANG=TEXT` and
//! `--prompt-template FILE`, `translate --instruction`, and what `inspect`
//! shows. (Parity of such prompts with transformers: tests/parity.rs.)
mod common;

use std::path::Path;
use std::process::Output;

use common::{convert_fixture, kompakt, ok, root};

fn fails(o: Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected failure: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn convert(out: &Path, extra: &[&str]) -> Output {
    convert_fixture("tiny-mha", out, "f32", extra)
}

fn translate(model: &Path, extra: &[&str]) -> String {
    let wav = root().join("tests/fixtures/audio/short_16k_mono_s16.wav");
    let mut args = vec![
        "translate",
        "--model",
        model.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    args.push(wav.to_str().unwrap());
    ok(kompakt(&args))
}

const INSTR: &str = "Please render this English recording in German.";

#[test]
fn instructions_and_templates_are_stored_shown_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.kpk");
    ok(convert(&plain, &[]));
    let custom = dir.path().join("custom.kpk");
    let arg = format!("de={INSTR}");
    ok(convert(
        &custom,
        &[
            "--instruction",
            &arg,
            "--instruction",
            "fr=Translate the English speech into French:",
        ],
    ));

    // inspect shows the template and each language's instruction.
    let text = ok(kompakt(&["inspect", custom.to_str().unwrap()]));
    assert!(text.contains("style chat, languages de, fr, zh"), "{text}");
    assert!(
        text.contains("template:    \"<|im_start|>system\\nYou are a helpful assistant."),
        "{text}"
    );
    assert!(
        text.contains(&format!("  de           \"{INSTR}\"")),
        "{text}"
    );
    assert!(
        text.contains("  zh           \"Translate the English speech into Chinese:\""),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(kompakt(&[
        "inspect",
        "--json",
        custom.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(json["prompts"]["instructions"]["de"], INSTR);
    assert_eq!(
        json["prompts"]["instructions"]["fr"],
        "Translate the English speech into French:"
    );
    assert!(json["prompts"]["full"]["de"]
        .as_str()
        .unwrap()
        .contains(INSTR));

    // The stored instruction and the same one given per call translate alike;
    // the built-in instruction gives another output (random weights, but a
    // different prompt).
    let stored = translate(&custom, &["--lang", "de"]);
    let one_off = translate(&plain, &["--instruction", INSTR]);
    let builtin = translate(&plain, &["--lang", "de"]);
    assert_eq!(stored, one_off);
    assert_ne!(stored, builtin);
    assert!(!stored.trim().is_empty());

    // A user's template file.
    let tpl = dir.path().join("prompt.txt");
    std::fs::write(
        &tpl,
        "<|im_start|>user\n{audio}\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
    )
    .unwrap();
    let templ = dir.path().join("templ.kpk");
    ok(convert(
        &templ,
        &[
            "--prompt-template",
            tpl.to_str().unwrap(),
            "--instruction",
            &arg,
        ],
    ));
    let json: serde_json::Value = serde_json::from_str(&ok(kompakt(&[
        "inspect",
        "--json",
        templ.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(json["prompt_style"], "custom");
    assert_eq!(
        json["prompts"]["full"]["de"],
        format!("<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>\n{INSTR}<|im_end|>\n<|im_start|>assistant\n")
    );
    assert_ne!(translate(&templ, &["--lang", "de"]), stored);
}

#[test]
fn bad_prompt_options_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.kpk");
    let tpl = dir.path().join("t.txt");
    std::fs::write(&tpl, "{instruction} but no audio").unwrap();
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec!["--instruction".into(), "Translate it".into()],
            "write LANG=TEXT",
        ),
        (
            vec!["--instruction".into(), "de=".into()],
            "--instruction de: the instruction is empty",
        ),
        (
            vec!["--instruction".into(), "d e=x".into()],
            "language code must be",
        ),
        (
            vec![
                "--instruction".into(),
                "de=a".into(),
                "--instruction".into(),
                "de=b".into(),
            ],
            "language `de` is given twice",
        ),
        (
            vec!["--prompt-template".into(), tpl.to_str().unwrap().into()],
            "must contain `{audio}` exactly once (found 0)",
        ),
    ];
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(convert(&out, &a));
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "{args:?}: temporary files left behind");
    }
    let missing = dir.path().join("none.txt");
    let err = fails(convert(
        &out,
        &["--prompt-template", missing.to_str().unwrap()],
    ));
    assert!(err.contains("none.txt"), "{err}");

    ok(convert(&out, &[]));
    let wav = root().join("tests/fixtures/audio/short_16k_mono_s16.wav");
    let err = fails(kompakt(&[
        "translate",
        "--model",
        out.to_str().unwrap(),
        "--instruction",
        "has <|AUDIO|> inside",
        wav.to_str().unwrap(),
    ]));
    assert!(err.contains("contains `<|AUDIO|>`"), "{err}");
}
