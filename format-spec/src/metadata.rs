//! Typed metadata: an ordered map from dotted `lower_snake_case` keys to
//! values (FORMAT.md, "Metadata keys"), with typed getters whose errors
//! name the key and the file.

use crate::error::{FormatError, Result};
use crate::layout::MAX_NAME_LEN;
use std::collections::HashMap;

/// Key holding the zstd-compressed Hugging Face `tokenizer.json`.
pub const TOKENIZER_JSON_ZSTD: &str = "tokenizer.json_zstd";
/// Upper bound on the decompressed `tokenizer.json` (guards against zstd bombs).
pub const MAX_TOKENIZER_JSON: u64 = 256 << 20;

/// One metadata value. The variant is the stored type tag.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
    F32s(Vec<f32>),
    I64s(Vec<i64>),
    Strs(Vec<String>),
}

impl MetaValue {
    /// The FORMAT.md type name: `u64`, `str`, `f32[]`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "str",
            MetaValue::Bytes(_) => "bytes",
            MetaValue::F32s(_) => "f32[]",
            MetaValue::I64s(_) => "i64[]",
            MetaValue::Strs(_) => "str[]",
        }
    }
}

macro_rules! from_impl {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl From<$t> for MetaValue {
            fn from($v: $t) -> MetaValue {
                $e
            }
        })*
    };
}

from_impl! {
    u64 => |v| MetaValue::U64(v),
    u32 => |v| MetaValue::U64(v.into()),
    usize => |v| MetaValue::U64(v as u64),
    i64 => |v| MetaValue::I64(v),
    f64 => |v| MetaValue::F64(v),
    bool => |v| MetaValue::Bool(v),
    String => |v| MetaValue::Str(v),
    &str => |v| MetaValue::Str(v.to_string()),
    &String => |v| MetaValue::Str(v.clone()),
    Vec<u8> => |v| MetaValue::Bytes(v),
    &[u8] => |v| MetaValue::Bytes(v.to_vec()),
    Vec<f32> => |v| MetaValue::F32s(v),
    &[f32] => |v| MetaValue::F32s(v.to_vec()),
    Vec<i64> => |v| MetaValue::I64s(v),
    &[i64] => |v| MetaValue::I64s(v.to_vec()),
    Vec<String> => |v| MetaValue::Strs(v),
    &[String] => |v| MetaValue::Strs(v.to_vec()),
    Vec<&str> => |v| MetaValue::Strs(v.into_iter().map(str::to_string).collect()),
    &[&str] => |v| MetaValue::Strs(v.iter().map(|s| s.to_string()).collect()),
}

/// True for dotted `lower_snake_case` keys of at most 1 KiB: segments of
/// `[a-z0-9_]`, each non-empty, separated by single dots.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() as u64 <= MAX_NAME_LEN
        && key.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Ordered map of metadata keys to values, in insertion (file) order.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    origin: Option<String>,
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.entries == other.entries
    }
}

macro_rules! getters {
    ($($get:ident, $opt:ident, $variant:ident, $ret:ty, $name:literal, |$v:ident| $conv:expr;)*) => {
        $(
            #[doc = concat!("The `", $name, "` value of `key`; `MissingKey` or `WrongType` otherwise.")]
            pub fn $get(&self, key: &str) -> Result<$ret> {
                match self.get(key) {
                    Some(MetaValue::$variant($v)) => Ok($conv),
                    Some(other) => Err(self.wrong_type(key, $name, other)),
                    None => Err(self.missing(key)),
                }
            }

            #[doc = concat!("The `", $name, "` value of `key`; `None` when absent or of another type.")]
            pub fn $opt(&self, key: &str) -> Option<$ret> {
                match self.get(key) {
                    Some(MetaValue::$variant($v)) => Some($conv),
                    _ => None,
                }
            }
        )*
    };
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    pub(crate) fn with_origin(origin: &str) -> Metadata {
        Metadata {
            origin: Some(origin.to_string()),
            ..Metadata::default()
        }
    }

    fn origin(&self) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| "<metadata>".to_string())
    }

    /// Inserts or replaces `key`. A new key goes last; a replaced key keeps
    /// its position. Fails with `InvalidKey` unless the key is dotted
    /// `lower_snake_case`.
    pub fn insert(&mut self, key: &str, value: impl Into<MetaValue>) -> Result<&mut Self> {
        if !is_valid_key(key) {
            return Err(FormatError::InvalidKey {
                file: self.origin(),
                key: key.to_string(),
                offset: 0,
            });
        }
        let value = value.into();
        match self.index.get(key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.to_string(), self.entries.len());
                self.entries.push((key.to_string(), value));
            }
        }
        Ok(self)
    }

    /// Appends a key read from a file; `false` if it is already present.
    pub(crate) fn push_unique(&mut self, key: String, value: MetaValue) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        true
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<MetaValue> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(v)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// True if `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Entries in insertion (file) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn missing(&self, key: &str) -> FormatError {
        FormatError::MissingKey {
            file: self.origin(),
            key: key.to_string(),
        }
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &MetaValue) -> FormatError {
        FormatError::WrongType {
            file: self.origin(),
            key: key.to_string(),
            expected,
            found: found.type_name(),
        }
    }

    getters! {
        get_u64, opt_u64, U64, u64, "u64", |v| *v;
        get_i64, opt_i64, I64, i64, "i64", |v| *v;
        get_f64, opt_f64, F64, f64, "f64", |v| *v;
        get_bool, opt_bool, Bool, bool, "bool", |v| *v;
        get_str, opt_str, Str, &str, "str", |v| v.as_str();
        get_bytes, opt_bytes, Bytes, &[u8], "bytes", |v| v.as_slice();
        get_f32s, opt_f32s, F32s, &[f32], "f32[]", |v| v.as_slice();
        get_i64s, opt_i64s, I64s, &[i64], "i64[]", |v| v.as_slice();
        get_strs, opt_strs, Strs, &[String], "str[]", |v| v.as_slice();
    }
}

/// The decompressed `tokenizer.json` stored under `tokenizer.json_zstd`
/// (feature `tokenizer-json`).
#[cfg(feature = "tokenizer-json")]
pub fn tokenizer_json(meta: &Metadata) -> Result<Vec<u8>> {
    let compressed = meta.get_bytes(TOKENIZER_JSON_ZSTD)?;
    let zerr = |reason: String| FormatError::Zstd {
        file: meta.origin(),
        key: TOKENIZER_JSON_ZSTD.to_string(),
        reason,
    };
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(|e| zerr(e.to_string()))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_TOKENIZER_JSON + 1)
        .read_to_end(&mut out)
        .map_err(|e| zerr(e.to_string()))?;
    if out.len() as u64 > MAX_TOKENIZER_JSON {
        return Err(zerr(format!(
            "decompresses to more than {MAX_TOKENIZER_JSON} bytes"
        )));
    }
    Ok(out)
}

/// Stores `json` zstd-compressed (level 19) under `tokenizer.json_zstd`
/// (feature `tokenizer-json`).
#[cfg(feature = "tokenizer-json")]
pub fn set_tokenizer_json(meta: &mut Metadata, json: &[u8]) -> Result<()> {
    let compressed = zstd::bulk::compress(json, 19).map_err(|e| FormatError::Zstd {
        file: meta.origin(),
        key: TOKENIZER_JSON_ZSTD.to_string(),
        reason: e.to_string(),
    })?;
    meta.insert(TOKENIZER_JSON_ZSTD, compressed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_dotted_lower_snake_case() {
        for ok in [
            "general.name",
            "audio.n_fft",
            "prompt.template.de",
            "a",
            "x1.y_2",
        ] {
            assert!(is_valid_key(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "General.name", "a-b", "a b", "ä"] {
            assert!(!is_valid_key(bad), "{bad}");
        }
        assert!(!is_valid_key(&"a".repeat(1025)));
        assert!(Metadata::new().insert("Bad.Key", 1u64).is_err());
    }

    #[test]
    fn typed_getters_name_the_key() {
        let mut m = Metadata::new();
        m.insert("llm.hidden_size", 4096u64)
            .unwrap()
            .insert("general.name", "x")
            .unwrap();
        assert_eq!(m.get_u64("llm.hidden_size").unwrap(), 4096);
        assert_eq!(m.opt_str("general.name"), Some("x"));
        assert_eq!(m.opt_u64("general.name"), None);
        let e = m.get_str("llm.hidden_size").unwrap_err();
        assert!(matches!(e, FormatError::WrongType { .. }));
        assert!(e.to_string().contains("llm.hidden_size"), "{e}");
        let e = m.get_u64("llm.n_layers").unwrap_err();
        assert!(matches!(e, FormatError::MissingKey { .. }));
        assert!(e.to_string().contains("llm.n_layers"), "{e}");
    }

    #[test]
    fn insert_keeps_order_and_replaces_in_place() {
        let mut m = Metadata::new();
        m.insert("b", 1u64).unwrap();
        m.insert("a", 2u64).unwrap();
        m.insert("b", 3u64).unwrap();
        let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(m.get_u64("b").unwrap(), 3);
        assert_eq!(m.remove("b"), Some(MetaValue::U64(3)));
        assert_eq!(m.get_u64("a").unwrap(), 2);
    }

    #[cfg(feature = "tokenizer-json")]
    #[test]
    fn tokenizer_json_round_trips() {
        let mut m = Metadata::new();
        let json = br#"{"model":{"type":"BPE"}}"#.repeat(100);
        set_tokenizer_json(&mut m, &json).unwrap();
        assert!(m.get_bytes(TOKENIZER_JSON_ZSTD).unwrap().len() < json.len());
        assert_eq!(tokenizer_json(&m).unwrap(), json);
        m.insert(TOKENIZER_JSON_ZSTD, vec![1u8, 2, 3]).unwrap();
        assert!(matches!(tokenizer_json(&m), Err(FormatError::Zstd { .. })));
    }
}
