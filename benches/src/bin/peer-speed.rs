//! Prefill and decode speed of llama.cpp and kompakt on the same weights
//! (the proxy's Qwen2.5-0.5B LLM), in one process, interleaved.
//!
//! Per pair (kompakt type, nearest llama.cpp type) and thread count: a
//! prompt of `--prompt` tokens (the start of the held-out English text,
//! fed as ids, no BOS) is prefilled from an empty cache, then `--gen` tokens
//! are generated greedily with EOS ignored. kompakt runs
//! `Session::generate_text(prompt, gen, true)`; llama.cpp runs the same
//! loop through `llama_decode` (prompt in one batch with the last logits
//! only, then one token per call; llama.cpp's default context: F16 KV cache,
//! flash attention auto). Both count decode the same way: `gen` tokens over
//! the time from the end of prefill to the last token (gen - 1 one-token
//! forward passes). Every measurement is repeated `--reps` times with the
//! engines alternating, after one untimed warm-up; the medians are printed
//! with the ratio kompakt / llama.cpp (the table is printed after every
//! round, so a cut-short run still reports).
//!
//! Usage: `peer-speed [--threads 1,2] [--reps 3] [--prompt 512] [--gen 64]
//! [--pairs f16,q8_0,q4_k,q3_k,q2_k]`. Files: `$KOMPAKT_DATA/proxy/kpk/proxy-{type}.kpk`,
//! `$KOMPAKT_DATA/proxy/gguf/proxy-llm-{type}.gguf` and the held-out text
//! `$KOMPAKT_DATA/evaldata/heldout/en.txt` (`KOMPAKT_DATA` defaults to
//! `$HOME/kompakt-data`).
use kompakt_benches::ggml::llama;
use kompakt_benches::{data_dir, median};
use kompakt_runtime::{eval, Model, Session};
use std::sync::Arc;
use std::time::Instant;

/// kompakt dtype -> llama.cpp file label (nearest type).
const PAIRS: [(&str, &str); 5] = [
    ("f16", "f16"),
    ("q8_0", "q8_0"),
    ("q4_k", "q4_k_m-imat"),
    ("q3_k", "q3_k_m-imat"),
    ("q2_k", "q2_k-imat"),
];

/// (prefill tok/s, decode tok/s)
fn kompakt_run(s: &mut Session, prompt: &[u32], gen: usize) -> (f64, f64) {
    let g = s.generate_text(prompt, gen, true).expect("generate_text");
    assert_eq!(g.token_ids.len(), gen);
    let t = g.timings;
    (
        t.prefill_tokens as f64 / t.prefill_s,
        t.decode_tokens as f64 / t.decode_s,
    )
}

fn argmax(v: &[f32]) -> u32 {
    let mut b = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[b] {
            b = i;
        }
    }
    b as u32
}

fn llama_run(ctx: &mut llama::Context, prompt: &[u32], gen: usize) -> (f64, f64) {
    ctx.clear();
    let t0 = Instant::now();
    ctx.decode(prompt, 0, false);
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut tok = argmax(ctx.logits(prompt.len() - 1));
    let mut n = 1;
    while n < gen {
        ctx.decode(&[tok], prompt.len() + n - 1, false);
        tok = argmax(ctx.logits(0));
        n += 1;
    }
    let decode = t1.elapsed().as_secs_f64();
    (prompt.len() as f64 / prefill, gen as f64 / decode)
}

struct Row {
    k: &'static str,
    l: &'static str,
    kbpw: f64,
    lbpw: f64,
    // [thread index] -> samples
    kp: Vec<Vec<f64>>,
    kd: Vec<Vec<f64>>,
    lp: Vec<Vec<f64>>,
    ld: Vec<Vec<f64>>,
}
fn print_table(rows: &[Row], threads: &[usize], plen: usize, gen: usize, done: usize) {
    println!(
        "\nPrefill {plen} tokens, decode {gen} tokens (greedy, EOS ignored), tok/s, median of {done} interleaved runs.\n\
         The machine is shared with other jobs: absolute tok/s vary from run to run; only the same-run ratios mean anything.\n"
    );
    println!("| threads | kompakt | bpw | llama.cpp | bpw | prefill kompakt | prefill llama.cpp | ratio | decode kompakt | decode llama.cpp | ratio |");
    println!("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (ti, &t) in threads.iter().enumerate() {
        for r in rows {
            let (kp, lp) = (median(&r.kp[ti]), median(&r.lp[ti]));
            let (kd, ld) = (median(&r.kd[ti]), median(&r.ld[ti]));
            println!(
                "| {t} | {} | {:.2} | {} | {:.2} | {kp:.1} | {lp:.1} | {:.2} | {kd:.1} | {ld:.1} | {:.2} |",
                r.k,
                r.kbpw,
                r.l.to_uppercase(),
                r.lbpw,
                kp / lp,
                kd / ld
            );
        }
    }
}

fn main() {
    let mut threads = vec![1usize, 2];
    let (mut reps, mut plen, mut gen) = (3usize, 512usize, 64usize);
    let mut pairs: Vec<(&str, &str)> = PAIRS.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--threads" => {
                threads = v()
                    .split(',')
                    .map(|x| x.parse().expect("threads"))
                    .collect()
            }
            "--reps" => reps = v().parse().expect("--reps N"),
            "--prompt" => plen = v().parse().expect("--prompt N"),
            "--gen" => gen = v().parse().expect("--gen N"),
            "--pairs" => {
                let want: Vec<String> = v().split(',').map(String::from).collect();
                pairs.retain(|(k, _)| want.iter().any(|w| w == k));
            }
            _ => panic!("unknown argument {a}"),
        }
    }
    let data = data_dir();
    let kdir = data.join("proxy/kpk");
    let gdir = data.join("proxy/gguf");
    let text =
        std::fs::read_to_string(data.join("evaldata/heldout/en.txt")).expect("held-out text");

    let mut kms = Vec::new();
    let mut lms = Vec::new();
    let mut rows = Vec::new();
    for &(k, l) in &pairs {
        let km = Arc::new(Model::load(kdir.join(format!("proxy-{k}.kpk"))).expect("kpk"));
        let lm = llama::Model::load(&gdir.join(format!("proxy-llm-{l}.gguf")));
        let kbpw = eval::size_report(&km).llm_bits_per_weight;
        let lbpw = lm.tensor_bytes() as f64 * 8.0 / lm.n_params() as f64;
        kms.push(km);
        lms.push(lm);
        let e = vec![Vec::new(); threads.len()];
        rows.push(Row {
            k,
            l,
            kbpw,
            lbpw,
            kp: e.clone(),
            kd: e.clone(),
            lp: e.clone(),
            ld: e,
        });
    }
    let mut prompt = eval::tokenize(&kms[0], &text).expect("tokenize");
    assert!(
        prompt.len() >= plen,
        "held-out text has only {} tokens",
        prompt.len()
    );
    prompt.truncate(plen);
    let n_ctx = plen + gen;
    let mut ctxs: Vec<llama::Context> = lms
        .iter()
        .map(|m| {
            assert!(!m.adds_bos());
            llama::Context::new(m, n_ctx, plen, threads[0], false, None)
        })
        .collect();
    let mut sessions: Vec<Vec<Session>> = kms
        .iter()
        .map(|m| {
            threads
                .iter()
                .map(|&t| Session::new(m.clone(), t).expect("session"))
                .collect()
        })
        .collect();

    // Warm-up: page the weights in, build llama.cpp's graphs.
    for i in 0..rows.len() {
        kompakt_run(&mut sessions[i][0], &prompt[..32], 4);
        llama_run(&mut ctxs[i], &prompt[..32], 4);
    }
    for rep in 0..reps {
        for (ti, &t) in threads.iter().enumerate() {
            for (i, r) in rows.iter_mut().enumerate() {
                ctxs[i].set_threads(t);
                // Alternate which engine goes first.
                let order = if (rep + ti + i) % 2 == 0 {
                    [0, 1]
                } else {
                    [1, 0]
                };
                for e in order {
                    if e == 0 {
                        let (p, d) = kompakt_run(&mut sessions[i][ti], &prompt, gen);
                        r.kp[ti].push(p);
                        r.kd[ti].push(d);
                    } else {
                        let (p, d) = llama_run(&mut ctxs[i], &prompt, gen);
                        r.lp[ti].push(p);
                        r.ld[ti].push(d);
                    }
                }
                eprintln!(
                    "rep {} {t}T {} / {}: kompakt {:.1} / {:.1}, llama.cpp {:.1} / {:.1} tok/s (prefill / decode)",
                    rep + 1,
                    r.k,
                    r.l,
                    r.kp[ti].last().unwrap(),
                    r.kd[ti].last().unwrap(),
                    r.lp[ti].last().unwrap(),
                    r.ld[ti].last().unwrap()
                );
            }
        }
        print_table(&rows, &threads, plen, gen, rep + 1);
    }
}
