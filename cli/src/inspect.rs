//! `kompakt inspect`: prints what a `.kpk` file holds (architecture, exact
//! size, parameters and bits per weight per component, dtype histogram,
//! IWSLT 2025 size bin, provenance, a submission description), as text or
//! JSON. The facts come from `kompakt_format::summary`; this module only
//! formats them.
use anyhow::Context;
use clap::Args;
use kompakt_format::summary::{group_digits, Component, ComponentStats, SizeBin, Summary};
use kompakt_format::{KpkFile, MetaValue, Metadata};
use serde_json::{json, Value};
use std::fmt::Write as _;

#[derive(Args)]
pub struct InspectArgs {
    /// The .kpk file
    pub file: std::path::PathBuf,
    /// Print the facts as JSON
    #[arg(long)]
    pub json: bool,
    /// Also check every tensor's checksum
    #[arg(long)]
    pub verify: bool,
    /// Team name used in the submission model name
    #[arg(long, default_value = "TEAM")]
    pub team: String,
    /// Print only the IWSLT 2025 submission: the model name for --lang/--condition/--type and
    /// the mandatory description fields
    #[arg(long)]
    pub submission: bool,
    /// Target language of the submission (default: the model's first language)
    #[arg(long, requires = "submission")]
    pub lang: Option<String>,
    /// Data condition of the submission
    #[arg(long, value_enum, default_value_t = Condition::Constrained, requires = "submission")]
    pub condition: Condition,
    /// Primary or contrastive run
    #[arg(long = "type", value_enum, default_value_t = RunType::Primary, requires = "submission")]
    pub run_type: RunType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Condition {
    Constrained,
    Unconstrained,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunType {
    Primary,
    Contrastive,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Constrained => "constrained",
            Condition::Unconstrained => "unconstrained",
        }
    }
}

impl RunType {
    fn name(self) -> &'static str {
        match self {
            RunType::Primary => "primary",
            RunType::Contrastive => "contrastive",
        }
    }
}

/// The submission's model name, description text and the facts as JSON.
fn submission(s: &Summary, args: &InspectArgs) -> anyhow::Result<(String, String, Value)> {
    let lang = match &args.lang {
        Some(l) => {
            if !s.languages.is_empty() && !s.languages.contains(l) {
                anyhow::bail!(
                    "--lang {l}: the model has no prompt for it (languages: {})",
                    s.languages.join(", ")
                );
            }
            l.clone()
        }
        None => s.languages.first().cloned().unwrap_or_else(|| "de".into()),
    };
    if !args
        .team
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
        || args.team.is_empty()
    {
        anyhow::bail!(
            "--team {:?}: use letters, digits and '-' only (the name is joined with '_')",
            args.team
        );
    }
    let name = s.submission_name(
        &args.team,
        &lang,
        args.condition.name(),
        args.run_type.name(),
    );
    let mut text = format!("Model name: {name}\n");
    text.push_str(&s.submission_fields());
    if s.bin.number().is_none() {
        text.push_str("Warning: 4 GB or more is over the largest size bin (Bin1 is 2-4 GB)\n");
    }
    let json = json!({
        "model_name": name,
        "team": args.team,
        "lang": lang,
        "condition": args.condition.name(),
        "type": args.run_type.name(),
        "size_bin": s.bin.name(),
        "storage_bytes": s.file_size,
        "params": s.params.total.params,
        "techniques": s.techniques,
        "datasets": s.datasets,
        "description": text,
    });
    Ok((name, text, json))
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let file = KpkFile::open(&args.file)?;
    if args.verify {
        file.verify()?;
    }
    let summary = Summary::of(&file);
    if args.submission {
        let (_, text, json) = submission(&summary, &args)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json).context("serializing JSON")?
            );
        } else {
            print!("{text}");
        }
        return Ok(());
    }
    let out = if args.json {
        serde_json::to_string_pretty(&to_json(&file, &summary, &args))
            .context("serializing JSON")?
    } else {
        to_text(&file, &summary, &args)
    };
    println!("{out}");
    Ok(())
}

const AUDIO_KEYS: [(&str, &str); 6] = [
    ("d_model", "audio.d_model"),
    ("layers", "audio.n_layers"),
    ("heads", "audio.n_heads"),
    ("ffn", "audio.ffn_dim"),
    ("mels", "audio.n_mels"),
    ("positions", "audio.max_source_positions"),
];

const LLM_KEYS: [(&str, &str); 7] = [
    ("hidden", "llm.hidden_size"),
    ("layers", "llm.n_layers"),
    ("heads", "llm.n_heads"),
    ("kv_heads", "llm.n_kv_heads"),
    ("head_dim", "llm.head_dim"),
    ("ffn", "llm.ffn_dim"),
    ("vocab", "llm.vocab_size"),
];

fn dims_text(meta: &Metadata, keys: &[(&str, &str)]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|(label, key)| meta.opt_u64(key).map(|v| format!("{label} {v}")))
        .collect();
    if parts.is_empty() {
        "(not recorded)".to_string()
    } else {
        parts.join(", ")
    }
}

fn dims_json(meta: &Metadata, keys: &[(&str, &str)]) -> Value {
    Value::Object(
        keys.iter()
            .filter_map(|(label, key)| meta.opt_u64(key).map(|v| (label.to_string(), json!(v))))
            .collect(),
    )
}

fn bpw(bits: Option<f64>) -> String {
    bits.map_or_else(|| "-".to_string(), |b| format!("{b:.3}"))
}

fn to_text(file: &KpkFile, s: &Summary, args: &InspectArgs) -> String {
    let meta = file.metadata();
    let mut o = String::new();
    let (major, minor) = file.version();
    let _ = writeln!(o, "file:          {}", args.file.display());
    let _ = writeln!(
        o,
        "format:        kpk {major}.{minor}, {} tensors, {} metadata keys",
        file.n_tensors(),
        meta.len()
    );
    let _ = writeln!(
        o,
        "architecture:  {}{}",
        meta.opt_str("general.architecture")
            .unwrap_or("(not recorded)"),
        meta.opt_str("general.name")
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "audio encoder: {}", dims_text(meta, &AUDIO_KEYS));
    let _ = writeln!(o, "LLM:           {}", dims_text(meta, &LLM_KEYS));
    let _ = writeln!(
        o,
        "prompt:        style {}, languages {}",
        meta.opt_str("prompt.style").unwrap_or("(not recorded)"),
        if s.languages.is_empty() {
            "(not recorded)".to_string()
        } else {
            s.languages.join(", ")
        }
    );
    if let Some(t) = meta.opt_str("prompt.template") {
        let _ = writeln!(o, "  template:    {}", quoted(t));
    }
    for lang in &s.languages {
        match meta.opt_str(&format!("prompt.instruction.{lang}")) {
            Some(i) => {
                let _ = writeln!(o, "  {lang:<12} {}", quoted(i));
            }
            None => {
                if let Some(full) = meta.opt_str(&format!("prompt.template.{lang}")) {
                    let _ = writeln!(o, "  {lang:<12} {} (full prompt)", quoted(full));
                }
            }
        }
    }
    let _ = writeln!(
        o,
        "storage:       {} bytes = {:.3} MB = {:.3} MiB",
        s.file_size,
        s.size_mb(),
        s.size_mib()
    );
    let _ = writeln!(
        o,
        "size bin:      {} ({}), 1 MB = 10^6 bytes",
        s.bin.name(),
        s.bin.range()
    );
    if s.bin_binary != s.bin {
        let _ = writeln!(
            o,
            "               note: reading 1 MB as 2^20 bytes gives {} ({})",
            s.bin_binary.name(),
            s.bin_binary.range()
        );
    }
    if args.verify {
        let _ = writeln!(
            o,
            "checksums:     all {} tensors verified",
            file.n_tensors()
        );
    }

    let _ = writeln!(o, "\nparameters:");
    let _ = writeln!(
        o,
        "  {:<14} {:>17} {:>15} {:>9}",
        "component", "params", "bytes", "bits/w"
    );
    let rows = s
        .params
        .components
        .iter()
        .filter(|c| c.tensors > 0 || c.component != Component::Other)
        .map(|c| (c.component.label(), c))
        .chain(std::iter::once(("total", &s.params.total)));
    for (label, c) in rows {
        let _ = writeln!(
            o,
            "  {:<14} {:>17} {:>15} {:>9}",
            label,
            group_digits(c.params),
            group_digits(c.bytes),
            bpw(c.bits_per_weight())
        );
    }
    let overhead = s.file_size.saturating_sub(s.params.total.bytes);
    let _ = writeln!(
        o,
        "  (file overhead: {} bytes of header, metadata, vocabulary table, directory, padding)",
        group_digits(overhead)
    );
    for m in &s.param_mismatches {
        let _ = writeln!(
            o,
            "  warning: {} = {} in metadata, but the tensors hold {}",
            m.key,
            group_digits(m.recorded),
            group_digits(m.computed)
        );
    }

    let _ = writeln!(o, "\ndtypes:");
    for h in &s.histogram {
        let _ = writeln!(
            o,
            "  {:<7} {:>5} tensors {:>17} params {:>15} bytes",
            h.dtype.name(),
            h.tensors,
            group_digits(h.params),
            group_digits(h.bytes)
        );
    }

    let list = |v: &[String]| {
        if v.is_empty() {
            "  (not recorded)\n".to_string()
        } else {
            v.iter().map(|t| format!("  - {t}\n")).collect()
        }
    };
    let _ = write!(o, "\ntechniques:\n{}", list(&s.techniques));
    let _ = write!(o, "datasets:\n{}", list(&s.datasets));
    let _ = write!(
        o,
        "\nsubmission description:\n{}",
        s.submission_description(&args.team)
    );
    o.trim_end().to_string()
}

fn to_json(file: &KpkFile, s: &Summary, args: &InspectArgs) -> Value {
    let meta = file.metadata();
    let component = |c: &ComponentStats| {
        json!({
            "tensors": c.tensors,
            "params": c.params,
            "bytes": c.bytes,
            "bits_per_weight": c.bits_per_weight(),
        })
    };
    let mut params: serde_json::Map<String, Value> = s
        .params
        .components
        .iter()
        .filter(|c| c.tensors > 0 || c.component.params_key().is_some())
        .map(|c| (c.component.id().to_string(), component(c)))
        .collect();
    params.insert("total".to_string(), component(&s.params.total));
    let bin_json = |b: SizeBin| json!({"name": b.name(), "number": b.number(), "range": b.range()});
    let str_meta = |k: &str| match meta.get(k) {
        Some(MetaValue::Str(v)) => json!(v),
        _ => Value::Null,
    };
    json!({
        "file": args.file.display().to_string(),
        "format_version": format!("{}.{}", file.version().0, file.version().1),
        "n_tensors": file.n_tensors(),
        "n_metadata_keys": meta.len(),
        "architecture": str_meta("general.architecture"),
        "name": str_meta("general.name"),
        "audio": dims_json(meta, &AUDIO_KEYS),
        "llm": dims_json(meta, &LLM_KEYS),
        "prompt_style": str_meta("prompt.style"),
        "languages": s.languages,
        "prompts": {
            "template": str_meta("prompt.template"),
            "instructions": s.languages.iter()
                .map(|l| (l.clone(), str_meta(&format!("prompt.instruction.{l}"))))
                .collect::<serde_json::Map<String, Value>>(),
            "full": s.languages.iter()
                .map(|l| (l.clone(), str_meta(&format!("prompt.template.{l}"))))
                .collect::<serde_json::Map<String, Value>>(),
        },
        "storage": {
            "bytes": s.file_size,
            "mb": s.size_mb(),
            "mib": s.size_mib(),
        },
        "size_bin": bin_json(s.bin),
        "size_bin_binary_mb": bin_json(s.bin_binary),
        "params": params,
        "param_mismatches": s.param_mismatches.iter().map(|m| json!({
            "key": m.key, "recorded": m.recorded, "computed": m.computed,
        })).collect::<Vec<_>>(),
        "dtypes": s.histogram.iter().map(|h| json!({
            "dtype": h.dtype.name(), "tensors": h.tensors, "params": h.params, "bytes": h.bytes,
        })).collect::<Vec<_>>(),
        "techniques": s.techniques,
        "datasets": s.datasets,
        "submission": {
            "model_names": s.submission_names(&args.team),
            "description": s.submission_description(&args.team),
        },
        "verified": args.verify,
    })
}

/// A prompt text on one line: quoted, line feeds as `\n`.
fn quoted(text: &str) -> String {
    format!(
        "\"{}\"",
        text.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('"', "\\\"")
    )
}
