//! Writes the fuzz seed corpus when run with `--ignored`.
mod common;

use common::Raw;
use kompakt_format::DType;

#[test]
#[ignore = "writes fuzz/corpus/parse; run by hand before fuzzing"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sample.kpk"), common::sample_bytes()).unwrap();
    std::fs::write(dir.join("empty.kpk"), Raw::new().build()).unwrap();
    let two = Raw::new()
        .meta("general.name", "x")
        .meta("prompt.languages", vec!["de"])
        .meta_raw("future.value", 99, &[1, 2, 3])
        .tensor("a", DType::I32, &[2], 0, &[1, 0, 0, 0, 2, 0, 0, 0])
        .tensor("b", DType::BF16, &[1, 2], 64, &[0, 0x3f, 0, 0x40])
        .build();
    std::fs::write(dir.join("raw.kpk"), two).unwrap();
}
