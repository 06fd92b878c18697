//! Fuzzes the `&[u8]` parser and everything reachable from a parsed file.
//!
//! Each input is tried twice: as given, and with the header checksum
//! recomputed, so mutations reach the structural checks behind the checksum.
#![no_main]

use kompakt_format::layout::{self, Header, HEADER_SIZE};
use kompakt_format::summary::Summary;
use kompakt_format::{tokenizer_json, KpkFile};
use libfuzzer_sys::fuzz_target;

fn exercise(data: &[u8]) {
    let _ = kompakt_format::parse(data);
    let Ok(f) = KpkFile::from_slice(data) else {
        return;
    };
    let _ = f.verify();
    for t in f.tensors() {
        let v = f.tensor(&t.name).expect("listed tensor is found");
        assert_eq!(v.data.len() as u64, t.nbytes);
        let _ = v.to_f32_vec();
        let _ = v.as_i32();
    }
    let _ = Summary::of(&f).submission_description("T");
    let _ = tokenizer_json(f.metadata());
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if let Some(head) = data.first_chunk::<{ HEADER_SIZE as usize }>() {
        let mut sealed = data.to_vec();
        layout::seal(&mut sealed, Header::decode(head));
        exercise(&sealed);
    }
});
