//! The tiny-mha fixture converted to `.kpk` once per test process.
//!
//! The conversion runs the `kompakt` CLI (not the converter library, whose
//! options struct changes often): `KOMPAKT_TEST_MODEL` names a ready `.kpk`,
//! `KOMPAKT_BIN` a CLI; otherwise the CLI next to this test's target
//! directory is used, built with `cargo build -p kompakt-cli` when missing.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn wav() -> PathBuf {
    root().join("tests/fixtures/audio/short_16k_mono_s16.wav")
}

/// `<target>/<profile>` of this test binary (`.../debug/deps/misuse-*`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

fn kompakt_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KOMPAKT_BIN") {
        return PathBuf::from(p);
    }
    let dir = profile_dir();
    let bin = dir.join("kompakt");
    if !bin.exists() {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(p) => p.to_string(),
        };
        let target = dir.parent().expect("target dir");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "kompakt-cli", "--profile", &profile])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(root())
            .status()
            .expect("running cargo build -p kompakt-cli");
        assert!(status.success(), "cargo build -p kompakt-cli failed");
    }
    bin
}

static MODEL: OnceLock<PathBuf> = OnceLock::new();
static TMP: OnceLock<tempfile::TempDir> = OnceLock::new();

pub fn tmp() -> &'static Path {
    TMP.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// The converted fixture model (f32).
pub fn model_path() -> &'static Path {
    MODEL.get_or_init(|| {
        if let Some(p) = std::env::var_os("KOMPAKT_TEST_MODEL") {
            return PathBuf::from(p);
        }
        let out = tmp().join("tiny-mha-f32.kpk");
        let status = Command::new(kompakt_bin())
            .arg("convert")
            .arg("--checkpoint")
            .arg(root().join("tests/fixtures/models/tiny-mha"))
            .arg("--out")
            .arg(&out)
            .args(["--dtype", "f32"])
            .status()
            .expect("running kompakt convert");
        assert!(status.success(), "kompakt convert failed");
        out
    })
}
