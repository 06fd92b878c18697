//! The decoding table (FORMAT.md, "Vocabulary table", since 1.4): the bytes
//! each token id stands for, the ids that decoding skips, and every prompt
//! already tokenized, so that a runtime turns ids into text and builds its
//! prompts straight from the memory map, without parsing `tokenizer.json`.
//!
//! Decoding ids with the table is Hugging Face `tokenizers`' decode with a
//! byte-level decoder (Qwen2's): the pieces of the ids, special ids left
//! out, concatenated, then read as UTF-8 with invalid sequences replaced by
//! U+FFFD.

use crate::error::{FormatError, Result};
use crate::reader::KpkFile;
use crate::DType;

/// U8 tensor: the pieces of all ids, back to back.
pub const PIECES: &str = "tokenizer.pieces";
/// I32 tensor `[n_ids]`: exclusive end offset of each id's piece in
/// [`PIECES`] (the piece of id `i` is `pieces[ends[i - 1]..ends[i]]`).
pub const PIECE_ENDS: &str = "tokenizer.piece_ends";
/// Metadata `i64[]`: ids left out of decoded text (special tokens), sorted.
pub const SPECIAL_IDS: &str = "tokenizer.special_ids";

/// Metadata key of the tokenized prompt of target language `lang`.
pub fn prompt_ids_key(lang: &str) -> String {
    format!("prompt.ids.{lang}")
}

/// The two tensors of a table built from one piece per id.
pub fn build(pieces: &[Vec<u8>]) -> Result<(Vec<u8>, Vec<i32>)> {
    let mut bytes = Vec::new();
    let mut ends = Vec::with_capacity(pieces.len());
    for p in pieces {
        bytes.extend_from_slice(p);
        let end = i32::try_from(bytes.len()).map_err(|_| FormatError::InvalidInput {
            file: PIECES.to_string(),
            reason: "the pieces of the vocabulary exceed 2 GiB".into(),
        })?;
        ends.push(end);
    }
    Ok((bytes, ends))
}

/// A view of the table in a mapped file.
#[derive(Clone, Copy, Debug)]
pub struct Vocab<'a> {
    bytes: &'a [u8],
    ends: &'a [i32],
}

impl<'a> Vocab<'a> {
    /// The file's table after checking it (dtypes, ranks, offsets
    /// non-decreasing and within the pieces); `None` when the file has none
    /// (written before format 1.4).
    pub fn open(file: &'a KpkFile) -> Result<Option<Vocab<'a>>> {
        let (Some(p), Some(e)) = (file.get_tensor(PIECES), file.get_tensor(PIECE_ENDS)) else {
            if file.get_tensor(PIECES).is_some() || file.get_tensor(PIECE_ENDS).is_some() {
                return Err(invalid(file, "holds only one of its two tensors"));
            }
            return Ok(None);
        };
        if p.dtype() != DType::U8 || p.shape().len() != 1 {
            return Err(invalid(file, &format!("`{PIECES}` is not a u8 vector")));
        }
        if e.shape().len() != 1 {
            return Err(invalid(file, &format!("`{PIECE_ENDS}` is not a vector")));
        }
        let v = Vocab {
            bytes: p.data,
            ends: e.as_i32()?,
        };
        let mut prev = 0i32;
        for (id, &end) in v.ends.iter().enumerate() {
            if end < prev || end as usize > v.bytes.len() {
                return Err(invalid(
                    file,
                    &format!(
                        "the end offset {end} of id {id} is not in {prev}..={}",
                        v.bytes.len()
                    ),
                ));
            }
            prev = end;
        }
        if prev as usize != v.bytes.len() {
            return Err(invalid(
                file,
                &format!(
                    "the last piece ends at {prev}, but `{PIECES}` has {} bytes",
                    v.bytes.len()
                ),
            ));
        }
        Ok(Some(v))
    }

    /// A table over pieces and end offsets in memory (e.g. from [`build`]).
    pub fn from_parts(bytes: &'a [u8], ends: &'a [i32]) -> Vocab<'a> {
        Vocab { bytes, ends }
    }

    /// The file's table without the checks of [`Vocab::open`] (for a file
    /// already opened with them): no tensor is scanned. Malformed offsets
    /// give empty pieces, never a read outside the pieces.
    pub fn open_unchecked(file: &'a KpkFile) -> Option<Vocab<'a>> {
        let bytes = file.get_tensor(PIECES)?.data;
        let ends = file.get_tensor(PIECE_ENDS)?.as_i32().ok()?;
        Some(Vocab { bytes, ends })
    }

    /// Number of ids in the table.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True for a table of no ids.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of `id`; empty for an id past the table (as `tokenizers`
    /// decodes an unknown id to nothing).
    pub fn piece(&self, id: u32) -> &'a [u8] {
        let i = id as usize;
        let Some(&end) = self.ends.get(i) else {
            return &[];
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.bytes
            .get(start.max(0) as usize..end.max(0) as usize)
            .unwrap_or(&[])
    }

    /// The text of `ids`: their pieces, those in `skip` (sorted) left out,
    /// as UTF-8 with invalid sequences replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32], skip: &[u32]) -> String {
        let mut out = Vec::new();
        for &id in ids {
            if skip.binary_search(&id).is_err() {
                out.extend_from_slice(self.piece(id));
            }
        }
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

fn invalid(file: &KpkFile, what: &str) -> FormatError {
    FormatError::InvalidInput {
        file: file.label().to_string(),
        reason: format!("the vocabulary table {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KpkWriter;

    fn file_with(pieces: &[&[u8]], ends: Option<&[i32]>) -> KpkFile {
        let owned: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let (bytes, built) = build(&owned).unwrap();
        let ends = ends.map_or(built, <[i32]>::to_vec);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.kpk");
        let mut w = KpkWriter::create(&path).unwrap();
        w.write_tensor(PIECES, DType::U8, &[bytes.len() as u64], &bytes)
            .unwrap();
        w.write_tensor(
            PIECE_ENDS,
            DType::I32,
            &[ends.len() as u64],
            bytemuck::cast_slice(&ends),
        )
        .unwrap();
        w.finish().unwrap();
        KpkFile::from_bytes(std::fs::read(&path).unwrap()).unwrap()
    }

    #[test]
    fn decodes_pieces_and_skips_special_ids() {
        let f = file_with(&[b"Hal", b"lo", b"", b"<s>", "\u{00e4}".as_bytes()], None);
        let v = Vocab::open(&f).unwrap().unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v.decode(&[0, 1, 3, 4], &[3]), "Hallo\u{00e4}");
        assert_eq!(v.decode(&[0, 3], &[]), "Hal<s>");
        // An id past the table decodes to nothing, as in `tokenizers`.
        assert_eq!(v.decode(&[0, 99], &[]), "Hal");
        // Half a character reads as U+FFFD, like String::from_utf8_lossy.
        let half = &"\u{00e4}".as_bytes()[..1];
        let f = file_with(&[half, b"x"], None);
        let v = Vocab::open(&f).unwrap().unwrap();
        assert_eq!(v.decode(&[0, 1], &[]), "\u{FFFD}x");
    }

    #[test]
    fn bad_offsets_are_refused_with_the_id() {
        let f = file_with(&[b"ab", b"c"], Some(&[2, 1]));
        let e = Vocab::open(&f).unwrap_err().to_string();
        assert!(e.contains("id 1"), "{e}");
        let f = file_with(&[b"ab", b"c"], Some(&[1, 2]));
        let e = Vocab::open(&f).unwrap_err().to_string();
        assert!(e.contains("3 bytes"), "{e}");
    }

    #[test]
    fn a_file_without_a_table_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.kpk");
        let w = KpkWriter::create(&path).unwrap();
        w.finish().unwrap();
        let f = KpkFile::open(&path).unwrap();
        assert!(Vocab::open(&f).unwrap().is_none());
    }
}
