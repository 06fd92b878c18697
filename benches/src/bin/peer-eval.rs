//! Fidelity of llama.cpp's quantizations of the proxy's LLM next to
//! kompakt's, with kompakt's meter (`kompakt_runtime::eval`, the code behind
//! `kompakt eval`) and the same definitions: the held-out texts tokenized with
//! the reference's tokenizer (no special tokens, so no BOS), the first
//! `--max-tokens` of each, independent windows of `--window` tokens from an
//! empty cache at position 0, KL(ref || cand) and top-1 agreement at every
//! position, perplexity on the next token. The reference is kompakt's f32
//! proxy; llama.cpp gets the same token ids (its GGUF does not add BOS) with
//! logits on for every token; kompakt candidates run through
//! `Session::text_logits` as in `kompakt eval`.
//!
//! llama.cpp F32 (run with an F32 KV cache and no flash attention) and F16
//! are the alignment check: their KL must be ~0 and top-1 ~1. Every other
//! llama.cpp row runs with llama.cpp's default context (F16 KV cache).
//!
//! Usage: `peer-eval [--reference KPK] [--gguf LABEL=FILE ...] [--kpk LABEL=FILE ...]
//! [--text FILE ...] [--max-tokens 512] [--window 256] [--threads 2]`.
//! Defaults: reference `$KOMPAKT_DATA/proxy/kpk/proxy-f32.kpk`, every
//! `proxy-llm-*.gguf` in `$KOMPAKT_DATA/proxy/gguf`, kompakt's f16, q8_0,
//! q4_k, q3_k, q2_k, iq2 proxies in `$KOMPAKT_DATA/proxy/kpk`, the held-out
//! en/de/zh texts in `$KOMPAKT_DATA/evaldata/heldout` (`KOMPAKT_DATA`
//! defaults to `$HOME/kompakt-data`).
use kompakt_benches::data_dir;
use kompakt_benches::ggml::llama;
use kompakt_runtime::eval::{self, TextStats, VocabMap};
use kompakt_runtime::{KvPrecision, Model, Session};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

enum Engine<'m> {
    Llama(llama::Context<'m>),
    Kompakt(Arc<Model>, Session, VocabMap),
}

struct Cand<'m> {
    engine: &'static str,
    label: String,
    bytes: u64,
    bpw: f64,
    run: Engine<'m>,
    stats: Vec<TextStats>,
}

fn pair(s: &str) -> (String, PathBuf) {
    let (l, p) = s.split_once('=').expect("LABEL=FILE");
    (l.to_string(), p.into())
}

fn main() {
    let data = data_dir();
    let mut reference = data.join("proxy/kpk/proxy-f32.kpk");
    let (mut ggufs, mut kpks, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    let (mut max_tokens, mut window, mut threads) = (512usize, 256usize, 2usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--reference" => reference = v().into(),
            "--gguf" => ggufs.push(pair(&v())),
            "--kpk" => kpks.push(pair(&v())),
            "--text" => texts.push(PathBuf::from(v())),
            "--max-tokens" => max_tokens = v().parse().expect("--max-tokens N"),
            "--window" => window = v().parse().expect("--window N"),
            "--threads" => threads = v().parse().expect("--threads N"),
            _ => panic!("unknown argument {a}"),
        }
    }
    if ggufs.is_empty() {
        let dir = data.join("proxy/gguf");
        let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let n = p.file_name()?.to_str()?.to_string();
                let l = n
                    .strip_prefix("proxy-llm-")?
                    .strip_suffix(".gguf")?
                    .to_string();
                Some((l, p))
            })
            .collect();
        v.sort();
        ggufs = v;
    }
    if kpks.is_empty() {
        for l in ["f16", "q8_0", "q4_k", "q3_k", "q2_k", "iq2"] {
            let p = data.join(format!("proxy/kpk/proxy-{l}.kpk"));
            if p.exists() {
                kpks.push((l.to_string(), p));
            } else {
                eprintln!("skipping kompakt {l}: {} missing", p.display());
            }
        }
    }
    if texts.is_empty() {
        texts = ["en", "de", "zh"]
            .iter()
            .map(|l| data.join(format!("evaldata/heldout/{l}.txt")))
            .collect();
    }

    let rm = Arc::new(Model::load(&reference).expect("loading the reference"));
    let mut rs = Session::new(rm.clone(), threads).expect("session");
    rs.set_kv_precision(KvPrecision::F32);
    let rv = rm.config().llm.vocab_size;
    let files: Vec<(String, Vec<u32>)> = texts
        .iter()
        .map(|p| {
            let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let mut ids = eval::tokenize(&rm, &t).expect("tokenize");
            if max_tokens > 0 {
                ids.truncate(max_tokens);
            }
            let lang = eval::lang_of_path(p).unwrap_or_else(|| p.display().to_string());
            (lang, ids)
        })
        .collect();

    let lmodels: Vec<(String, PathBuf, llama::Model)> = ggufs
        .into_iter()
        .map(|(l, p)| {
            let m = llama::Model::load(&p);
            assert_eq!(
                m.n_vocab(),
                rv,
                "{}: vocabulary rows differ from the reference",
                p.display()
            );
            assert!(
                !m.adds_bos(),
                "{}: adds BOS, kompakt's eval does not",
                p.display()
            );
            (l, p, m)
        })
        .collect();
    let mut cands: Vec<Cand> = Vec::new();
    for (l, p, m) in &lmodels {
        // The F32 file runs with an F32 KV cache (the alignment check); the
        // others with llama.cpp's defaults (F16 cache).
        let kv_f32 = l == "f32";
        eprintln!(
            "llama.cpp {l}: {} params, {} tensor bytes, file {} bytes",
            m.n_params(),
            m.tensor_bytes(),
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        );
        cands.push(Cand {
            engine: "llama.cpp",
            label: if kv_f32 {
                "F32 (KV f32)".into()
            } else {
                l.to_uppercase()
            },
            bytes: m.tensor_bytes(),
            bpw: m.tensor_bytes() as f64 * 8.0 / m.n_params() as f64,
            run: Engine::Llama(llama::Context::new(
                m, window, window, threads, kv_f32, None,
            )),
            stats: vec![TextStats::default(); files.len()],
        });
    }
    for (l, p) in &kpks {
        let m = Arc::new(Model::load(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        let map = VocabMap::new(&rm, &m).expect("vocabularies");
        let s = eval::size_report(&m);
        eprintln!(
            "kompakt {l}: {} LLM params, {} LLM bytes",
            s.llm_params, s.llm_bytes
        );
        let mut sess = Session::new(m.clone(), threads).expect("session");
        sess.set_kv_precision(KvPrecision::F32);
        cands.push(Cand {
            engine: "kompakt",
            label: l.clone(),
            bytes: s.llm_bytes,
            bpw: s.llm_bits_per_weight,
            run: Engine::Kompakt(m, sess, map),
            stats: vec![TextStats::default(); files.len()],
        });
    }

    let t0 = Instant::now();
    for (f, (lang, ids)) in files.iter().enumerate() {
        for (k, w) in eval::windows(ids, window).iter().enumerate() {
            let r = rs.text_logits(w, window).expect("reference logits");
            for c in cands.iter_mut() {
                match &mut c.run {
                    Engine::Llama(ctx) => {
                        let l = ctx.all_logits(w);
                        c.stats[f].add_window_rows(&rm, w, &r, &l).expect("compare");
                    }
                    Engine::Kompakt(m, s, map) => {
                        let l = s.text_logits(w, window).expect("candidate logits");
                        c.stats[f]
                            .add_window(map, &rm, m, w, &r, &l)
                            .expect("compare");
                    }
                }
            }
            eprintln!(
                "{lang} window {} done ({:.0} s)",
                k + 1,
                t0.elapsed().as_secs_f64()
            );
        }
    }

    println!(
        "Reference: kompakt f32 proxy ({}); {} tokens per language ({}), windows of {window}, {threads} threads.\n",
        reference.display(),
        max_tokens,
        files.iter().map(|(l, ids)| format!("{l} {}", ids.len())).collect::<Vec<_>>().join(", ")
    );
    let langs: Vec<&str> = files.iter().map(|(l, _)| l.as_str()).collect();
    print!("| engine | type | LLM bytes | bits/weight | KL mean | KL p99 | top-1 |");
    for l in &langs {
        print!(" ppl {l} |");
    }
    println!();
    println!(
        "|---|---|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(langs.len())
    );
    let ppl_ref: Vec<f64> = cands
        .first()
        .map(|c| c.stats.iter().map(|s| s.score().ppl_ref).collect())
        .unwrap_or_default();
    print!(
        "| kompakt | f32 (reference) | {} | 32.000 | 0 | 0 | 1 |",
        eval::size_report(&rm).llm_bytes
    );
    for p in &ppl_ref {
        print!(" {p:.3} |");
    }
    println!();
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&a, &b| cands[b].bpw.total_cmp(&cands[a].bpw));
    for i in order {
        let c = &cands[i];
        let mut all = TextStats::default();
        for s in &c.stats {
            all.merge(s);
        }
        let a = all.score();
        print!(
            "| {} | {} | {} | {:.3} | {:.5} | {:.4} | {:.4} |",
            c.engine, c.label, c.bytes, c.bpw, a.kl_mean, a.kl_p99, a.top1
        );
        for s in &c.stats {
            print!(" {:.3} |", s.score().ppl_cand);
        }
        println!();
    }
    println!("\nPer language KL mean / top-1:");
    for c in &cands {
        let per: Vec<String> = c
            .stats
            .iter()
            .zip(&langs)
            .map(|(s, l)| {
                let x = s.score();
                format!("{l} {:.5} / {:.4}", x.kl_mean, x.top1)
            })
            .collect();
        println!("  {} {}: {}", c.engine, c.label, per.join(", "));
    }
}
