//! Helpers shared by the CLI's integration tests: the repository root, the
//! `kompakt` binary, and fixture checkpoints converted with it.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kompakt ARGS`, waited for.
pub fn kompakt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kompakt"))
        .args(args)
        .output()
        .unwrap()
}

/// `kompakt convert` of the fixture checkpoint `model` (tiny-mha, tiny-gqa)
/// to `out` as `dtype`, plus `extra`; the command's output, unchecked.
pub fn convert_fixture(model: &str, out: &Path, dtype: &str, extra: &[&str]) -> Output {
    let ckpt = root().join("tests/fixtures/models").join(model);
    let mut args = vec![
        "convert",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        dtype,
    ];
    args.extend_from_slice(extra);
    kompakt(&args)
}

/// Asserts success; the standard output.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "kompakt failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}
