//! Facts about a model file that `kompakt inspect`, the runtime and the C
//! API report: logical parameter counts per component, stored bits per
//! weight, the dtype histogram and the IWSLT 2025 model-compression size bin,
//! plus the submission description built from them.

use crate::metadata::Metadata;
use crate::parse::TensorInfo;
use crate::DType;
use std::fmt::Write as _;

/// A model component, chosen by tensor-name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `audio.*`
    AudioEncoder,
    /// `projector.*`
    Projector,
    /// `llm.layers.*` and `llm.norm.*`
    LlmLayers,
    /// `llm.embed.*`
    Embeddings,
    /// `llm.lm_head.*`
    LmHead,
    /// Anything else.
    Other,
}

impl Component {
    /// Every component, in report order.
    pub const ALL: [Component; 6] = [
        Component::AudioEncoder,
        Component::Projector,
        Component::LlmLayers,
        Component::Embeddings,
        Component::LmHead,
        Component::Other,
    ];

    /// The component a tensor belongs to.
    pub fn of(name: &str) -> Component {
        let under = |p: &str| name == p || name.strip_prefix(p).is_some_and(|r| r.starts_with('.'));
        if under("audio") {
            Component::AudioEncoder
        } else if under("projector") {
            Component::Projector
        } else if under("llm.layers") || under("llm.norm") {
            Component::LlmLayers
        } else if under("llm.embed") {
            Component::Embeddings
        } else if under("llm.lm_head") {
            Component::LmHead
        } else {
            Component::Other
        }
    }

    /// Short human name.
    pub fn label(self) -> &'static str {
        match self {
            Component::AudioEncoder => "audio encoder",
            Component::Projector => "projector",
            Component::LlmLayers => "LLM layers",
            Component::Embeddings => "embeddings",
            Component::LmHead => "lm_head",
            Component::Other => "other",
        }
    }

    /// Machine name (JSON field).
    pub fn id(self) -> &'static str {
        match self {
            Component::AudioEncoder => "audio_encoder",
            Component::Projector => "projector",
            Component::LlmLayers => "llm_layers",
            Component::Embeddings => "embeddings",
            Component::LmHead => "lm_head",
            Component::Other => "other",
        }
    }

    /// The `params.*` metadata key recording this component's count.
    pub fn params_key(self) -> Option<&'static str> {
        match self {
            Component::AudioEncoder => Some("params.audio_encoder"),
            Component::Projector => Some("params.projector"),
            Component::LlmLayers => Some("params.llm_layers"),
            Component::Embeddings => Some("params.embeddings"),
            Component::LmHead => Some("params.lm_head"),
            Component::Other => None,
        }
    }
}

/// Logical parameters and stored bytes of one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentStats {
    pub component: Component,
    pub tensors: usize,
    pub params: u64,
    pub bytes: u64,
}

impl ComponentStats {
    /// Stored bits per logical parameter; `None` for an empty component.
    pub fn bits_per_weight(&self) -> Option<f64> {
        (self.params > 0).then(|| self.bytes as f64 * 8.0 / self.params as f64)
    }
}

/// Parameter accounting of a whole file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamBreakdown {
    /// One entry per [`Component::ALL`], in that order.
    pub components: Vec<ComponentStats>,
    pub total: ComponentStats,
}

impl ParamBreakdown {
    /// Sums the tensors' logical element counts and stored bytes per
    /// component; the vocabulary table's `tokenizer.*` tensors are left out.
    pub fn from_tensors<'a>(tensors: impl IntoIterator<Item = &'a TensorInfo>) -> ParamBreakdown {
        let mut components: Vec<ComponentStats> = Component::ALL
            .iter()
            .map(|&component| ComponentStats {
                component,
                tensors: 0,
                params: 0,
                bytes: 0,
            })
            .collect();
        for t in tensors {
            // The vocabulary table (FORMAT.md 1.4) is data, not parameters.
            if t.name.starts_with("tokenizer.") {
                continue;
            }
            let c = &mut components[Component::of(&t.name) as usize];
            c.tensors += 1;
            c.params = c.params.saturating_add(t.numel());
            c.bytes = c.bytes.saturating_add(t.nbytes);
        }
        let total = components.iter().fold(
            ComponentStats {
                component: Component::Other,
                tensors: 0,
                params: 0,
                bytes: 0,
            },
            |a, c| ComponentStats {
                component: Component::Other,
                tensors: a.tensors + c.tensors,
                params: a.params.saturating_add(c.params),
                bytes: a.bytes.saturating_add(c.bytes),
            },
        );
        ParamBreakdown { components, total }
    }

    /// The stats of one component.
    pub fn get(&self, c: Component) -> &ComponentStats {
        &self.components[c as usize]
    }

    /// Compares with the `params.*` keys present in `meta`.
    pub fn check_metadata(&self, meta: &Metadata) -> Vec<ParamMismatch> {
        let mut out = Vec::new();
        let mut check = |key: &'static str, computed: u64| {
            if let Some(recorded) = meta.opt_u64(key) {
                if recorded != computed {
                    out.push(ParamMismatch {
                        key,
                        recorded,
                        computed,
                    });
                }
            }
        };
        for c in &self.components {
            if let Some(key) = c.component.params_key() {
                check(key, c.params);
            }
        }
        check("params.total", self.total.params);
        out
    }
}

/// A `params.*` key that disagrees with the tensor shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamMismatch {
    pub key: &'static str,
    pub recorded: u64,
    pub computed: u64,
}

/// Tensors, parameters and bytes stored per dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DTypeCount {
    pub dtype: DType,
    pub tensors: usize,
    pub params: u64,
    pub bytes: u64,
}

/// The dtype histogram, in `DType::ALL` order, dtypes in use only.
pub fn dtype_histogram<'a>(tensors: impl IntoIterator<Item = &'a TensorInfo>) -> Vec<DTypeCount> {
    let mut h: Vec<DTypeCount> = DType::ALL
        .iter()
        .map(|&dtype| DTypeCount {
            dtype,
            tensors: 0,
            params: 0,
            bytes: 0,
        })
        .collect();
    for t in tensors {
        if let Some(e) = h.iter_mut().find(|e| e.dtype == t.dtype) {
            e.tensors += 1;
            e.params = e.params.saturating_add(t.numel());
            e.bytes = e.bytes.saturating_add(t.nbytes);
        }
    }
    h.retain(|e| e.tensors > 0);
    h
}

/// How "MB" is read when judging a size bin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeUnit {
    /// 1 MB = 10^6 bytes, 1 GB = 10^9 bytes (the reading kompakt uses).
    Decimal,
    /// 1 MB = 2^20 bytes, 1 GB = 2^30 bytes.
    Binary,
}

impl SizeUnit {
    fn mb(self) -> u64 {
        match self {
            SizeUnit::Decimal => 1_000_000,
            SizeUnit::Binary => 1 << 20,
        }
    }

    fn gb(self) -> u64 {
        match self {
            SizeUnit::Decimal => 1_000_000_000,
            SizeUnit::Binary => 1 << 30,
        }
    }
}

/// IWSLT 2025 model-compression size bins. A size on a boundary belongs to
/// the bin above it (200 MB is Bin4); 4 GB and more is over Bin1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SizeBin {
    /// 4 GB or more: unconstrained size.
    OverBin1,
    /// 2-4 GB.
    Bin1,
    /// 1-2 GB.
    Bin2,
    /// 0.5-1 GB.
    Bin3,
    /// 200-500 MB.
    Bin4,
    /// Under 200 MB.
    Bin5,
}

impl SizeBin {
    /// The bin of a file of `bytes` bytes.
    pub fn for_size(bytes: u64, unit: SizeUnit) -> SizeBin {
        let (mb, gb) = (unit.mb(), unit.gb());
        if bytes >= 4 * gb {
            SizeBin::OverBin1
        } else if bytes >= 2 * gb {
            SizeBin::Bin1
        } else if bytes >= gb {
            SizeBin::Bin2
        } else if bytes >= 500 * mb {
            SizeBin::Bin3
        } else if bytes >= 200 * mb {
            SizeBin::Bin4
        } else {
            SizeBin::Bin5
        }
    }

    /// 1..=5, `None` over Bin1.
    pub fn number(self) -> Option<u8> {
        match self {
            SizeBin::OverBin1 => None,
            SizeBin::Bin1 => Some(1),
            SizeBin::Bin2 => Some(2),
            SizeBin::Bin3 => Some(3),
            SizeBin::Bin4 => Some(4),
            SizeBin::Bin5 => Some(5),
        }
    }

    /// `Bin4`, or `over Bin1`.
    pub fn name(self) -> &'static str {
        match self {
            SizeBin::OverBin1 => "over Bin1",
            SizeBin::Bin1 => "Bin1",
            SizeBin::Bin2 => "Bin2",
            SizeBin::Bin3 => "Bin3",
            SizeBin::Bin4 => "Bin4",
            SizeBin::Bin5 => "Bin5",
        }
    }

    /// The bin's range in words.
    pub fn range(self) -> &'static str {
        match self {
            SizeBin::OverBin1 => "4 GB or more, unconstrained size",
            SizeBin::Bin1 => "2-4 GB",
            SizeBin::Bin2 => "1-2 GB",
            SizeBin::Bin3 => "0.5-1 GB",
            SizeBin::Bin4 => "200-500 MB",
            SizeBin::Bin5 => "under 200 MB",
        }
    }
}

/// Everything `kompakt inspect` reports about sizes and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub file_size: u64,
    pub params: ParamBreakdown,
    pub param_mismatches: Vec<ParamMismatch>,
    pub histogram: Vec<DTypeCount>,
    /// Judged with 1 MB = 10^6 bytes.
    pub bin: SizeBin,
    /// Judged with 1 MB = 2^20 bytes (reported when it differs).
    pub bin_binary: SizeBin,
    pub model_name: Option<String>,
    pub languages: Vec<String>,
    pub techniques: Vec<String>,
    pub datasets: Vec<String>,
}

impl Summary {
    /// Computes the summary of a file of `file_size` bytes.
    pub fn new<'a>(
        file_size: u64,
        meta: &Metadata,
        tensors: impl IntoIterator<Item = &'a TensorInfo> + Clone,
    ) -> Summary {
        let params = ParamBreakdown::from_tensors(tensors.clone());
        let strs = |k: &str| meta.opt_strs(k).map(<[String]>::to_vec).unwrap_or_default();
        Summary {
            file_size,
            param_mismatches: params.check_metadata(meta),
            params,
            histogram: dtype_histogram(tensors),
            bin: SizeBin::for_size(file_size, SizeUnit::Decimal),
            bin_binary: SizeBin::for_size(file_size, SizeUnit::Binary),
            model_name: meta.opt_str("general.name").map(str::to_string),
            languages: strs("prompt.languages"),
            techniques: strs("provenance.techniques"),
            datasets: strs("provenance.datasets"),
        }
    }

    /// The summary of an opened file.
    pub fn of(file: &crate::KpkFile) -> Summary {
        Summary::new(file.file_size(), file.metadata(), file.tensors())
    }

    /// Size in MB (10^6 bytes).
    pub fn size_mb(&self) -> f64 {
        self.file_size as f64 / 1e6
    }

    /// Size in MiB (2^20 bytes).
    pub fn size_mib(&self) -> f64 {
        self.file_size as f64 / (1u64 << 20) as f64
    }

    /// `TEAM_IWSLT25_ModelCompression_en-<lang>_BinN_constrained_primary`,
    /// one per target language (`de` when the file names none).
    pub fn submission_names(&self, team: &str) -> Vec<String> {
        let langs = if self.languages.is_empty() {
            vec!["de".to_string()]
        } else {
            self.languages.clone()
        };
        langs
            .iter()
            .map(|l| self.submission_name(team, l, "constrained", "primary"))
            .collect()
    }

    /// `TEAM_IWSLT25_ModelCompression_en-<lang>_BinN_<condition>_<kind>` (condition
    /// `constrained` or `unconstrained`, kind `primary` or `contrastive`; `NoBin` over Bin1).
    pub fn submission_name(&self, team: &str, lang: &str, condition: &str, kind: &str) -> String {
        let bin = match self.bin.number() {
            Some(n) => format!("Bin{n}"),
            None => "NoBin".to_string(),
        };
        format!("{team}_IWSLT25_ModelCompression_en-{lang}_{bin}_{condition}_{kind}")
    }

    /// A ready-to-paste submission description.
    pub fn submission_description(&self, team: &str) -> String {
        let mut s = String::new();
        for name in self.submission_names(team) {
            let _ = writeln!(s, "Model name: {name}");
        }
        s.push_str(&self.submission_fields());
        s
    }

    /// The mandatory description fields (size bin, exact storage size, parameters,
    /// techniques, data), without the model name.
    pub fn submission_fields(&self) -> String {
        let mut s = String::new();
        let list = |v: &[String]| {
            if v.is_empty() {
                "(not recorded in the file)".to_string()
            } else {
                v.join("; ")
            }
        };
        let _ = writeln!(
            s,
            "Size bin: {} ({}), judged with 1 MB = 10^6 bytes",
            self.bin.name(),
            self.bin.range()
        );
        let _ = writeln!(
            s,
            "Exact storage size: {} bytes ({:.3} MB, {:.3} MiB), one .kpk file holding weights, tokenizer and configuration",
            self.file_size,
            self.size_mb(),
            self.size_mib()
        );
        let parts: Vec<String> = self
            .params
            .components
            .iter()
            .filter(|c| c.params > 0)
            .map(|c| format!("{} {}", c.component.label(), group_digits(c.params)))
            .collect();
        let _ = writeln!(
            s,
            "Number of parameters: {} ({})",
            group_digits(self.params.total.params),
            parts.join(", ")
        );
        if let Some(bpw) = self.params.total.bits_per_weight() {
            let whole = self.file_size as f64 * 8.0 / self.params.total.params as f64;
            let _ = writeln!(
                s,
                "Average storage: {bpw:.3} bits per parameter in tensor data, {whole:.3} for the whole file"
            );
        }
        if let Some(m) = &self.model_name {
            let _ = writeln!(s, "Model: {m}");
        }
        let _ = writeln!(s, "Techniques: {}", list(&self.techniques));
        let _ = writeln!(s, "Data: {}", list(&self.datasets));
        s
    }
}

/// `1234567` as `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::with_capacity(d.len() + d.len() / 3);
    for (i, ch) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dtype: DType, shape: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            offset: 0,
            nbytes: dtype.storage_bytes(shape).unwrap(),
            checksum: 0,
        }
    }

    #[test]
    fn bins_follow_iwslt_boundaries() {
        use SizeBin::*;
        let d = |b| SizeBin::for_size(b, SizeUnit::Decimal);
        assert_eq!(d(0), Bin5);
        assert_eq!(d(199_999_999), Bin5);
        assert_eq!(d(200_000_000), Bin4);
        assert_eq!(d(499_999_999), Bin4);
        assert_eq!(d(500_000_000), Bin3);
        assert_eq!(d(1_000_000_000), Bin2);
        assert_eq!(d(2_000_000_000), Bin1);
        assert_eq!(d(3_999_999_999), Bin1);
        assert_eq!(d(4_000_000_000), OverBin1);
        let b = |x| SizeBin::for_size(x, SizeUnit::Binary);
        assert_eq!(b(205_000_000), Bin5);
        assert_eq!(b(200 << 20), Bin4);
        assert_eq!(b(4_000_000_000), Bin1);
        assert_eq!(b(4 << 30), OverBin1);
    }

    #[test]
    fn components_by_prefix() {
        assert_eq!(Component::of("audio.conv1.weight"), Component::AudioEncoder);
        assert_eq!(Component::of("projector.bias"), Component::Projector);
        assert_eq!(
            Component::of("llm.layers.3.mlp.up.weight"),
            Component::LlmLayers
        );
        assert_eq!(Component::of("llm.norm.weight"), Component::LlmLayers);
        assert_eq!(Component::of("llm.embed.weight"), Component::Embeddings);
        assert_eq!(Component::of("llm.lm_head.weight"), Component::LmHead);
        assert_eq!(Component::of("llm.normx"), Component::Other);
        assert_eq!(Component::of("audiox.w"), Component::Other);
    }

    #[test]
    fn breakdown_counts_logical_params_and_checks_metadata() {
        let ts = [
            t("audio.conv1.weight", DType::F16, &[8, 4, 3]),
            t("projector.weight", DType::Q8_0, &[16, 64]),
            t("llm.layers.0.mlp.up.weight", DType::Q4K, &[2, 256]),
            t("llm.norm.weight", DType::F32, &[16]),
            t("llm.embed.weight", DType::Q2K, &[4, 256]),
        ];
        let p = ParamBreakdown::from_tensors(&ts);
        assert_eq!(p.get(Component::AudioEncoder).params, 96);
        assert_eq!(p.get(Component::AudioEncoder).bits_per_weight(), Some(16.0));
        assert_eq!(p.get(Component::Projector).bits_per_weight(), Some(8.5));
        assert_eq!(p.get(Component::LlmLayers).params, 512 + 16);
        assert_eq!(p.get(Component::LmHead).params, 0);
        assert_eq!(p.get(Component::LmHead).bits_per_weight(), None);
        assert_eq!(p.total.params, 96 + 1024 + 528 + 1024);
        let mut m = Metadata::new();
        m.insert("params.projector", 1024u64).unwrap();
        m.insert("params.embeddings", 1u64).unwrap();
        let mm = p.check_metadata(&m);
        assert_eq!(
            mm,
            vec![ParamMismatch {
                key: "params.embeddings",
                recorded: 1,
                computed: 1024
            }]
        );
        let h = dtype_histogram(&ts);
        assert_eq!(h.len(), 5);
        assert_eq!(h[0].dtype, DType::F32);
    }

    #[test]
    fn submission_names_and_description() {
        let mut m = Metadata::new();
        m.insert("prompt.languages", vec!["de"]).unwrap();
        m.insert(
            "provenance.techniques",
            vec!["q4_k quantization", "layer pruning"],
        )
        .unwrap();
        let ts = [t("llm.embed.weight", DType::F32, &[10, 10])];
        let s = Summary::new(250_000_000, &m, &ts);
        assert_eq!(s.bin, SizeBin::Bin4);
        assert_eq!(
            s.submission_names("TEAM"),
            ["TEAM_IWSLT25_ModelCompression_en-de_Bin4_constrained_primary"]
        );
        let d = s.submission_description("TEAM");
        assert!(d.contains("250000000 bytes"), "{d}");
        assert!(d.contains("q4_k quantization; layer pruning"), "{d}");
        assert_eq!(
            s.submission_name("T", "zh", "unconstrained", "contrastive"),
            "T_IWSLT25_ModelCompression_en-zh_Bin4_unconstrained_contrastive"
        );
        assert!(d.ends_with(&s.submission_fields()));
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(group_digits(12), "12");
    }
}
