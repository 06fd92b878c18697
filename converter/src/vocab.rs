//! Vocabulary trimming: which token rows of the embeddings and lm_head to
//! keep so that English, German and Chinese still encode, while the rest of
//! the 156k-row vocabulary goes.
//!
//! Always kept: every added/special token, the 256 byte-level tokens (so any
//! text still encodes, byte by byte at worst) and the tokens of the prompts.
use std::collections::BTreeSet;
use std::path::PathBuf;

use tokenizers::Tokenizer;

use crate::error::{ConvertError, Result};

/// How to choose the kept tokens beyond the always-kept ones.
#[derive(Clone, Debug)]
pub enum KeepVocab {
    /// Tokens whose text is made only of characters of the Latin and Han
    /// scripts, digits, punctuation and whitespace (or is a fragment of a
    /// multi-byte UTF-8 character, as byte-level BPE makes for Chinese).
    Auto,
    /// Tokens that occur when tokenizing these UTF-8 text files.
    Corpus(Vec<PathBuf>),
    /// Exactly these token ids (plus the always-kept ones).
    Ids(Vec<u32>),
}

/// GPT-2's byte-to-unicode table: character for each byte.
pub fn byte_level_alphabet() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap_or('?')
            }
        })
        .collect()
}

/// The bytes a byte-level token string stands for.
fn token_bytes(token: &str, alphabet: &[char]) -> Option<Vec<u8>> {
    token
        .chars()
        .map(|c| alphabet.iter().position(|&a| a == c).map(|b| b as u8))
        .collect()
}

fn wanted_char(c: char) -> bool {
    let u = c as u32;
    c.is_ascii()
        || (0x00A0..=0x024F).contains(&u) // Latin-1 supplement, Latin extended A/B (ä ö ü ß é ...)
        || (0x1E00..=0x1EFF).contains(&u) // Latin extended additional
        || (0x2000..=0x206F).contains(&u) // general punctuation
        || (0x20A0..=0x20CF).contains(&u) // currency
        || (0x3000..=0x303F).contains(&u) // CJK symbols and punctuation
        || (0x3400..=0x4DBF).contains(&u) // CJK extension A
        || (0x4E00..=0x9FFF).contains(&u) // CJK unified ideographs
        || (0xFF00..=0xFFEF).contains(&u) // full-width forms
}

/// Selects the kept token ids (sorted, all `< vocab_rows`).
pub fn select(
    tokenizer_json: &[u8],
    vocab_rows: usize,
    keep: &KeepVocab,
    prompts: &[String],
) -> Result<Vec<u32>> {
    let tok = Tokenizer::from_bytes(tokenizer_json)
        .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    let alphabet = byte_level_alphabet();
    let mut kept = BTreeSet::new();
    for (id, added) in tok.get_added_tokens_decoder() {
        if (id as usize) < vocab_rows {
            let _ = added;
            kept.insert(id);
        }
    }
    for c in &alphabet {
        if let Some(id) = tok.token_to_id(&c.to_string()) {
            kept.insert(id);
        }
    }
    let encode = |text: &str, kept: &mut BTreeSet<u32>| -> Result<()> {
        let enc = tok
            .encode(text, false)
            .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
        kept.extend(enc.get_ids().iter().copied());
        Ok(())
    };
    for p in prompts {
        encode(p, &mut kept)?;
    }
    match keep {
        KeepVocab::Ids(ids) => kept.extend(ids.iter().copied()),
        KeepVocab::Corpus(files) => {
            for f in files {
                let text = std::fs::read_to_string(f).map_err(|source| ConvertError::Io {
                    path: f.clone(),
                    source,
                })?;
                for line in text.lines() {
                    encode(line, &mut kept)?;
                }
            }
        }
        KeepVocab::Auto => {
            for id in 0..vocab_rows as u32 {
                let Some(t) = tok.id_to_token(id) else {
                    continue;
                };
                let keep_it = match token_bytes(&t, &alphabet) {
                    // Not a byte-level token (an added token): decided above.
                    None => false,
                    Some(bytes) => match std::str::from_utf8(&bytes) {
                        Ok(s) => s.chars().all(wanted_char),
                        // A fragment of a multi-byte character: keep if it
                        // could belong to a wanted one (lead bytes of 2- and
                        // 3-byte sequences, continuation bytes).
                        Err(_) => bytes.iter().all(|&b| b < 0xF0),
                    },
                };
                if keep_it {
                    kept.insert(id);
                }
            }
        }
    }
    Ok(kept
        .into_iter()
        .filter(|&id| (id as usize) < vocab_rows)
        .collect())
}

/// What a `.kpk` file holds to decode and prompt without `tokenizer.json`
/// (FORMAT.md 1.4, "Vocabulary table").
#[derive(Clone, Debug)]
pub struct DecodingTable {
    /// Pieces of all ids, back to back (`tokenizer.pieces`).
    pub pieces: Vec<u8>,
    /// End offset of each id's piece (`tokenizer.piece_ends`).
    pub ends: Vec<i32>,
    /// Ids decoding leaves out (`tokenizer.special_ids`), ascending.
    pub special: Vec<i64>,
    /// Target language -> the prompt's ids with one audio token
    /// (`prompt.ids.<lang>`).
    pub prompts: Vec<(String, Vec<i64>)>,
}

impl DecodingTable {
    /// Bytes the table adds to a file: tensors, metadata and padding.
    pub fn stored_bytes(&self) -> u64 {
        let ids: usize =
            self.special.len() + self.prompts.iter().map(|(_, p)| p.len()).sum::<usize>();
        (self.pieces.len() + 4 * self.ends.len() + 8 * ids) as u64
            + 2 * (64 + 80)
            + 64 * self.prompts.len() as u64
    }
}

/// Builds the decoding table of a byte-level BPE tokenizer (Qwen2's): the
/// piece of each id is the bytes its token stands for (added tokens: their
/// text), as `tokenizers`' byte-level decoder maps them. With `kept` (a
/// trimmed vocabulary, sorted), ids the model cannot produce get empty
/// pieces. `prompts` are (language, full prompt text with one `<|AUDIO|>`).
///
/// Every piece is checked against `tokenizers`' own decode of its id, and
/// each prompt's decode against its text, so a tokenizer whose decoder is
/// not byte-level is refused rather than stored wrongly.
pub fn decoding_table(
    tokenizer_json: &[u8],
    kept: Option<&[u32]>,
    prompts: &[(String, String)],
    audio_id: u32,
) -> Result<DecodingTable> {
    let tok = Tokenizer::from_bytes(tokenizer_json)
        .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    let byte_of: std::collections::HashMap<char, u8> = byte_level_alphabet()
        .into_iter()
        .enumerate()
        .map(|(b, c)| (c, b as u8))
        .collect();
    let mut special: Vec<i64> = tok
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(&id, _)| i64::from(id))
        .collect();
    special.sort_unstable();
    let n_ids = tok
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m as usize + 1);
    let mut pieces = Vec::with_capacity(n_ids);
    for id in 0..n_ids as u32 {
        let producible = kept.is_none_or(|k| k.binary_search(&id).is_ok());
        let piece = match tok.id_to_token(id) {
            Some(t) if producible => t
                .chars()
                .map(|c| byte_of.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_else(|| t.as_bytes().to_vec()),
            _ => Vec::new(),
        };
        if producible {
            let want = tok
                .decode(&[id], false)
                .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
            if want != String::from_utf8_lossy(&piece) {
                return Err(ConvertError::Tokenizer(format!(
                    "token {id} decodes to {want:?} with tokenizer.json but to {:?} from its \
                     byte-level piece: kompakt's vocabulary table needs a byte-level BPE \
                     tokenizer (Qwen2's), and this one decodes otherwise",
                    String::from_utf8_lossy(&piece)
                )));
            }
        }
        pieces.push(piece);
    }
    let (bytes, ends) = kompakt_format::vocab::build(&pieces)?;
    let table = kompakt_format::vocab::Vocab::from_parts(&bytes, &ends);
    let skip: Vec<u32> = special.iter().map(|&i| i as u32).collect();
    let mut prompt_ids = Vec::new();
    for (lang, text) in prompts {
        let (before, after) = text.split_once("<|AUDIO|>").ok_or_else(|| {
            ConvertError::Tokenizer(format!("the `{lang}` prompt has no <|AUDIO|>"))
        })?;
        let enc = |s: &str| -> Result<Vec<u32>> {
            Ok(tok
                .encode(s, false)
                .map_err(|e| ConvertError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec())
        };
        let mut ids = enc(before)?;
        ids.push(audio_id);
        ids.extend(enc(after)?);
        let want = tok
            .decode(&ids, true)
            .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
        let got = table.decode(&ids, &skip);
        if want != got {
            return Err(ConvertError::Tokenizer(format!(
                "the `{lang}` prompt decodes to {got:?} from the vocabulary table but to \
                 {want:?} with tokenizer.json"
            )));
        }
        prompt_ids.push((lang.clone(), ids.into_iter().map(i64::from).collect()));
    }
    Ok(DecodingTable {
        pieces: bytes,
        ends,
        special,
        prompts: prompt_ids,
    })
}

/// Fraction of the tokens of `texts` that are not in `kept`.
pub fn oov_rate(tokenizer_json: &[u8], kept: &[u32], texts: &[String]) -> Result<f64> {
    let tok = Tokenizer::from_bytes(tokenizer_json)
        .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    let set: std::collections::HashSet<u32> = kept.iter().copied().collect();
    let (mut n, mut miss) = (0usize, 0usize);
    for t in texts {
        let enc = tok
            .encode(t.as_str(), false)
            .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
        for id in enc.get_ids() {
            n += 1;
            miss += usize::from(!set.contains(id));
        }
    }
    Ok(if n == 0 { 0.0 } else { miss as f64 / n as f64 })
}
