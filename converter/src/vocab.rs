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
