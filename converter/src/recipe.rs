//! Conversion recipes: a TOML file (or a built-in preset per size bin) that
//! sets the size target, vocabulary trimming, depth pruning and, per
//! tensor-name pattern, the types the mixed-precision allocator may choose.
//!
//! ```toml
//! name = "my-bin2"
//! [size]
//! bin = 2                  # or: max_bytes = 1500000000
//! [vocab]
//! keep = "auto"            # "all", "auto", or a list of corpus files
//! [prune]
//! llm_layers = "auto:6"    # or a list of source layer indices
//! audio_layers = [30, 31]
//! [[types]]                # first matching rule wins
//! match = "projector.weight"
//! types = ["q8_0", "f16"]
//! [[types]]
//! match = ["llm.layers.*.mlp.*", "audio.*"]
//! types = ["iq2", "q2_k", "q3_k"]
//! ```
//!
//! Patterns match `.kpk` tensor names (see `format-spec/FORMAT.md`) with `*`
//! standing for any run of characters. Weight matrices no rule matches take
//! [`crate::plan::default_candidates`] (all of [`crate::plan::CANDIDATES`]
//! except `iq2` for embeddings and lm_head, at least `q8_0` for the
//! projector and `q4_k` for the audio encoder); a matching rule replaces
//! those defaults. Options given on the command line override the recipe's.
use std::path::PathBuf;

use kompakt_format::DType;
use serde::Deserialize;

use crate::error::{ConvertError, Result};

/// A parsed, validated recipe.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub size: SizeSpec,
    #[serde(default)]
    pub vocab: VocabSpec,
    #[serde(default)]
    pub prune: PruneSpec,
    #[serde(default, rename = "types")]
    pub rules: Vec<TypeRule>,
}

/// Size target: an IWSLT bin or a byte budget.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSpec {
    pub bin: Option<u8>,
    pub max_bytes: Option<u64>,
}

/// Vocabulary trimming: `"all"` (default), `"auto"` or corpus files.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabSpec {
    pub keep: Option<Keep>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Keep {
    Word(String),
    Corpus(Vec<PathBuf>),
}

/// Depth pruning per stack.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSpec {
    pub llm_layers: Option<Layers>,
    pub audio_layers: Option<Layers>,
}

/// Explicit source layer indices, or `"auto:N"` (the N of lowest block
/// influence in the calibration).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Layers {
    List(Vec<usize>),
    Spec(String),
}

/// Resolved depth pruning of one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerDrop {
    List(Vec<usize>),
    Auto(usize),
}

/// Types allowed for the tensors whose names match.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRule {
    #[serde(rename = "match")]
    pub patterns: Patterns,
    pub types: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Patterns {
    One(String),
    Many(Vec<String>),
}

impl Patterns {
    fn list(&self) -> Vec<&str> {
        match self {
            Patterns::One(p) => vec![p.as_str()],
            Patterns::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Built-in presets: `(name, TOML text)`.
pub const PRESETS: [(&str, &str); 3] = [
    ("bin1", include_str!("../recipes/bin1.toml")),
    ("bin2", include_str!("../recipes/bin2.toml")),
    ("bin3", include_str!("../recipes/bin3.toml")),
];

fn bad(what: impl Into<String>) -> ConvertError {
    ConvertError::Option(what.into())
}

impl Recipe {
    /// Parses and validates recipe TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Recipe> {
        let r: Recipe =
            toml::from_str(text).map_err(|e| bad(format!("recipe {origin}: {}", e.message())))?;
        r.validate(origin)?;
        Ok(r)
    }

    /// A built-in preset (`bin1`, `bin2`, `bin3`).
    pub fn preset(name: &str) -> Result<Recipe> {
        let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(bad(format!(
                "no built-in recipe `{name}` (built in: {}; bins 4 and 5 need a distilled \
                 student, which kompakt does not build yet: use --max-size with explicit pruning)",
                names.join(", ")
            )));
        };
        Recipe::from_toml(text, name)
    }

    /// A preset name or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Recipe> {
        if PRESETS.iter().any(|(n, _)| *n == name_or_path) {
            return Recipe::preset(name_or_path);
        }
        let path = std::path::Path::new(name_or_path);
        if !path.exists() && !name_or_path.ends_with(".toml") {
            return Recipe::preset(name_or_path);
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Recipe::from_toml(&text, name_or_path)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        if let Some(b) = self.size.bin {
            if !(1..=5).contains(&b) {
                return Err(bad(format!("recipe {origin}: size.bin is {b}, use 1 to 5")));
            }
            if self.size.max_bytes.is_some() {
                return Err(bad(format!(
                    "recipe {origin}: give size.bin or size.max_bytes, not both"
                )));
            }
        }
        if let Some(Keep::Word(w)) = &self.vocab.keep {
            if w != "auto" && w != "all" {
                return Err(bad(format!(
                    "recipe {origin}: vocab.keep is `{w}`; use \"all\", \"auto\" or a list of corpus files"
                )));
            }
        }
        for (stack, l) in [
            ("llm_layers", &self.prune.llm_layers),
            ("audio_layers", &self.prune.audio_layers),
        ] {
            if let Some(l) = l {
                resolve_layers(l)
                    .map_err(|e| bad(format!("recipe {origin}: prune.{stack}: {e}")))?;
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.patterns.list().iter().any(|p| p.is_empty()) || rule.patterns.list().is_empty()
            {
                return Err(bad(format!(
                    "recipe {origin}: types rule {}: empty pattern",
                    i + 1
                )));
            }
            if rule.types.is_empty() {
                return Err(bad(format!(
                    "recipe {origin}: types rule {}: no types",
                    i + 1
                )));
            }
            for t in &rule.types {
                match DType::from_name(t) {
                    Some(DType::U8 | DType::I32 | DType::Q4KX4) | None => {
                        return Err(bad(format!(
                            "recipe {origin}: types rule {}: unknown type `{t}` (use f32, f16, \
                             bf16, q8_0, q4_k, q3_k, q2_k or iq2)",
                            i + 1
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// The budget in bytes (a bin's upper limit less the 0.5 % margin).
    pub fn budget(&self) -> Option<u64> {
        match (self.size.bin, self.size.max_bytes) {
            (Some(b), _) => crate::convert::bin_budget(b),
            (None, m) => m,
        }
    }

    /// The vocabulary trimming, `None` for all tokens.
    pub fn keep_vocab(&self) -> Option<crate::vocab::KeepVocab> {
        match &self.vocab.keep {
            None => None,
            Some(Keep::Word(w)) if w == "all" => None,
            Some(Keep::Word(_)) => Some(crate::vocab::KeepVocab::Auto),
            Some(Keep::Corpus(files)) => Some(crate::vocab::KeepVocab::Corpus(files.clone())),
        }
    }

    /// Resolved pruning of the decoder and the encoder.
    pub fn layer_drops(&self) -> (Option<LayerDrop>, Option<LayerDrop>) {
        let r = |l: &Option<Layers>| l.as_ref().and_then(|l| resolve_layers(l).ok());
        (r(&self.prune.llm_layers), r(&self.prune.audio_layers))
    }

    /// The types allowed for tensor `kpk` by the first matching rule.
    pub fn types_for(&self, kpk: &str) -> Option<Vec<DType>> {
        self.rules
            .iter()
            .find(|r| r.patterns.list().iter().any(|p| wildcard_match(p, kpk)))
            .map(|r| r.types.iter().filter_map(|t| DType::from_name(t)).collect())
    }

    /// A JSON record for provenance: name and type rules.
    pub fn to_json(&self) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|r| serde_json::json!({ "match": r.patterns.list(), "types": r.types }))
            .collect();
        serde_json::json!({ "name": self.name, "types": rules })
    }

    /// Patterns that match none of `names` (likely typos).
    pub fn unmatched_patterns<'a>(&'a self, names: &[&str]) -> Vec<&'a str> {
        self.rules
            .iter()
            .flat_map(|r| r.patterns.list())
            .filter(|p| !names.iter().any(|n| wildcard_match(p, n)))
            .collect()
    }
}

/// `"auto:N"` or a list.
pub fn resolve_layers(l: &Layers) -> std::result::Result<LayerDrop, String> {
    match l {
        Layers::List(v) => Ok(LayerDrop::List(v.clone())),
        Layers::Spec(s) => parse_layer_spec(s),
    }
}

/// Parses `auto:N` or a comma-separated list of layer indices.
pub fn parse_layer_spec(s: &str) -> std::result::Result<LayerDrop, String> {
    if let Some(n) = s.strip_prefix("auto:") {
        return n
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .map(LayerDrop::Auto)
            .ok_or_else(|| format!("`{s}`: auto:N needs a count of at least 1"));
    }
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}`: use layer indices like 30,31 or auto:N"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(LayerDrop::List)
}

/// Glob-style match where `*` stands for any run of characters (dots too).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "llm.layers.3.attn.q.weight"));
        assert!(wildcard_match(
            "llm.layers.*.mlp.*",
            "llm.layers.12.mlp.down.weight"
        ));
        assert!(!wildcard_match(
            "llm.layers.*.mlp.*",
            "llm.layers.12.attn.q.weight"
        ));
        assert!(wildcard_match("projector.weight", "projector.weight"));
        assert!(!wildcard_match("projector.weight", "projector.weight2"));
        assert!(wildcard_match(
            "*.attn.v.weight",
            "audio.layers.0.attn.v.weight"
        ));
        assert!(!wildcard_match("a*a", "a"));
        assert!(wildcard_match("a*a", "aa"));
    }

    #[test]
    fn presets_parse_and_resolve() {
        for (name, _) in PRESETS {
            let r = Recipe::preset(name).unwrap();
            assert_eq!(r.name.as_deref(), Some(name));
            assert!(r.budget().is_some());
        }
        let r = Recipe::preset("bin2").unwrap();
        assert_eq!(r.budget(), Some(1_990_000_000));
        assert!(matches!(
            r.keep_vocab(),
            Some(crate::vocab::KeepVocab::Auto)
        ));
        assert_eq!(r.layer_drops(), (Some(LayerDrop::Auto(8)), None));
        assert_eq!(
            r.types_for("projector.weight"),
            Some(vec![DType::Q8_0, DType::F16])
        );
        assert_eq!(
            r.types_for("llm.layers.0.mlp.up.weight"),
            Some(vec![DType::IQ2, DType::Q2K, DType::Q3K, DType::Q4K])
        );
        let lm_head = r.types_for("llm.lm_head.weight").unwrap();
        assert!(!lm_head.contains(&DType::IQ2), "{lm_head:?}");
        assert_eq!(
            r.types_for("audio.layers.3.ffn.fc1.weight"),
            Some(vec![DType::Q3K, DType::Q4K])
        );
        let r = Recipe::preset("bin1").unwrap();
        assert_eq!(r.types_for("llm.layers.0.mlp.up.weight"), None);
        assert_eq!(r.types_for("llm.lm_head.weight"), None);
        assert!(r.keep_vocab().is_none());
        let err = Recipe::preset("bin4").unwrap_err().to_string();
        assert!(err.contains("distilled"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[size]\nbin = 7\n", "size.bin"),
            ("[size]\nbin = 1\nmax_bytes = 5\n", "not both"),
            ("[vocab]\nkeep = \"most\"\n", "vocab.keep"),
            ("[prune]\nllm_layers = \"auto:x\"\n", "prune.llm_layers"),
            ("[prune]\nllm_layers = \"1,b\"\n", "prune.llm_layers"),
            ("[[types]]\nmatch = \"*\"\ntypes = [\"q5_k\"]\n", "q5_k"),
            ("[[types]]\nmatch = \"*\"\ntypes = []\n", "no types"),
            ("[size]\nbins = 1\n", "bins"),
        ];
        for (text, needle) in cases {
            let err = Recipe::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains("t.toml"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn first_matching_rule_wins_and_typos_are_found() {
        let r = Recipe::from_toml(
            "[[types]]\nmatch = [\"llm.lm_head.weight\", \"llm.embed.weight\"]\ntypes = [\"q8_0\"]\n\
             [[types]]\nmatch = \"llm.*\"\ntypes = [\"q2_k\"]\n\
             [[types]]\nmatch = \"lm.typo.*\"\ntypes = [\"q4_k\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(r.types_for("llm.lm_head.weight"), Some(vec![DType::Q8_0]));
        assert_eq!(
            r.types_for("llm.layers.1.attn.o.weight"),
            Some(vec![DType::Q2K])
        );
        assert_eq!(r.types_for("audio.layers.1.attn.o.weight"), None);
        let names = ["llm.lm_head.weight", "llm.layers.1.attn.o.weight"];
        assert_eq!(
            r.unmatched_patterns(&names),
            vec!["llm.embed.weight", "lm.typo.*"]
        );
        assert_eq!(
            parse_layer_spec("30, 31").unwrap(),
            LayerDrop::List(vec![30, 31])
        );
        assert_eq!(parse_layer_spec("auto:4").unwrap(), LayerDrop::Auto(4));
        assert!(parse_layer_spec("auto:0").is_err());
    }
}
