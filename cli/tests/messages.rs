//! Bad input a newcomer tries, and the one-line message each gets: the file
//! named once, the cause in plain words, the user's paths (never a temporary
//! one), and a quiet end when the reader of stdout goes away.
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{convert_fixture, kompakt, ok, root};

/// The one error line of a failed command.
#[track_caller]
fn error(o: Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected failure: {o:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err.trim_end().to_string()
}

fn model() -> &'static str {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("messages-tiny-mha.kpk");
        ok(convert_fixture("tiny-mha", &out, "f32", &[]));
        out.to_str().unwrap().to_string()
    })
}

fn wav() -> String {
    root()
        .join("tests/fixtures/audio/short_16k_mono_s16.wav")
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_model_path_that_is_not_a_kpk_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let e = error(kompakt(&["translate", "--model", d, &wav()]));
    assert_eq!(e, format!("error: {d}: is a directory, not a .kpk file"));
    let e = error(kompakt(&["inspect", d]));
    assert_eq!(e, format!("error: {d}: is a directory, not a .kpk file"));
    let e = error(kompakt(&["translate", "--model", "/dev/null", &wav()]));
    assert_eq!(
        e,
        "error: /dev/null: is a character device, not a .kpk file"
    );

    // Another file: its first bytes as hex and text, the path once.
    let other = dir.path().join("notes.kpk");
    std::fs::write(&other, b"JDEI\x01\x02 some text that is not a model").unwrap();
    let p = other.to_str().unwrap();
    let e = error(kompakt(&["translate", "--model", p, &wav()]));
    assert_eq!(
        e,
        format!(
            "error: {p}: not a .kpk file (or an unfinished write): field `magic` at offset 0 \
             holds the bytes 4a 44 45 49 01 02 20 73 (\"JDEI.. s\") where a .kpk file has \"KOMPAKT\\0\""
        )
    );
    assert_eq!(e.matches(p).count(), 1, "{e}");
}

#[test]
fn a_wav_that_is_not_a_wav_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("noise.wav");
    std::fs::write(
        &bad,
        [
            0xc6u8, 0x82, b'e', b'a', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
        ],
    )
    .unwrap();
    let b = bad.to_str().unwrap();
    let e = error(kompakt(&["translate", "--model", model(), b]));
    assert!(
        e.contains(&format!(
            "{b}: not a WAV file (no RIFF tag: it starts with the bytes c6 82 65 61 (\"..ea\") \
             where a WAV file starts with \"RIFF\")"
        )),
        "{e}"
    );
    assert!(!e.contains("\\\\"), "{e}");
}

#[test]
fn convert_errors_name_the_users_output_path() {
    let dir = tempfile::tempdir().unwrap();
    let convert = |out: &Path| convert_fixture("tiny-mha", out, "f32", &[]);
    let missing = dir.path().join("no/such/dir/m.kpk");
    let e1 = error(convert(&missing));
    assert!(
        e1.contains(&format!(
            "{}: cannot write here: the directory `{}` does not exist",
            missing.display(),
            missing.parent().unwrap().display()
        )),
        "{e1}"
    );
    let e2 = error(convert(dir.path()));
    assert!(
        e2.contains("is a directory; give the path of the file to write"),
        "{e2}"
    );
    for e in [e1, e2] {
        assert!(!e.contains(".tmp-"), "{e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_empty_segment_list_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("empty.yaml", ""), ("none.yaml", "[]\n")] {
        let list = dir.path().join(name);
        std::fs::write(&list, text).unwrap();
        let out = dir.path().join("hyp.txt");
        let e = error(kompakt(&[
            "translate",
            "--model",
            model(),
            "--segments",
            list.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]));
        assert!(
            e.contains(&format!(
                "{}: the segment list has no entries",
                list.display()
            )),
            "{e}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let w = wav();
    let mut args = vec!["translate", "--model", model(), "--max-tokens", "4"];
    args.extend(std::iter::repeat_n(w.as_str(), 3));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kompakt"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line is written, as `| head -0`.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    assert!(!err.contains("error"), "{err}");
}
