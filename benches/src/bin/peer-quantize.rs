//! llama.cpp's quantizations of the proxy's LLM, with an importance matrix
//! computed by llama.cpp's method on the calibration text.
//!
//! 1. Importance matrix (what `llama-imatrix` does): the calibration texts
//!    (tokenized with the proxy's tokenizer, no BOS: Qwen2's GGUF does not add
//!    one) are cut into chunks of `--chunk` tokens; every chunk is decoded by
//!    llama.cpp from the F32 GGUF with logits on for all tokens, and the
//!    context's `cb_eval` callback sums, for every `MUL_MAT` node on a `blk.*`
//!    weight with at least 16 activation rows, the squared activations per
//!    input column ([`ggml::llama::collect`]). Importance = sum / rows.
//! 2. `llama_model_quantize` from the F32 GGUF (the values kompakt converts)
//!    to Q8_0, Q4_K_M, Q3_K_M, Q2_K, IQ2_XS, IQ2_XXS with that matrix, and
//!    Q4_K_M and Q2_K without it.
//!
//! Usage: `peer-quantize [--gguf DIR=$KOMPAKT_DATA/proxy/gguf]
//! [--tokenizer KPK=$KOMPAKT_DATA/proxy/kpk/proxy-f32.kpk]
//! [--calib FILE ... =$KOMPAKT_DATA/evaldata/calib/{en,de,zh}.txt] [--chunk 512]
//! [--max-chunks 0] [--threads 2] [--only LABEL,...]` (`KOMPAKT_DATA` defaults
//! to `$HOME/kompakt-data`).
//! Writes `DIR/imatrix.tsv` and `DIR/proxy-llm-<label>.gguf`; an existing
//! `imatrix.tsv` is reused (delete it to recompute).
use kompakt_benches::data_dir;
use kompakt_benches::ggml::llama::{self, Imatrix};
use kompakt_runtime::{eval, Model};
use llama_cpp_sys_2 as sys;
use std::path::PathBuf;
use std::time::Instant;

/// (label, llama_ftype, with the importance matrix)
pub const TYPES: [(&str, sys::llama_ftype, bool); 8] = [
    ("q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0, true),
    ("q4_k_m-imat", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M, true),
    ("q4_k_m", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M, false),
    ("q3_k_m-imat", sys::LLAMA_FTYPE_MOSTLY_Q3_K_M, true),
    ("q2_k-imat", sys::LLAMA_FTYPE_MOSTLY_Q2_K, true),
    ("q2_k", sys::LLAMA_FTYPE_MOSTLY_Q2_K, false),
    ("iq2_xs-imat", sys::LLAMA_FTYPE_MOSTLY_IQ2_XS, true),
    ("iq2_xxs-imat", sys::LLAMA_FTYPE_MOSTLY_IQ2_XXS, true),
];

fn main() {
    let data = data_dir();
    let mut dir = data.join("proxy/gguf");
    let mut tok = data.join("proxy/kpk/proxy-f32.kpk");
    let mut calib: Vec<PathBuf> = Vec::new();
    let (mut chunk, mut max_chunks, mut threads) = (512usize, 0usize, 2usize);
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--gguf" => dir = v().into(),
            "--tokenizer" => tok = v().into(),
            "--calib" => calib.push(v().into()),
            "--chunk" => chunk = v().parse().expect("--chunk N"),
            "--max-chunks" => max_chunks = v().parse().expect("--max-chunks N"),
            "--threads" => threads = v().parse().expect("--threads N"),
            "--only" => only = Some(v().split(',').map(String::from).collect()),
            _ => panic!("unknown argument {a}"),
        }
    }
    if calib.is_empty() {
        calib = ["en", "de", "zh"]
            .iter()
            .map(|l| data.join(format!("evaldata/calib/{l}.txt")))
            .collect();
    }
    let f32_gguf = dir.join("proxy-llm-f32.gguf");
    let im_path = dir.join("imatrix.tsv");

    let im = if im_path.exists() {
        eprintln!("reusing {}", im_path.display());
        Imatrix::load(&im_path).expect("reading the imatrix")
    } else {
        let tm = Model::load(&tok).expect("loading the tokenizer model");
        let mut chunks: Vec<Vec<u32>> = Vec::new();
        for p in &calib {
            let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let ids = eval::tokenize(&tm, &t).expect("tokenize");
            eprintln!("{}: {} tokens", p.display(), ids.len());
            // Whole chunks only, as llama-imatrix.
            chunks.extend(ids.chunks_exact(chunk).map(|c| c.to_vec()));
        }
        if max_chunks > 0 {
            // Spread over the languages: every k-th chunk.
            let k = chunks.len().div_ceil(max_chunks).max(1);
            chunks = chunks.into_iter().step_by(k).collect();
        }
        let model = llama::Model::load(&f32_gguf);
        assert!(
            !model.adds_bos(),
            "this GGUF adds BOS: prepend it to every chunk"
        );
        let mut im = Imatrix::default();
        let ud = &mut im as *mut Imatrix as *mut std::ffi::c_void;
        let t0 = Instant::now();
        {
            let mut ctx = llama::Context::new(
                &model,
                chunk,
                chunk,
                threads,
                false,
                Some((Some(llama::collect), ud)),
            );
            for (i, c) in chunks.iter().enumerate() {
                ctx.clear();
                ctx.decode(c, 0, true);
                eprintln!(
                    "imatrix chunk {}/{} ({:.0} s)",
                    i + 1,
                    chunks.len(),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        eprintln!(
            "imatrix: {} chunks x {chunk} tokens, {} weights, {:.0} s",
            chunks.len(),
            im.stats.len(),
            t0.elapsed().as_secs_f64()
        );
        im.save(&im_path).expect("writing the imatrix");
        im
    };

    for (label, ftype, use_im) in TYPES {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == label)) {
            continue;
        }
        let dst = dir.join(format!("proxy-llm-{label}.gguf"));
        let t0 = Instant::now();
        llama::quantize(&f32_gguf, &dst, ftype, use_im.then_some(&im), threads);
        let m = llama::Model::load(&dst);
        println!(
            "{label}: {} ({} bytes, tensors {} bytes, {:.3} bits/weight), {:.0} s",
            dst.display(),
            std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0),
            m.tensor_bytes(),
            m.tensor_bytes() as f64 * 8.0 / m.n_params() as f64,
            t0.elapsed().as_secs_f64()
        );
    }
}
