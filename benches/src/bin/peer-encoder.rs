//! Audio encoder speed of llama.cpp (libmtmd, Qwen2-Audio's `qwen2a`
//! mmproj) and kompakt on the same weights and the same samples, in one
//! process, interleaved.
//!
//! Per precision (f16, q8_0: the encoder and projector matrices of both
//! files), audio length and thread count, both engines turn the same 16 kHz
//! mono samples (a deterministic tone and noise mix) into projected audio
//! embeddings:
//!
//! - llama.cpp: `mtmd_tokenize` (log-mel of the clip padded with 30 s of
//!   zeros, cut into 3000-frame windows; the `<|audio_bos|>`/`<|audio_eos|>`
//!   tokens) then `mtmd_encode_chunk` per audio window (encoder + projector,
//!   all 3000 frames, no attention mask: 750 rows per window).
//! - kompakt: `Session::features` (log-mel, one 30 s window, as the HF
//!   feature extractor) then `Session::encode` (encoder + projector over the
//!   valid frames only: ~25 rows per second of audio).
//!
//! Timed: mel and encode separately for both, and their sum, which is the
//! span compared. One untimed warm-up per engine, precision and thread
//! count (llama.cpp: once per precision), then `--reps` rounds with the
//! engine order alternating; medians; the table is printed after every
//! round, so a cut-short run still reports. With the check on (default), the first round also compares the
//! projected rows of the two engines (cosine per row over the rows both
//! have; at 30 s both encode the same 3000 frames).
//!
//! Files (`--dir`): `enc-{type}.kpk` (kompakt) and `mmproj-qwen2a-{type}.gguf`
//! plus `qwen2a-vocab.gguf` (llama.cpp), made as in
//! docs/notes/2026-11-28-audio-encoder-vs-libmtmd.md.
//!
//! Usage: `peer-encoder [--dir DIR=$KOMPAKT_DATA/mtmd] [--types f16,q8_0]
//! [--seconds 5,10,30] [--threads 1,2] [--reps 3] [--no-check]`
//! (`KOMPAKT_DATA` defaults to `$HOME/kompakt-data`).
use kompakt_benches::ggml::llama;
use kompakt_benches::mtmd::AudioEncoder;
use kompakt_benches::{data_dir, median};
use kompakt_runtime::{Model, Session};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const RATE: usize = 16000;

struct Args {
    dir: PathBuf,
    types: Vec<String>,
    seconds: Vec<f64>,
    threads: Vec<usize>,
    reps: usize,
    check: bool,
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("{flag}: `{x}` is not a valid value"))
        })
        .collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dir: data_dir().join("mtmd"),
        types: vec!["f16".into(), "q8_0".into()],
        seconds: vec![5.0, 10.0, 30.0],
        threads: vec![1, 2],
        reps: 3,
        check: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-check" {
            a.check = false;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(v),
            "--types" => a.types = list(&flag, &v)?,
            "--seconds" => a.seconds = list(&flag, &v)?,
            "--threads" => a.threads = list(&flag, &v)?,
            "--reps" => a.reps = v.parse().map_err(|_| format!("--reps: `{v}`"))?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if let Some(s) = a.seconds.iter().find(|&&s| !(0.1..=30.0).contains(&s)) {
        return Err(format!(
            "--seconds: {s} is outside 0.1-30 (one encoder window)"
        ));
    }
    if a.threads.contains(&0) || a.reps == 0 {
        return Err("--threads and --reps must be at least 1".into());
    }
    Ok(a)
}

/// A deterministic 16 kHz test signal: two modulated tones and white noise.
fn signal(seconds: f64) -> Vec<f32> {
    let n = (seconds * RATE as f64).round() as usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let tau = std::f64::consts::TAU;
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 40) as f64 / (1u64 << 24) as f64) * 2.0 - 1.0;
            let a = 0.3 * (tau * 220.0 * t).sin() * (0.5 + 0.5 * (tau * 3.0 * t).sin());
            let b = 0.2 * (tau * 1250.0 * t + 2.0 * (tau * 5.0 * t).sin()).sin();
            (a + b + 0.05 * noise) as f32
        })
        .collect()
}

/// (mean, min) cosine of the first `rows` rows of width `w`.
fn row_cosines(a: &[f32], b: &[f32], rows: usize, w: usize) -> (f64, f64) {
    let (mut sum, mut min) = (0.0, f64::INFINITY);
    for r in 0..rows {
        let (x, y) = (&a[r * w..(r + 1) * w], &b[r * w..(r + 1) * w]);
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (&p, &q) in x.iter().zip(y) {
            xy += p as f64 * q as f64;
            xx += p as f64 * p as f64;
            yy += q as f64 * q as f64;
        }
        let c = xy / (xx.sqrt() * yy.sqrt()).max(f64::MIN_POSITIVE);
        sum += c;
        min = min.min(c);
    }
    (sum / rows.max(1) as f64, min)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Samples of one (precision, length, threads) cell.
#[derive(Default, Clone)]
struct Cell {
    l_mel: Vec<f64>,
    l_enc: Vec<f64>,
    l_first: Vec<f64>,
    k_mel: Vec<f64>,
    k_enc: Vec<f64>,
    l_chunks: Vec<usize>,
    k_rows: usize,
}

struct Check {
    ty: String,
    seconds: f64,
    rows: usize,
    mean: f64,
    min: f64,
}

/// kompakt's log-mel and encoder+projector on `samples`: (mel s, encode s,
/// projected rows, output).
fn kompakt_run(s: &mut Session, samples: &[f32]) -> Result<(f64, f64, usize, Vec<f32>), String> {
    let t0 = Instant::now();
    let mel = s
        .features(samples)
        .map_err(|e| format!("kompakt features: {e}"))?;
    let t1 = Instant::now();
    let emb = s.encode(&mel).map_err(|e| format!("kompakt encode: {e}"))?;
    let t2 = Instant::now();
    Ok((
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        emb.n,
        emb.projected,
    ))
}

fn print_table(a: &Args, cells: &[Vec<Vec<Cell>>], checks: &[Check], done: usize) {
    println!(
        "\nAudio encoder + projector of Qwen2-Audio-7B (full-size tower, random weights), \
         seconds, median of {done} interleaved runs; speedup = llama.cpp / kompakt.\n\
         llama.cpp s = mtmd_tokenize (log-mel of the clip + 30 s zero padding) + mtmd_encode_chunk \
         (each 3000-frame window); kompakt s = Session::features + Session::encode (valid frames only).\n"
    );
    println!(
        "| audio s | threads | precision | llama.cpp windows x rows | kompakt rows | \
         llama.cpp mel | llama.cpp encode (1st window) | **llama.cpp s** | kompakt mel | \
         kompakt encode | **kompakt s** | **speedup** | encode speedup |"
    );
    println!("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (si, &sec) in a.seconds.iter().enumerate() {
        for (ti, &t) in a.threads.iter().enumerate() {
            for (pi, ty) in a.types.iter().enumerate() {
                let c = &cells[pi][si][ti];
                let (lm, le, lf) = (median(&c.l_mel), median(&c.l_enc), median(&c.l_first));
                let (km, ke) = (median(&c.k_mel), median(&c.k_enc));
                let rows = match c.l_chunks.as_slice() {
                    [] => "-".to_string(),
                    ch if ch.iter().all(|&r| r == ch[0]) => format!("{} x {}", ch.len(), ch[0]),
                    ch => format!("{ch:?}"),
                };
                println!(
                    "| {sec} | {t} | {ty} | {rows} | {} | {lm:.3} | {le:.2} ({lf:.2}) | {:.2} | {km:.3} | \
                     {ke:.2} | {:.2} | {:.2} | {:.2} |",
                    c.k_rows,
                    lm + le,
                    km + ke,
                    (lm + le) / (km + ke),
                    le / ke
                );
            }
        }
    }
    if !checks.is_empty() {
        println!(
            "\nAgreement of the projected rows (first round, first llama.cpp window against \
             kompakt, rows both have):\n"
        );
        println!("| precision | audio s | rows compared | mean cosine | min cosine |");
        println!("|---|---:|---:|---:|---:|");
        for c in checks {
            println!(
                "| {} | {} | {} | {:.5} | {:.5} |",
                c.ty, c.seconds, c.rows, c.mean, c.min
            );
        }
    }
    println!(
        "\nload average (1/5/15 min) after this round: {}",
        loadavg()
    );
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    println!(
        "machine: {} ({} logical CPUs)",
        kompakt_kernels::probe::cpu_model(),
        { std::thread::available_parallelism().map_or(0, |n| n.get()) }
    );
    println!("load average (1/5/15 min) at start: {}", loadavg());
    llama::init();
    // SAFETY: returns a static NUL-terminated string.
    let sysinfo = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
    println!("llama.cpp: {}", sysinfo.to_string_lossy().trim());

    let vocab_path = a.dir.join("qwen2a-vocab.gguf");
    let vocab = llama::Model::load_vocab_only(&vocab_path)?;
    println!(
        "llama.cpp text model: {} (vocab only, {} tokens: for the audio marker tokens)",
        vocab_path.display(),
        vocab.n_vocab()
    );

    // Per precision: the kompakt model, a session per thread count, a libmtmd
    // context per thread count (libmtmd fixes threads at init).
    let mut models = Vec::new();
    let mut sessions: Vec<Vec<Session>> = Vec::new();
    let mut encoders: Vec<Vec<AudioEncoder>> = Vec::new();
    for ty in &a.types {
        let kpath = a.dir.join(format!("enc-{ty}.kpk"));
        let m = Arc::new(Model::load(&kpath).map_err(|e| format!("{}: {e}", kpath.display()))?);
        let c = &m.config().audio;
        let types: std::collections::BTreeMap<String, usize> = m
            .file()
            .tensors()
            .filter(|t| {
                (t.name.starts_with("audio.layers.") && t.shape.len() == 2)
                    || t.name == "projector.weight"
            })
            .fold(Default::default(), |mut acc, t| {
                *acc.entry(t.dtype.to_string()).or_default() += 1;
                acc
            });
        println!(
            "kompakt {ty}: {} — encoder d_model {}, {} layers, {} heads, ffn {}, projector -> {}; \
             encoder block matrices + projector: {types:?}",
            kpath.display(),
            c.d_model,
            c.n_layers,
            c.n_heads,
            c.ffn_dim,
            m.config().llm.hidden_size
        );
        let mut ss = Vec::new();
        for &t in &a.threads {
            ss.push(Session::new(m.clone(), t).map_err(|e| format!("kompakt session: {e}"))?);
        }
        let gpath = a.dir.join(format!("mmproj-qwen2a-{ty}.gguf"));
        let mut es = Vec::new();
        for &t in &a.threads {
            let e = AudioEncoder::new(&gpath, &vocab, t)?;
            if es.is_empty() {
                println!(
                    "llama.cpp {ty}: {} — {}",
                    gpath.display(),
                    e.info.join("; ")
                );
            }
            es.push(e);
        }
        models.push(m);
        sessions.push(ss);
        encoders.push(es);
    }

    let clips: Vec<Vec<f32>> = a.seconds.iter().map(|&s| signal(s)).collect();
    let mut cells =
        vec![vec![vec![Cell::default(); a.threads.len()]; a.seconds.len()]; a.types.len()];
    let mut checks = Vec::new();

    // Warm-up: page kompakt's mapped weights in (every session), run
    // llama.cpp's graph once per precision (libmtmd reads its weights into
    // memory and reserves its buffers at init; a window costs a minute).
    for (ss, es) in sessions.iter_mut().zip(&mut encoders) {
        for s in ss.iter_mut() {
            kompakt_run(s, &clips[0])?;
        }
        if let Some(e) = es.first_mut() {
            e.encode(&clips[0], false)?;
        }
    }
    for rep in 0..a.reps {
        for (si, clip) in clips.iter().enumerate() {
            for (ti, &t) in a.threads.iter().enumerate() {
                for (pi, ty) in a.types.iter().enumerate() {
                    let check = a.check && rep == 0 && ti == 0;
                    let mut k_out = Vec::new();
                    let mut l_out = Vec::new();
                    let kompakt_first = (rep + si + ti + pi) % 2 == 0;
                    for engine in if kompakt_first { [0, 1] } else { [1, 0] } {
                        let c = &mut cells[pi][si][ti];
                        if engine == 0 {
                            let (mel, enc, rows, out) = kompakt_run(&mut sessions[pi][ti], clip)?;
                            c.k_mel.push(mel);
                            c.k_enc.push(enc);
                            c.k_rows = rows;
                            if check {
                                k_out = out;
                            }
                        } else {
                            let r = encoders[pi][ti].encode(clip, check)?;
                            c.l_mel.push(r.mel_s);
                            c.l_enc.push(r.encode_s);
                            c.l_first
                                .push(r.chunk_s.first().copied().unwrap_or(f64::NAN));
                            c.l_chunks = r.chunk_tokens;
                            l_out = r.first;
                        }
                    }
                    let c = &cells[pi][si][ti];
                    eprintln!(
                        "rep {} {}s {t}T {ty}: llama.cpp {:.3} + {:.2} s ({:?} rows), kompakt {:.3} + {:.2} s ({} rows)",
                        rep + 1,
                        a.seconds[si],
                        c.l_mel.last().unwrap_or(&f64::NAN),
                        c.l_enc.last().unwrap_or(&f64::NAN),
                        c.l_chunks,
                        c.k_mel.last().unwrap_or(&f64::NAN),
                        c.k_enc.last().unwrap_or(&f64::NAN),
                        c.k_rows
                    );
                    if check {
                        let w = encoders[pi][ti].n_embd();
                        if w != models[pi].config().llm.hidden_size {
                            return Err(format!(
                                "llama.cpp rows are {w} wide, kompakt's {}",
                                models[pi].config().llm.hidden_size
                            ));
                        }
                        let rows = (k_out.len() / w).min(l_out.len() / w);
                        let (mean, min) = row_cosines(&k_out, &l_out, rows, w);
                        checks.push(Check {
                            ty: ty.clone(),
                            seconds: a.seconds[si],
                            rows,
                            mean,
                            min,
                        });
                    }
                }
            }
        }
        print_table(&a, &cells, &checks, rep + 1);
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("peer-encoder: {e}");
        std::process::exit(1);
    }
}
