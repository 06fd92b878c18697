//! Quantization error of kompakt vs ggml on real tensors (the `.npy` files
//! written by `scripts/quant-quality/extract.py`): relative RMSE and
//! importance-weighted relative RMSE per type, with and without importance.
//!
//! Fair layout: ggml's K and IQ types need rows that are a multiple of 256
//! values, and Qwen2.5-0.5B's rows are 896 wide. Every tensor `[R, C]` is
//! therefore viewed as `[R*C/L, L]` with `L = lcm(C, 256)` (896 -> 1792,
//! 4864 stays), its importance tiled `L/C` times, and both libraries
//! quantize exactly that matrix (same values, same block boundaries, same
//! importance per value). The bits per weight are then the types' nominal
//! ones. At most 2^20 values (the leading rows) of each tensor. Usage: `quant-quality [DIR=$KOMPAKT_DATA/qq]`
//! (`KOMPAKT_DATA` defaults to `$HOME/kompakt-data`).
use kompakt_benches::{ggml, read_npy};
use kompakt_kernels::{dequantize, quantize, DType, WeightRef};
use llama_cpp_sys_2 as sys;

const MAX_VALUES: usize = 1 << 20;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// (sum (x-y)^2, sum x^2, sum imp (x-y)^2, sum imp x^2).
fn errs(x: &[f32], y: &[f32], imp: &[f32]) -> [f64; 4] {
    let mut e = [0f64; 4];
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        let (a, d, w) = (*a as f64, (*a - *b) as f64, imp[i % imp.len()] as f64);
        e[0] += d * d;
        e[1] += a * a;
        e[2] += w * d * d;
        e[3] += w * a * a;
    }
    e
}

/// One quantizer: (label, bpw, run(src, rows, cols, imp) -> dequantized).
type Quantizer = (
    String,
    f64,
    Box<dyn Fn(&[f32], usize, usize, Option<&[f32]>) -> Vec<f32>>,
);

fn kompakt(dt: DType) -> Quantizer {
    (
        format!("kompakt {}", dt.name()),
        dt.bits_per_weight(),
        Box::new(move |x, r, c, imp| {
            let q = quantize(dt, x, r, c, imp).unwrap();
            let mut out = vec![0f32; r * c];
            dequantize(&WeightRef::new(dt, &q, r, c).unwrap(), &mut out);
            out
        }),
    )
}

fn ggml_q(name: &str, ty: sys::ggml_type) -> Quantizer {
    (
        format!("ggml {name}"),
        ggml::bpw(ty, 256),
        Box::new(move |x, r, c, imp| ggml::dequantize(ty, &ggml::quantize(ty, x, r, c, imp), r, c)),
    )
}

/// (name, rows, cols, values, importance per column).
type Tensor = (String, usize, usize, Vec<f32>, Vec<f32>);

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| kompakt_benches::data_dir().join("qq").display().to_string());
    ggml::init();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (run scripts/quant-quality/extract.py)"))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".weight.npy")
        })
        .collect();
    files.sort();
    // Pairs compared: kompakt type, then ggml types at equal or lower bpw (and iq2_xs above).
    let groups: Vec<Vec<Quantizer>> = vec![
        vec![kompakt(DType::Q8_0), ggml_q("q8_0", sys::GGML_TYPE_Q8_0)],
        vec![kompakt(DType::Q4K), ggml_q("q4_K", sys::GGML_TYPE_Q4_K)],
        vec![kompakt(DType::Q3K), ggml_q("q3_K", sys::GGML_TYPE_Q3_K)],
        vec![kompakt(DType::Q2K), ggml_q("q2_K", sys::GGML_TYPE_Q2_K)],
        vec![
            kompakt(DType::IQ2),
            ggml_q("iq2_xxs", sys::GGML_TYPE_IQ2_XXS),
            ggml_q("iq2_xs", sys::GGML_TYPE_IQ2_XS),
        ],
    ];
    // `QQ_ONLY=q4_k,q2_k` keeps the groups of those kompakt types;
    // `QQ_NO_GGML=1` keeps only kompakt's quantizers (quick iterations).
    let only = std::env::var("QQ_ONLY").ok();
    let no_ggml = std::env::var("QQ_NO_GGML").is_ok_and(|v| v == "1");
    let groups: Vec<Vec<Quantizer>> = groups
        .into_iter()
        .map(|g| {
            if no_ggml {
                g.into_iter().take(1).collect()
            } else {
                g
            }
        })
        .collect();
    let groups: Vec<Vec<Quantizer>> = groups
        .into_iter()
        .filter(|g| {
            only.as_ref()
                .is_none_or(|o| o.split(',').any(|t| g[0].0 == format!("kompakt {t}")))
        })
        .collect();
    let tensors: Vec<Tensor> = files
        .iter()
        .map(|p| {
            let (sh, x) = read_npy(p);
            let imp_p = p.with_file_name(
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace(".weight.npy", ".weight.imp.npy"),
            );
            let (_, imp) = read_npy(&imp_p);
            let (r, c) = (sh[0], sh[1]);
            assert_eq!(imp.len(), c);
            let l = c / gcd(c, 256) * 256;
            // At most MAX_VALUES values (leading rows) per tensor: time on a shared 2-core machine.
            let rows = (r * c / l).min(MAX_VALUES.div_ceil(l));
            let x = x[..rows * l].to_vec();
            let imp: Vec<f32> = (0..l).map(|i| imp[i % c]).collect();
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".weight.npy", "");
            (name, rows, l, x, imp)
        })
        .collect();
    println!(
        "{} tensors from {dir}, viewed as rows of lcm(cols, 256)\n",
        tensors.len()
    );
    println!("| quantizer | bpw | rel RMSE | imp-weighted rel RMSE | rel RMSE, with imp | imp-weighted rel RMSE, with imp | tensors where kompakt <= this (weighted, with imp) |");
    println!("|---|---|---|---|---|---|---|");
    let mut detail = Vec::new();
    for g in &groups {
        // per quantizer, per tensor: [no imp errs, imp errs]
        let mut res: Vec<Vec<[[f64; 4]; 2]>> = vec![Vec::new(); g.len()];
        for (name, r, c, x, imp) in &tensors {
            for (qi, (label, _, f)) in g.iter().enumerate() {
                let t = std::time::Instant::now();
                let e0 = errs(x, &f(x, *r, *c, None), imp);
                let e1 = errs(x, &f(x, *r, *c, Some(imp)), imp);
                detail.push(format!(
                    "| {name} | {label} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} s |",
                    (e0[0] / e0[1]).sqrt(),
                    (e0[2] / e0[3]).sqrt(),
                    (e1[0] / e1[1]).sqrt(),
                    (e1[2] / e1[3]).sqrt(),
                    t.elapsed().as_secs_f64()
                ));
                eprintln!("{}", detail.last().unwrap());
                res[qi].push([e0, e1]);
            }
        }
        // Mean over tensors of the per-tensor relative RMSE (each tensor counts once).
        let mean = |qi: usize, k: usize, w: bool| -> f64 {
            let v = &res[qi];
            v.iter()
                .map(|e| {
                    let e = e[k];
                    if w {
                        (e[2] / e[3]).sqrt()
                    } else {
                        (e[0] / e[1]).sqrt()
                    }
                })
                .sum::<f64>()
                / v.len() as f64
        };
        for (qi, (label, bpw, _)) in g.iter().enumerate() {
            let wins = if qi == 0 {
                "-".to_string()
            } else {
                let n = res[0]
                    .iter()
                    .zip(&res[qi])
                    .filter(|(k, o)| k[1][2] / k[1][3] <= o[1][2] / o[1][3])
                    .count();
                format!("{n} / {}", res[0].len())
            };
            println!(
                "| {label} | {bpw:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {wins} |",
                mean(qi, 0, false),
                mean(qi, 0, true),
                mean(qi, 1, false),
                mean(qi, 1, true),
            );
        }
    }
    println!("\n## Per tensor\n");
    println!("| tensor | quantizer | rel RMSE | imp-w rel RMSE | rel RMSE, imp | imp-w rel RMSE, imp | time |");
    println!("|---|---|---|---|---|---|---|");
    for d in detail {
        println!("{d}");
    }
}
