//! Write-then-read round trips: random names, dtypes, shapes, bytes and
//! metadata values come back identical; writer atomicity.
mod common;

use kompakt_format::{DType, FormatError, KpkFile, KpkWriter, MetaValue, Metadata};
use proptest::prelude::*;

fn dtype() -> impl Strategy<Value = DType> {
    proptest::sample::select(DType::ALL.to_vec())
}

fn tensor() -> impl Strategy<Value = (DType, Vec<u64>, Vec<u8>)> {
    (dtype(), proptest::collection::vec(0u64..5, 0..4)).prop_flat_map(|(d, mut shape)| {
        if d.is_quantized() {
            if let Some(last) = shape.last_mut() {
                *last *= 100;
            }
        }
        // Interleaved types: rows in whole groups.
        let g = d.group_rows();
        if g > 1 {
            if shape.is_empty() {
                shape = vec![g, 100];
            } else if shape.len() == 1 {
                shape.insert(0, g);
            } else {
                shape[0] *= g;
            }
        }
        let n = d.storage_bytes(&shape).unwrap() as usize;
        (
            Just(d),
            Just(shape),
            proptest::collection::vec(any::<u8>(), n),
        )
    })
}

fn key() -> impl Strategy<Value = String> {
    "[a-z0-9_]{1,8}(\\.[a-z0-9_]{1,8}){0,3}"
}

fn value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<u64>().prop_map(MetaValue::U64),
        any::<i64>().prop_map(MetaValue::I64),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(MetaValue::F64),
        any::<bool>().prop_map(MetaValue::Bool),
        ".{0,40}".prop_map(MetaValue::Str),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(MetaValue::Bytes),
        proptest::collection::vec(-1e6f32..1e6, 0..16).prop_map(MetaValue::F32s),
        proptest::collection::vec(any::<i64>(), 0..16).prop_map(MetaValue::I64s),
        proptest::collection::vec(".{0,12}", 0..6).prop_map(MetaValue::Strs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn write_then_read_is_identical(
        tensors in proptest::collection::btree_map("[a-z][a-z0-9_.]{0,20}", tensor(), 0..6),
        meta in proptest::collection::btree_map(key(), value(), 0..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.kpk");
        let mut w = KpkWriter::create(&path).unwrap();
        let mut expected = Metadata::new();
        for (k, v) in &meta {
            w.metadata_mut().insert(k, v.clone()).unwrap();
            expected.insert(k, v.clone()).unwrap();
        }
        for (name, (d, shape, bytes)) in &tensors {
            w.write_tensor(name, *d, shape, bytes).unwrap();
        }
        let summary = w.finish().unwrap();
        prop_assert_eq!(summary.n_tensors, tensors.len());
        prop_assert_eq!(summary.file_size, std::fs::metadata(&path).unwrap().len());

        let from_disk = KpkFile::open(&path).unwrap();
        let from_mem = KpkFile::from_bytes(std::fs::read(&path).unwrap()).unwrap();
        for f in [&from_disk, &from_mem] {
            f.verify().unwrap();
            prop_assert_eq!(f.version(), (1, kompakt_format::layout::VERSION_MINOR));
            prop_assert_eq!(f.metadata(), &expected);
            let names: Vec<&str> = f.tensors().map(|t| t.name.as_str()).collect();
            let want: Vec<&str> = tensors.keys().map(String::as_str).collect();
            prop_assert_eq!(names, want);
            for (name, (d, shape, bytes)) in &tensors {
                let v = f.tensor(name).unwrap();
                prop_assert_eq!(v.dtype(), *d);
                prop_assert_eq!(v.shape(), &shape[..]);
                prop_assert_eq!(v.data, &bytes[..]);
                prop_assert_eq!(v.info.offset % 64, 0);
                prop_assert_eq!(v.data.as_ptr() as usize % 64, 0);
                if *d == DType::F32 {
                    prop_assert_eq!(v.as_f32().unwrap().len() as u64, v.numel());
                }
            }
        }
        prop_assert_eq!(from_disk.path(), Some(path.as_path()));
        prop_assert_eq!(from_mem.path(), None);
    }
}

#[test]
fn typed_views_and_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.kpk");
    let mut w = KpkWriter::create(&path).unwrap();
    let f16: Vec<half::f16> = [1.0f32, -2.5]
        .iter()
        .map(|&x| half::f16::from_f32(x))
        .collect();
    let bf16: Vec<half::bf16> = [0.5f32, 4.0]
        .iter()
        .map(|&x| half::bf16::from_f32(x))
        .collect();
    w.write_tensor("a.f16", DType::F16, &[2], bytemuck::cast_slice(&f16))
        .unwrap();
    w.write_tensor("a.bf16", DType::BF16, &[2], bytemuck::cast_slice(&bf16))
        .unwrap();
    w.write_tensor("a.i32", DType::I32, &[2], bytemuck::cast_slice(&[7i32, -9]))
        .unwrap();
    w.write_tensor("a.q", DType::Q4K, &[256], &[0; 144])
        .unwrap();
    w.write_tensor("a.scalar", DType::F32, &[], &1.5f32.to_le_bytes())
        .unwrap();
    w.finish().unwrap();
    let f = KpkFile::open(&path).unwrap();
    assert_eq!(
        f.tensor("a.f16").unwrap().to_f32_vec().unwrap(),
        [1.0, -2.5]
    );
    assert_eq!(
        f.tensor("a.bf16").unwrap().to_f32_vec().unwrap(),
        [0.5, 4.0]
    );
    assert_eq!(f.tensor("a.i32").unwrap().as_i32().unwrap(), [7, -9]);
    assert_eq!(f.tensor("a.scalar").unwrap().as_f32().unwrap(), [1.5]);
    assert_eq!(f.tensor("a.scalar").unwrap().numel(), 1);
    let q = f.tensor("a.q").unwrap();
    let e = q.to_f32_vec().unwrap_err();
    assert!(matches!(e, FormatError::Quantized { .. }));
    assert!(e.to_string().contains("kompakt-kernels"), "{e}");
    assert!(matches!(q.as_f32(), Err(FormatError::DTypeMismatch { .. })));
    assert!(matches!(
        f.tensor("a.i32").unwrap().to_f32_vec(),
        Err(FormatError::DTypeMismatch { .. })
    ));
    let e = f.tensor("nope").unwrap_err();
    assert!(matches!(e, FormatError::TensorNotFound { .. }));
    assert!(
        e.to_string().contains("nope") && e.to_string().contains("v.kpk"),
        "{e}"
    );
    assert!(f.get_tensor("nope").is_none());
}

#[test]
fn writer_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = KpkWriter::create(dir.path().join("w.kpk")).unwrap();
    w.write_tensor("t", DType::F32, &[2], &[0; 8]).unwrap();
    assert!(matches!(
        w.write_tensor("t", DType::F32, &[2], &[0; 8]),
        Err(FormatError::DuplicateTensor { .. })
    ));
    let e = w
        .write_tensor("u", DType::Q8_0, &[2, 40], &[0; 68])
        .unwrap_err();
    assert!(
        matches!(
            e,
            FormatError::ByteLengthMismatch {
                expected: Some(136),
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        w.write_tensor("", DType::U8, &[0], &[]),
        Err(FormatError::InvalidTensorName { .. })
    ));
    assert!(matches!(
        w.write_tensor("r", DType::U8, &[1; 9], &[0]),
        Err(FormatError::InvalidInput { .. })
    ));
    assert!(matches!(
        w.write_tensor("o", DType::U8, &[u64::MAX, u64::MAX, 0], &[]),
        Err(FormatError::ByteLengthMismatch { expected: None, .. })
    ));
    let e = w
        .write_tensor("x4", DType::Q4KX4, &[6, 256], &[0; 6 * 144])
        .unwrap_err();
    assert!(matches!(e, FormatError::BadShape { .. }), "{e}");
    assert!(e.to_string().contains("6 row"), "{e}");
    assert!(w.metadata_mut().insert("Not.Valid", 1u64).is_err());
    w.finish().unwrap();
}

#[test]
fn unfinished_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.kpk");
    {
        let mut w = KpkWriter::create(&path).unwrap();
        w.write_tensor("t", DType::U8, &[3 << 20], &vec![1; 3 << 20])
            .unwrap();
        let tmp: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(tmp.len(), 1, "only the temporary file exists while writing");
        let tmp = tmp[0].as_ref().unwrap().path();
        assert!(tmp
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("x.kpk.tmp-"));
        let bytes = std::fs::read(&tmp).unwrap();
        assert!(matches!(
            KpkFile::from_bytes(bytes),
            Err(FormatError::BadMagic { .. })
        ));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn finish_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.kpk");
    common::write_sample(&path);
    let mut w = KpkWriter::create(&path).unwrap();
    w.write_tensor("only", DType::U8, &[1], &[9]).unwrap();
    w.finish().unwrap();
    assert_eq!(KpkFile::open(&path).unwrap().n_tensors(), 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn io_errors_name_the_path() {
    // A missing directory is named as such, with the user's path (not the
    // temporary file's).
    let e = KpkWriter::create("/nonexistent-dir/m.kpk").unwrap_err();
    assert!(matches!(e, FormatError::InvalidInput { .. }));
    assert_eq!(
        e.to_string(),
        "/nonexistent-dir/m.kpk: cannot write here: the directory `/nonexistent-dir` does not exist"
    );
    let e = KpkFile::open("/nonexistent-dir/m.kpk").unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent-dir/m.kpk") && e.to_string().contains("open"),
        "{e}"
    );
}

#[test]
fn tokenizer_json_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.kpk");
    let json = br#"{"version":"1.0","model":{"type":"BPE","vocab":{"a":0}}}"#;
    let mut w = KpkWriter::create(&path).unwrap();
    kompakt_format::set_tokenizer_json(w.metadata_mut(), json).unwrap();
    w.finish().unwrap();
    let f = KpkFile::open(&path).unwrap();
    assert_eq!(kompakt_format::tokenizer_json(f.metadata()).unwrap(), json);
    let e = f.metadata().get_u64("llm.hidden_size").unwrap_err();
    assert!(
        e.to_string().contains("t.kpk") && e.to_string().contains("llm.hidden_size"),
        "{e}"
    );
}

#[test]
fn empty_and_non_files_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.kpk");
    std::fs::write(&empty, b"").unwrap();
    let e = KpkFile::open(&empty).unwrap_err();
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("empty.kpk"), "{e}");
    assert!(KpkFile::open(dir.path()).is_err());
}

#[test]
fn streamed_tensor_equals_one_shot_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let one = dir.path().join("one.kpk");
    let mut w = KpkWriter::create(&one).unwrap();
    w.write_tensor("t", DType::F32, &[32, 32], &bytes).unwrap();
    w.finish().unwrap();
    let two = dir.path().join("two.kpk");
    let mut w = KpkWriter::create(&two).unwrap();
    w.begin_tensor("t", DType::F32, &[32, 32]).unwrap();
    for c in bytes.chunks(1000) {
        w.write_chunk(c).unwrap();
    }
    w.end_tensor().unwrap();
    w.finish().unwrap();
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    KpkFile::open(&two).unwrap().verify().unwrap();

    // Too few or too many bytes are refused.
    let mut w = KpkWriter::create(dir.path().join("bad.kpk")).unwrap();
    w.begin_tensor("t", DType::F32, &[2]).unwrap();
    w.write_chunk(&[0; 4]).unwrap();
    assert!(matches!(
        w.end_tensor(),
        Err(FormatError::ByteLengthMismatch { .. })
    ));
    w.begin_tensor("u", DType::F32, &[1]).unwrap();
    assert!(matches!(
        w.write_chunk(&[0; 8]),
        Err(FormatError::ByteLengthMismatch { .. })
    ));
    w.begin_tensor("v", DType::F32, &[1]).unwrap();
    assert!(w.finish().is_err());
}

#[cfg(target_os = "linux")]
#[test]
fn huge_page_copy_reads_what_the_mapping_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.kpk");
    common::write_sample(&path);
    let mapped = KpkFile::open(&path).unwrap();
    let copied = KpkFile::open_in_huge_pages(&path).unwrap();
    assert_eq!(copied.as_bytes(), mapped.as_bytes());
    assert_eq!(copied.path(), Some(path.as_path()));
    // The copy starts on a 2 MiB boundary (every tensor stays 64-aligned).
    assert_eq!(copied.as_bytes().as_ptr() as usize % (2 << 20), 0);
    copied.verify().unwrap();
    assert!(mapped.n_tensors() > 0);
    for t in mapped.tensors() {
        let (a, b) = (
            copied.tensor(&t.name).unwrap(),
            mapped.tensor(&t.name).unwrap(),
        );
        assert_eq!(a.data, b.data, "{}", t.name);
    }

    // Errors name the file, as `open`'s do.
    let e = KpkFile::open_in_huge_pages(dir.path().join("missing.kpk")).unwrap_err();
    assert!(
        e.to_string().contains("missing.kpk") && e.to_string().contains("open"),
        "{e}"
    );
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.kpk");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = KpkFile::open_in_huge_pages(&cut).unwrap_err();
    let e2 = KpkFile::open(&cut).unwrap_err();
    assert_eq!(e.to_string(), e2.to_string());
}
