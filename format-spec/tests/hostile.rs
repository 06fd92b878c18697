//! Hostile files: truncations, bit flips, structural faults behind a correct
//! checksum. Each must fail with its specific error variant, naming the
//! file, the field and the offset, and never panic.
mod common;

use common::Raw;
use kompakt_format::layout::{self, tag, DirEntry, Header, ENDIAN_TAG};
use kompakt_format::{parse, DType, FormatError, KpkFile};

fn err(bytes: &[u8]) -> FormatError {
    let e = parse(bytes).expect_err("hostile file must not parse");
    let e2 = KpkFile::from_slice(bytes).unwrap_err();
    assert_eq!(e.to_string(), e2.to_string());
    let msg = e.to_string();
    assert!(msg.starts_with("<memory>"), "message names the file: {msg}");
    e
}

fn assert_names(e: &FormatError, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should contain {p:?}");
    }
}

/// Rewrites the header of a valid file and recomputes its checksum.
fn patch(mut bytes: Vec<u8>, f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut h = Header::decode(bytes.first_chunk().unwrap());
    f(&mut h);
    layout::seal(&mut bytes, h);
    bytes
}

fn header_of(bytes: &[u8]) -> Header {
    Header::decode(bytes.first_chunk().unwrap())
}

#[test]
fn sample_is_valid() {
    let bytes = common::sample_bytes();
    let f = KpkFile::from_slice(&bytes).unwrap();
    f.verify().unwrap();
    assert_eq!(f.n_tensors(), 3);
}

#[test]
fn truncated_anywhere_is_an_error() {
    let bytes = common::sample_bytes();
    for cut in 0..bytes.len() {
        let e = err(&bytes[..cut]);
        match cut {
            0..=127 => {
                assert!(matches!(e, FormatError::Truncated { .. }), "cut {cut}: {e}");
                assert_names(&e, &["header", "offset 0"]);
            }
            _ => {
                assert!(
                    matches!(e, FormatError::FileSizeMismatch { actual, .. } if actual == cut as u64),
                    "cut {cut}: {e}"
                );
                assert_names(&e, &["file_size", "offset 24"]);
            }
        }
    }
}

#[test]
fn appended_bytes_are_detected() {
    let mut bytes = common::sample_bytes();
    bytes.push(0);
    assert!(matches!(err(&bytes), FormatError::FileSizeMismatch { .. }));
}

#[test]
fn every_flipped_byte_outside_the_data_is_an_error() {
    let bytes = common::sample_bytes();
    let h = header_of(&bytes);
    let region = (0..128).chain(h.meta_offset as usize..bytes.len());
    for i in region {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let e = err(&b);
            if i >= 128 || (96..128).contains(&i) {
                assert!(
                    matches!(e, FormatError::ChecksumMismatch { .. }),
                    "byte {i}: {e}"
                );
                assert_names(&e, &["checksum", "offset 120"]);
            }
        }
    }
}

#[test]
fn flipped_tensor_byte_fails_verify_naming_the_tensor() {
    let bytes = common::sample_bytes();
    let f = KpkFile::from_slice(&bytes).unwrap();
    for t in f.tensors() {
        for i in [t.offset, t.offset + t.nbytes - 1] {
            let mut b = bytes.clone();
            b[i as usize] ^= 0x10;
            let g = KpkFile::from_slice(&b)
                .expect("tensor bytes are not covered by the header checksum");
            let e = g.verify().unwrap_err();
            assert!(
                matches!(&e, FormatError::TensorChecksumMismatch { name, .. } if *name == t.name),
                "{e}"
            );
            assert_names(&e, &[&t.name, &format!("offset {}", t.offset)]);
        }
    }
}

#[test]
fn bad_magic_and_unfinished_header() {
    let e = err(&[0u8; 200]);
    assert!(matches!(e, FormatError::BadMagic { .. }));
    assert_names(&e, &["magic", "offset 0"]);
    assert!(matches!(
        err(b"GGUF\x03\0\0\0"),
        FormatError::BadMagic { .. }
    ));
}

#[test]
fn byte_swapped_file() {
    let mut h = Header::new();
    h.endian_tag = ENDIAN_TAG.swap_bytes();
    h.major = 1u16.swap_bytes();
    let mut r = Raw::new();
    r.header = h;
    let e = err(&r.build());
    assert!(matches!(e, FormatError::ByteSwapped { .. }), "{e}");
    assert_names(&e, &["endian_tag", "offset 8", "byte-swapped"]);
    let mut r = Raw::new();
    r.header.endian_tag = 7;
    assert!(matches!(
        err(&r.build()),
        FormatError::BadEndianTag { found: 7, .. }
    ));
}

#[test]
fn newer_major_is_unsupported_newer_minor_is_read() {
    let mut r = Raw::new();
    r.header.major = 2;
    r.header.minor = 0;
    let e = err(&r.build());
    assert!(matches!(
        e,
        FormatError::UnsupportedVersion { major: 2, .. }
    ));
    assert_names(&e, &["version", "offset 12", "unsupported", "2.0"]);

    let mut r = Raw::new()
        .meta("general.name", "m")
        .meta_raw("future.thing", 42, &[1, 2, 3, 4, 5])
        .tensor("t", DType::U8, &[2], 0, &[1, 2]);
    r.header.minor = 7;
    r.header.header_size = 192;
    let f = KpkFile::from_slice(&r.build()).unwrap();
    assert_eq!(f.version(), (1, 7));
    assert_eq!(f.header().data_offset, 192);
    assert_eq!(f.tensor("t").unwrap().data, [1, 2]);
    assert_eq!(f.metadata().len(), 1);
    assert_eq!(f.skipped_keys(), ["future.thing"]);
    f.verify().unwrap();
}

#[test]
fn unknown_dtype_is_unsupported() {
    let mut e = DirEntry::new("w", DType::U8, &[4], 0, 4, 0);
    e.dtype_id = 999;
    let r = Raw::new().tensor("a", DType::U8, &[1], 0, &[0]).entry(e);
    let e = err(&r.build());
    assert!(
        matches!(&e, FormatError::UnknownDType { id: 999, name, .. } if name == "w"),
        "{e}"
    );
    assert_names(&e, &["`w`", "dtype", "unsupported dtype id 999"]);
}

#[test]
fn interleaved_dtype_with_a_partial_group_of_rows_is_rejected() {
    // 6 rows of Q4KX4 (groups of 4), with the byte length storage_bytes gives.
    let bytes = vec![0u8; 6 * 144];
    let r = Raw::new().tensor("w", DType::Q4KX4, &[6, 256], 0, &bytes);
    let e = err(&r.build());
    assert!(
        matches!(&e, FormatError::BadShape { name, .. } if name == "w"),
        "{e}"
    );
    assert_names(&e, &["`w`", "dims", "groups of 4", "6 row"]);
    let ok = Raw::new().tensor("w", DType::Q4KX4, &[8, 256], 0, &[0u8; 8 * 144]);
    parse(&ok.build()).unwrap();
}

#[test]
fn retired_iq2_codebook_id_names_the_fix() {
    let mut e = DirEntry::new("w", DType::U8, &[4], 0, 4, 0);
    e.dtype_id = 20;
    let r = Raw::new().tensor("a", DType::U8, &[1], 0, &[0]).entry(e);
    let e = err(&r.build());
    assert!(
        matches!(&e, FormatError::RetiredDType { id: 20, name, .. } if name == "w"),
        "{e}"
    );
    assert_names(&e, &["`w`", "retired dtype id 20", "re-convert"]);
    assert_eq!(DType::from_id(20), None);
    assert_eq!(DType::from_id(21), Some(DType::IQ2));
}

#[test]
fn huge_counts_are_bounded_by_the_bytes() {
    let mut r = Raw::new().meta("a", 1u64);
    r.header.meta_count = u64::MAX;
    let e = err(&r.build());
    assert!(matches!(e, FormatError::LimitExceeded { .. }), "{e}");
    assert_names(&e, &["meta_count", "offset 80"]);

    let mut r = Raw::new().tensor("a", DType::U8, &[1], 0, &[0]);
    r.header.tensor_count = 1 << 40;
    let e = err(&r.build());
    assert!(matches!(e, FormatError::LimitExceeded { .. }), "{e}");
    assert_names(&e, &["tensor_count", "offset 88"]);

    let mut r = Raw::new().tensor("a", DType::U8, &[1], 0, &[0]);
    r.dir[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = err(&r.build());
    assert!(
        matches!(e, FormatError::LimitExceeded { limit: 1024, .. }),
        "{e}"
    );
    assert_names(&e, &["directory[0].name_len"]);

    let mut count = u64::MAX.to_le_bytes().to_vec();
    count.extend_from_slice(&[0; 16]);
    let e = err(&Raw::new().meta_raw("s", tag::STR_ARRAY, &count).build());
    assert!(matches!(e, FormatError::LimitExceeded { .. }), "{e}");
    assert_names(&e, &["`s` str[] count"]);

    let mut r = Raw::new().meta("k", 5u64);
    let n = r.meta.len();
    r.meta[n - 16..n - 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = err(&r.build());
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
    assert_names(&e, &["metadata `k` value", "offset"]);

    let e = DirEntry::new("r", DType::U8, &[1; 9], 0, 1, 0);
    let e = err(&Raw::new().entry(e).build());
    assert!(
        matches!(
            e,
            FormatError::LimitExceeded {
                value: 9,
                limit: 8,
                ..
            }
        ),
        "{e}"
    );
    assert_names(&e, &["`r` rank"]);
}

#[test]
fn overlapping_tensors() {
    let r = Raw::new()
        .tensor("a", DType::F32, &[16], 0, &[1; 64])
        .tensor("b", DType::F32, &[16], 64, &[2; 64])
        .entry(DirEntry::new("c", DType::U8, &[8], 64, 8, 0));
    let e = err(&r.build());
    assert!(matches!(&e, FormatError::TensorOverlap { .. }), "{e}");
    assert_names(&e, &["`c`", "`b`", "overlap", "field `offset`"]);
}

#[test]
fn misaligned_tensor() {
    let r = Raw::new().tensor("a", DType::U8, &[4], 8, &[1; 4]);
    let e = err(&r.build());
    assert!(
        matches!(
            e,
            FormatError::Misaligned {
                value: 8,
                align: 64,
                ..
            }
        ),
        "{e}"
    );
    let dir_offset = 128 + 12;
    let offset_field = dir_offset + 4 + 1 + 4 + 4 + 8;
    assert_names(
        &e,
        &[
            "`a`",
            "field `offset`",
            &format!("at offset {offset_field}"),
        ],
    );
}

#[test]
fn tensor_past_the_end_of_data() {
    let r = Raw::new()
        .tensor("a", DType::U8, &[64], 0, &[1; 64])
        .entry(DirEntry::new("b", DType::U8, &[64], 64, 64, 0));
    let e = err(&r.build());
    assert!(
        matches!(
            e,
            FormatError::TensorOutOfBounds {
                start: 64,
                end: 128,
                data_size: 64,
                ..
            }
        ),
        "{e}"
    );
    assert_names(&e, &["`b`", "nbytes", "data section"]);

    let huge = u64::MAX / 64 * 64;
    let r = Raw::new().entry(DirEntry::new("h", DType::U8, &[64], huge, 64, 0));
    assert!(matches!(
        err(&r.build()),
        FormatError::TensorOutOfBounds { .. }
    ));
}

#[test]
fn byte_length_must_match_dtype_and_shape() {
    let r = Raw::new().entry(DirEntry::new("a", DType::F32, &[3], 0, 8, 0));
    let e = err(&r.build());
    assert!(
        matches!(
            e,
            FormatError::ByteLengthMismatch {
                expected: Some(12),
                found: 8,
                ..
            }
        ),
        "{e}"
    );
    assert_names(&e, &["`a`", "nbytes", "f32 [3]", "12 bytes"]);
    let r = Raw::new().entry(DirEntry::new("o", DType::U8, &[u64::MAX, 2, 0], 0, 0, 0));
    assert!(matches!(
        err(&r.build()),
        FormatError::ByteLengthMismatch { expected: None, .. }
    ));
}

#[test]
fn duplicates() {
    let r = Raw::new()
        .tensor("a", DType::U8, &[1], 0, &[1])
        .tensor("a", DType::U8, &[1], 64, &[1]);
    let e = err(&r.build());
    assert!(matches!(e, FormatError::DuplicateTensor { .. }), "{e}");
    assert_names(&e, &["`a`", "duplicate"]);
    let e = err(&Raw::new().meta("k.x", 1u64).meta("k.x", "s").build());
    assert!(matches!(e, FormatError::DuplicateKey { .. }), "{e}");
    assert_names(&e, &["`k.x`", "duplicate"]);
    let e = err(&Raw::new()
        .meta("k.x", 1u64)
        .meta_raw("k.x", 77, &[])
        .build());
    assert!(matches!(e, FormatError::DuplicateKey { .. }), "{e}");
}

#[test]
fn invalid_utf8_and_keys() {
    let mut r = Raw::new().meta("ab", 1u64);
    r.meta[4] = 0xff;
    let e = err(&r.build());
    assert!(matches!(e, FormatError::InvalidUtf8 { .. }), "{e}");
    assert_names(&e, &["metadata[0].key", "offset"]);

    let e = err(&Raw::new().meta_raw("s", tag::STR, &[0xc3, 0x28]).build());
    assert!(matches!(e, FormatError::InvalidUtf8 { .. }), "{e}");

    let mut r = Raw::new().tensor("nm", DType::U8, &[1], 0, &[1]);
    r.dir[5] = 0xfe;
    let e = err(&r.build());
    assert!(matches!(e, FormatError::InvalidUtf8 { .. }), "{e}");
    assert_names(&e, &["directory[0].name"]);

    let mut r = Raw::new().meta("ab", 1u64);
    r.meta[4] = b'A';
    let e = err(&r.build());
    assert!(matches!(e, FormatError::InvalidKey { .. }), "{e}");
    assert_names(&e, &["\"Ab\""]);
}

#[test]
fn malformed_values() {
    let cases: &[(u32, &[u8], &str)] = &[
        (tag::BOOL, &[2], "bool"),
        (tag::U64, &[1, 2, 3], "expected 8"),
        (tag::F32_ARRAY, &[0; 5], "multiple of 4"),
        (tag::I64_ARRAY, &[0; 12], "multiple of 8"),
        (0, &[], "tag 0"),
        (
            tag::STR_ARRAY,
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            "left after",
        ),
    ];
    for (t, payload, reason) in cases {
        let e = err(&Raw::new().meta_raw("v", *t, payload).build());
        assert!(matches!(e, FormatError::BadValue { .. }), "{e}");
        assert_names(&e, &["`v`", reason]);
    }
}

type HeaderEdit = Box<dyn Fn(&mut Header)>;

#[test]
fn section_layout_faults() {
    let valid = common::sample_bytes();
    let cases: Vec<(&str, HeaderEdit)> = vec![
        ("dir_offset", Box::new(|h: &mut Header| h.dir_size += 100)),
        (
            "dir_offset",
            Box::new(|h: &mut Header| h.dir_offset = u64::MAX),
        ),
        (
            "meta_offset",
            Box::new(|h: &mut Header| h.meta_offset = h.data_offset),
        ),
        (
            "data_offset",
            Box::new(|h: &mut Header| h.data_offset = 100),
        ),
        ("data_offset", Box::new(|h: &mut Header| h.data_offset = 64)),
        ("header_size", Box::new(|h: &mut Header| h.header_size = 64)),
        (
            "header_size",
            Box::new(|h: &mut Header| h.header_size = u64::MAX),
        ),
        (
            "data_size",
            Box::new(|h: &mut Header| h.data_size = u64::MAX),
        ),
        (
            "metadata `blob.raw` value",
            Box::new(|h: &mut Header| {
                h.meta_size -= 1;
                h.dir_offset -= 1;
                h.dir_size += 1;
            }),
        ),
    ];
    for (field, f) in cases {
        let e = err(&patch(valid.clone(), f));
        assert!(
            matches!(
                e,
                FormatError::BadLayout { .. } | FormatError::Truncated { .. }
            ),
            "{field}: {e}"
        );
        assert_names(&e, &[field]);
    }
    let e = err(&patch(valid.clone(), |h| h.dir_size -= 1));
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
}
