//! `kompakt score`: corpus BLEU and chrF of translations against references,
//! equal to sacreBLEU 2.x with its defaults (BLEU: 4-grams, `exp` smoothing,
//! tokenizer `13a`, or `zh` for Chinese, as sacreBLEU picks for `-tl zh`;
//! chrF: character 6-grams, beta 2, whitespace removed, no word n-grams).
//! The tests compare with scores sacreBLEU computed on committed files.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use regex::Regex;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Hypotheses, one per line (UTF-8)
    #[arg(long, value_name = "FILE")]
    pub hyp: PathBuf,
    /// References, one per line, as many lines as the hypotheses
    #[arg(long = "ref", value_name = "FILE")]
    pub reference: PathBuf,
    /// Target language: picks BLEU's tokenizer (zh: `zh`, anything else: `13a`)
    #[arg(long)]
    pub lang: String,
    /// BLEU tokenizer instead of the language's
    #[arg(long, value_enum)]
    pub tokenize: Option<Tokenize>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// BLEU's tokenizers (sacreBLEU's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tokenize {
    /// mteval-v13a, WMT's standard
    #[value(name = "13a")]
    T13a,
    /// Chinese characters split apart, the rest as 13a
    Zh,
}

impl Tokenize {
    /// sacreBLEU's choice for a target language.
    pub fn for_lang(lang: &str) -> Tokenize {
        if lang == "zh" {
            Tokenize::Zh
        } else {
            Tokenize::T13a
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tokenize::T13a => "13a",
            Tokenize::Zh => "zh",
        }
    }
}

/// Python's `str.isspace()`: Unicode White_Space plus the information
/// separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `' '.join(s.split())`.
fn squeeze(s: &str) -> String {
    s.split(py_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn regexes() -> &'static [(Regex, &'static str); 4] {
    static RE: OnceLock<[(Regex, &'static str); 4]> = OnceLock::new();
    RE.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("valid pattern");
        [
            // Punctuation and symbols of the ASCII range become tokens.
            (re(r"([\{-~\[-` -&\(-\+:-@/])"), " $1 "),
            // Period and comma, unless between digits.
            (re(r"([^0-9])([\.,])"), "$1 $2 "),
            (re(r"([\.,])([^0-9])"), " $1 $2"),
            // A dash after a digit.
            (re(r"([0-9])(-)"), "$1 $2 "),
        ]
    })
}

/// sacreBLEU's `TokenizerRegexp` (the common tail of `13a` and `zh`).
fn regexp_tokenize(line: &str) -> String {
    let mut s = line.to_string();
    for (re, rep) in regexes() {
        s = re.replace_all(&s, *rep).into_owned();
    }
    squeeze(&s)
}

/// sacreBLEU's `13a` tokenizer.
pub fn tokenize_13a(line: &str) -> String {
    let mut s = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    regexp_tokenize(&format!(" {s} "))
}

/// Whether sacreBLEU's `zh` tokenizer splits `c` off as a Chinese character.
/// Two of its ranges are written with five hex digits in a `\u` escape,
/// which Python reads as a four-digit character plus a digit; compared as
/// strings they cover U+2001..=U+2A6D and U+2F81..=U+2FA1, and so does this.
fn zh_char(c: char) -> bool {
    const RANGES: [(u32, u32); 22] = [
        (0x3400, 0x4db5),
        (0x4e00, 0x9fa5),
        (0x9fa6, 0x9fbb),
        (0xf900, 0xfa2d),
        (0xfa30, 0xfa6a),
        (0xfa70, 0xfad9),
        (0x2001, 0x2a6d),
        (0x2f81, 0x2fa1),
        (0xff00, 0xffef),
        (0x2e80, 0x2eff),
        (0x3000, 0x303f),
        (0x31c0, 0x31ef),
        (0x2f00, 0x2fdf),
        (0x2ff0, 0x2fff),
        (0x3100, 0x312f),
        (0x31a0, 0x31bf),
        (0xfe10, 0xfe1f),
        (0xfe30, 0xfe4f),
        (0x2600, 0x26ff),
        (0x2700, 0x27bf),
        (0x3200, 0x32ff),
        (0x3300, 0x33ff),
    ];
    let u = c as u32;
    RANGES.iter().any(|&(a, b)| (a..=b).contains(&u))
}

/// sacreBLEU's `zh` tokenizer.
pub fn tokenize_zh(line: &str) -> String {
    let mut s = String::with_capacity(line.len() * 2);
    for c in line.trim_matches(py_space).chars() {
        if zh_char(c) {
            s.push(' ');
            s.push(c);
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    regexp_tokenize(&s)
}

fn tokenize(line: &str, t: Tokenize) -> String {
    // sacreBLEU strips trailing whitespace before tokenizing.
    let line = line.trim_end_matches(py_space);
    match t {
        Tokenize::T13a => tokenize_13a(line),
        Tokenize::Zh => tokenize_zh(line),
    }
}

/// Corpus BLEU with its sufficient statistics.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Bleu {
    pub score: f64,
    pub precisions: [f64; 4],
    pub brevity_penalty: f64,
    pub sys_len: usize,
    pub ref_len: usize,
    pub tokenize: &'static str,
}

/// Corpus BLEU of `hyps` against one reference per line.
pub fn bleu(hyps: &[String], refs: &[String], t: Tokenize) -> Bleu {
    let (mut correct, mut total) = ([0usize; 4], [0usize; 4]);
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (h, r) in hyps.iter().zip(refs) {
        let (h, r) = (tokenize(h, t), tokenize(r, t));
        let hw: Vec<&str> = h.split(' ').filter(|w| !w.is_empty()).collect();
        let rw: Vec<&str> = r.split(' ').filter(|w| !w.is_empty()).collect();
        sys_len += hw.len();
        ref_len += rw.len();
        for n in 1..=4 {
            let mut counts: HashMap<&[&str], usize> = HashMap::new();
            for g in rw.windows(n) {
                *counts.entry(g).or_default() += 1;
            }
            let mut hyp_counts: HashMap<&[&str], usize> = HashMap::new();
            for g in hw.windows(n) {
                *hyp_counts.entry(g).or_default() += 1;
            }
            for (g, c) in hyp_counts {
                total[n - 1] += c;
                correct[n - 1] += c.min(counts.get(g).copied().unwrap_or(0));
            }
        }
    }
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = [0.0f64; 4];
    if correct.iter().all(|&c| c == 0) {
        return Bleu {
            score: 0.0,
            precisions,
            brevity_penalty: bp,
            sys_len,
            ref_len,
            tokenize: t.name(),
        };
    }
    let mut smooth = 1.0f64;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            // sacreBLEU's `exp` smoothing (mteval-v13a's NIST smoothing).
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    let score = bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp();
    Bleu {
        score,
        precisions,
        brevity_penalty: bp,
        sys_len,
        ref_len,
        tokenize: t.name(),
    }
}

/// Corpus chrF (character 6-grams, beta 2).
pub fn chrf(hyps: &[String], refs: &[String]) -> f64 {
    const ORDER: usize = 6;
    let mut stats = [[0usize; 3]; ORDER]; // hyp, ref, match
    let grams = |s: &str| -> Vec<HashMap<String, usize>> {
        let chars: Vec<char> = s.chars().filter(|&c| !py_space(c)).collect();
        (1..=ORDER)
            .map(|n| {
                let mut m: HashMap<String, usize> = HashMap::new();
                for g in chars.windows(n) {
                    *m.entry(g.iter().collect()).or_default() += 1;
                }
                m
            })
            .collect()
    };
    for (h, r) in hyps.iter().zip(refs) {
        let (hg, rg) = (grams(h), grams(r));
        for n in 0..ORDER {
            let hyp_count: usize = hg[n].values().sum();
            let ref_count: usize = rg[n].values().sum();
            let matches: usize = hg[n]
                .iter()
                .map(|(g, &c)| c.min(rg[n].get(g).copied().unwrap_or(0)))
                .sum();
            stats[n][0] += if rg[n].is_empty() { 0 } else { hyp_count };
            stats[n][1] += ref_count;
            stats[n][2] += matches;
        }
    }
    let factor = 4.0; // beta^2
    let (mut prec, mut rec, mut eff) = (0.0f64, 0.0f64, 0usize);
    for [h, r, m] in stats {
        if h > 0 && r > 0 {
            prec += m as f64 / h as f64;
            rec += m as f64 / r as f64;
            eff += 1;
        }
    }
    if eff == 0 {
        return 0.0;
    }
    let (p, r) = (prec / eff as f64, rec / eff as f64);
    if p + r > 0.0 {
        100.0 * (1.0 + factor) * p * r / (factor * p + r)
    } else {
        0.0
    }
}

/// Lines of a UTF-8 file (a final line feed ends the last line; `\r\n`
/// counts as one line end).
pub fn read_lines(path: &Path, what: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what} {}: cannot read it as UTF-8 text", path.display()))?;
    if text.is_empty() {
        bail!("{what} {}: the file is empty", path.display());
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// Both scores of one hypothesis file, after checking the line counts.
pub fn score_files(hyp: &Path, reference: &Path, t: Tokenize) -> Result<(Bleu, f64)> {
    let hyps = read_lines(hyp, "hypotheses")?;
    let refs = read_lines(reference, "references")?;
    if hyps.len() != refs.len() {
        bail!(
            "{} has {} lines but {} has {}: hypotheses and references must pair line by line",
            hyp.display(),
            hyps.len(),
            reference.display(),
            refs.len()
        );
    }
    Ok((bleu(&hyps, &refs, t), chrf(&hyps, &refs)))
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let lang = args.lang.trim();
    if lang.is_empty() || !lang.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!(
            "--lang `{}`: give a language code such as de or zh",
            args.lang
        );
    }
    let t = args.tokenize.unwrap_or_else(|| Tokenize::for_lang(lang));
    let (b, c) = score_files(&args.hyp, &args.reference, t)?;
    if args.json {
        let v = serde_json::json!({
            "hyp": args.hyp.display().to_string(),
            "ref": args.reference.display().to_string(),
            "lang": lang,
            "bleu": b.score,
            "chrf": c,
            "bleu_detail": b,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "BLEU {:.2} (tokenize {}, precisions {:.1}/{:.1}/{:.1}/{:.1}, BP {:.3}, {}/{} tokens)  chrF {:.2}",
            b.score,
            b.tokenize,
            b.precisions[0],
            b.precisions[1],
            b.precisions[2],
            b.precisions[3],
            b.brevity_penalty,
            b.sys_len,
            b.ref_len,
            c
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> serde_json::Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mt/scores.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn tokenizers_equal_sacrebleus() {
        let f = fixture();
        let cases = f["tokenize"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for c in cases {
            let text = c["text"].as_str().unwrap();
            assert_eq!(
                tokenize(text, Tokenize::T13a),
                c["13a"].as_str().unwrap(),
                "{text:?}"
            );
            assert_eq!(
                tokenize(text, Tokenize::Zh),
                c["zh"].as_str().unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn scores_equal_sacrebleus() {
        let f = fixture();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mt");
        for c in f["cases"].as_array().unwrap() {
            let t = Tokenize::for_lang(c["lang"].as_str().unwrap());
            assert_eq!(t.name(), c["tokenize"].as_str().unwrap());
            let hyp = dir.join(c["hyp"].as_str().unwrap());
            let (b, chrf) = score_files(&hyp, &dir.join(c["ref"].as_str().unwrap()), t).unwrap();
            let close =
                |a: f64, want: &serde_json::Value| (a - want.as_f64().unwrap()).abs() < 1e-9;
            assert!(
                close(b.score, &c["bleu"]),
                "{hyp:?}: BLEU {} vs {}",
                b.score,
                c["bleu"]
            );
            assert!(
                close(chrf, &c["chrf"]),
                "{hyp:?}: chrF {chrf} vs {}",
                c["chrf"]
            );
            assert!(close(b.brevity_penalty, &c["bp"]), "{hyp:?}");
            for (p, w) in b.precisions.iter().zip(c["precisions"].as_array().unwrap()) {
                assert!(close(*p, w), "{hyp:?}: precision {p} vs {w}");
            }
            assert_eq!(b.sys_len as u64, c["sys_len"].as_u64().unwrap());
            assert_eq!(b.ref_len as u64, c["ref_len"].as_u64().unwrap());
        }
    }

    #[test]
    fn degenerate_corpora() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // No overlap at all: BLEU 0, chrF 0; an empty hypothesis line: brevity penalty 0.
        assert_eq!(
            bleu(&s(&["xyz"]), &s(&["abc def"]), Tokenize::T13a).score,
            0.0
        );
        assert_eq!(chrf(&s(&["xyz"]), &s(&["abc"])), 0.0);
        let b = bleu(&s(&[""]), &s(&["abc def"]), Tokenize::T13a);
        assert_eq!((b.score, b.brevity_penalty, b.sys_len), (0.0, 0.0, 0));
        // Identical text scores 100 on both.
        let same = s(&["Das ist ein Test mit fünf Wörtern."]);
        assert!((bleu(&same, &same, Tokenize::T13a).score - 100.0).abs() < 1e-9);
        assert!((chrf(&same, &same) - 100.0).abs() < 1e-9);
    }
}
