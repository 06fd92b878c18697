//! A 2-bit weight layout for table-lookup mat-vec (T-MAC's method; issue
//! 23, first step: the kernel and its measurement, not yet a `.kpk` dtype).
//!
//! Weights `w = d * q + m`, `q` in 0..=3, with an f16 scale `d` and offset
//! `m` per row and block of [`BLOCK_COLS`] columns: 2.5 bits per weight.
//! The two bits of `q` are stored as bit planes. For four consecutive
//! columns (a group), the plane bits of a row form a 4-bit index; the dot
//! product of a row with the activations is then
//! `sum_g 2 * T_g[hi_g] + T_g[lo_g]` where `T_g[i] = sum_{k: bit k of i} x[4g + k]`
//! is a 16-entry table of partial sums of the group's activations, built
//! once per token and shared by every row. The tables are quantized to i8
//! (one scale per block), so a 256-bit `pshufb` looks up 32 entries at once
//! and `pmaddubsw` forms `2 * hi + lo`: no weight is ever dequantized.
//!
//! Layout: rows in tiles of [`TILE_ROWS`]; a tile's blocks in column order;
//! one tile-block is [`TILE_BLOCK_BYTES`]: the 32 rows' `d` (f16), their `m`
//! (f16), then per group 32 bytes of plane nibbles. In a group's 32 bytes,
//! byte `16 L + i` (`L` = 0, 1; `i` = 0..16) holds, for `r = i / 2` and plane
//! `p = 1 - i % 2`, the plane-`p` nibble of row `16 L + r` in its low 4
//! bits and of row `16 L + 8 + r` in its high 4 bits (bit `k` of a nibble:
//! column `4 g + k`). The pairs (plane 1, plane 0) of a row sit side by side
//! so that one `pmaddubsw` with multipliers (2, 1) combines them.
use half::f16;

/// Rows per tile.
pub const TILE_ROWS: usize = 32;
/// Columns per scale block.
pub const BLOCK_COLS: usize = 64;
/// Columns per table (4-bit index).
pub const GROUP: usize = 4;
const GROUPS: usize = BLOCK_COLS / GROUP;
/// Bytes of one tile-block: 32 `d`, 32 `m` (f16), 16 groups x 32 bytes.
pub const TILE_BLOCK_BYTES: usize = 2 * 2 * TILE_ROWS + GROUPS * 32;

/// Bytes of a `rows x cols` matrix (`rows` a multiple of 32, `cols` of 64).
pub fn matrix_bytes(rows: usize, cols: usize) -> usize {
    rows / TILE_ROWS * (cols / BLOCK_COLS) * TILE_BLOCK_BYTES
}

/// Quantizes `w` (`rows x cols`, row-major; `rows` a multiple of 32 and
/// `cols` of 64) with optional per-column importance: per row and block,
/// the `(d, m)` of least weighted squared error among a search of ranges,
/// each refitted by least squares, then rounded to f16.
pub fn quantize(w: &[f32], rows: usize, cols: usize, imp: Option<&[f32]>) -> Vec<u8> {
    assert!(
        rows.is_multiple_of(TILE_ROWS) && cols.is_multiple_of(BLOCK_COLS) && w.len() == rows * cols
    );
    let nb = cols / BLOCK_COLS;
    let mut out = vec![0u8; matrix_bytes(rows, cols)];
    let mut q = vec![0u8; TILE_ROWS * BLOCK_COLS];
    for t in 0..rows / TILE_ROWS {
        for b in 0..nb {
            let tb = &mut out[(t * nb + b) * TILE_BLOCK_BYTES..][..TILE_BLOCK_BYTES];
            for r in 0..TILE_ROWS {
                let row = t * TILE_ROWS + r;
                let x = &w[row * cols + b * BLOCK_COLS..][..BLOCK_COLS];
                let im = imp.map(|i| &i[b * BLOCK_COLS..][..BLOCK_COLS]);
                let (d, m) = fit_block(x, im, &mut q[r * BLOCK_COLS..][..BLOCK_COLS]);
                tb[2 * r..2 * r + 2].copy_from_slice(&d.to_bits().to_le_bytes());
                tb[64 + 2 * r..64 + 2 * r + 2].copy_from_slice(&m.to_bits().to_le_bytes());
            }
            pack_codes(&q, &mut tb[128..]);
        }
    }
    out
}

/// The best `(d, m)` (f16) of one block and its codes.
fn fit_block(x: &[f32], imp: Option<&[f32]>, q: &mut [u8]) -> (f16, f16) {
    let wt = |k: usize| imp.map_or(1.0, |i| i[k].max(1e-12));
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if hi - lo <= 0.0 {
        q.fill(0);
        return (f16::ZERO, f16::from_f32(lo));
    }
    let err = |d: f32, m: f32, q: &mut [u8]| -> f32 {
        let mut e = 0.0;
        for (k, &v) in x.iter().enumerate() {
            let c = if d > 0.0 {
                ((v - m) / d).round().clamp(0.0, 3.0)
            } else {
                0.0
            };
            q[k] = c as u8;
            let r = v - (d * c + m);
            e += wt(k) * r * r;
        }
        e
    };
    let mut best = (f32::INFINITY, 0.0f32, lo);
    let mut codes = vec![0u8; x.len()];
    for s in 0..12 {
        // Shrink the range symmetrically: outliers clip, the middle gains.
        let f = 1.0 - 0.04 * s as f32;
        let mid = 0.5 * (lo + hi);
        let (a, b) = (mid - 0.5 * f * (hi - lo), mid + 0.5 * f * (hi - lo));
        let (mut d, mut m) = ((b - a) / 3.0, a);
        for _ in 0..3 {
            err(d, m, &mut codes);
            // Weighted least squares of x ~ d * q + m.
            let (mut sw, mut sq, mut sqq, mut sx, mut sqx) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (k, &v) in x.iter().enumerate() {
                let (w, c) = (wt(k), codes[k] as f32);
                sw += w;
                sq += w * c;
                sqq += w * c * c;
                sx += w * v;
                sqx += w * c * v;
            }
            let det = sw * sqq - sq * sq;
            if det <= 0.0 {
                break;
            }
            d = (sw * sqx - sq * sx) / det;
            m = (sqq * sx - sq * sqx) / det;
            if d <= 0.0 {
                break;
            }
        }
        let (d16, m16) = (f16::from_f32(d.max(0.0)), f16::from_f32(m));
        let e = err(d16.to_f32(), m16.to_f32(), &mut codes);
        if e < best.0 {
            best = (e, d16.to_f32(), m16.to_f32());
        }
    }
    err(best.1, best.2, q);
    (f16::from_f32(best.1), f16::from_f32(best.2))
}

/// Packs the codes of a 32-row x 64-column tile-block (`q[r * 64 + c]`).
fn pack_codes(q: &[u8], out: &mut [u8]) {
    for g in 0..GROUPS {
        let nib = |row: usize, plane: u32| -> u8 {
            (0..GROUP).fold(0u8, |n, k| {
                n | (((q[row * BLOCK_COLS + GROUP * g + k] >> plane) & 1) << k)
            })
        };
        for lane in 0..2 {
            for i in 0..16 {
                let (r, plane) = (i / 2, 1 - (i % 2) as u32);
                let lo = nib(16 * lane + r, plane);
                let hi = nib(16 * lane + 8 + r, plane);
                out[g * 32 + 16 * lane + i] = lo | (hi << 4);
            }
        }
    }
}

/// Code of row `r` (in the tile), column `c` (in the block) of a tile-block.
fn code(tb: &[u8], r: usize, c: usize) -> u8 {
    let (g, k) = (c / GROUP, c % GROUP);
    let (lane, within) = (r / 16, r % 16);
    let (half, rr) = (within / 8, within % 8);
    let plane_bit = |plane: usize| {
        let byte = tb[128 + g * 32 + 16 * lane + 2 * rr + (1 - plane)];
        let nib = if half == 0 { byte & 15 } else { byte >> 4 };
        (nib >> k) & 1
    };
    plane_bit(1) << 1 | plane_bit(0)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32()
}

/// Dequantizes to `rows x cols` row-major f32.
pub fn dequantize(data: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let nb = cols / BLOCK_COLS;
    let mut out = vec![0.0; rows * cols];
    for t in 0..rows / TILE_ROWS {
        for b in 0..nb {
            let tb = &data[(t * nb + b) * TILE_BLOCK_BYTES..][..TILE_BLOCK_BYTES];
            for r in 0..TILE_ROWS {
                let (d, m) = (f16_at(tb, r), f16_at(tb, 32 + r));
                for c in 0..BLOCK_COLS {
                    out[(t * TILE_ROWS + r) * cols + b * BLOCK_COLS + c] =
                        d * code(tb, r, c) as f32 + m;
                }
            }
        }
    }
    out
}

/// The per-token activation tables of a row `x` (`cols` a multiple of 64).
#[derive(Clone, Debug)]
pub struct Tables {
    /// 16 i8 entries per group, groups in column order.
    pub q: Vec<i8>,
    /// Per block: the tables' scale (entry = `q * scale`).
    pub scale: Vec<f32>,
    /// Per block: the sum of its activations (the offsets' term).
    pub sum: Vec<f32>,
}

/// Builds the tables of `x`: exact partial sums, quantized to i8 with one
/// scale per block (the largest magnitude maps to 127).
pub fn tables(x: &[f32]) -> Tables {
    let nb = x.len() / BLOCK_COLS;
    let mut t = Tables {
        q: vec![0; nb * GROUPS * 16],
        scale: vec![0.0; nb],
        sum: vec![0.0; nb],
    };
    let mut f = [0f32; GROUPS * 16];
    for b in 0..nb {
        let xb = &x[b * BLOCK_COLS..][..BLOCK_COLS];
        let mut amax = 0f32;
        for g in 0..GROUPS {
            let xs = &xb[GROUP * g..][..GROUP];
            for i in 0..16 {
                let s: f32 = (0..GROUP).filter(|k| i >> k & 1 == 1).map(|k| xs[k]).sum();
                f[g * 16 + i] = s;
                amax = amax.max(s.abs());
            }
        }
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (o, v) in t.q[b * GROUPS * 16..][..GROUPS * 16].iter_mut().zip(&f) {
            *o = (v * inv).round() as i8;
        }
        t.scale[b] = scale;
        t.sum[b] = xb.iter().sum();
    }
    t
}

/// Mat-vec with the tables, scalar: the kernels' arithmetic (i16 sums per
/// block, then f32), the reference they are tested against.
pub fn gemv_scalar(data: &[u8], rows: usize, cols: usize, t: &Tables, out: &mut [f32]) {
    let nb = cols / BLOCK_COLS;
    for tile in 0..rows / TILE_ROWS {
        let mut acc = [0f32; TILE_ROWS];
        for b in 0..nb {
            let tb = &data[(tile * nb + b) * TILE_BLOCK_BYTES..][..TILE_BLOCK_BYTES];
            for (r, a) in acc.iter_mut().enumerate() {
                let mut s = 0i32;
                for g in 0..GROUPS {
                    let tq = &t.q[(b * GROUPS + g) * 16..][..16];
                    let (mut hi, mut lo) = (0usize, 0usize);
                    for k in 0..GROUP {
                        let c = code(tb, r, GROUP * g + k) as usize;
                        hi |= (c >> 1) << k;
                        lo |= (c & 1) << k;
                    }
                    s += 2 * tq[hi] as i32 + tq[lo] as i32;
                }
                *a += f16_at(tb, r) * t.scale[b] * s as f32 + f16_at(tb, 32 + r) * t.sum[b];
            }
        }
        out[tile * TILE_ROWS..][..TILE_ROWS].copy_from_slice(&acc);
    }
}

/// Mat-vec with the best kernel for this CPU (AVX2 + FMA + F16C, else the
/// scalar reference).
pub fn gemv(data: &[u8], rows: usize, cols: usize, t: &Tables, out: &mut [f32]) {
    assert!(rows.is_multiple_of(TILE_ROWS) && cols.is_multiple_of(BLOCK_COLS));
    assert!(data.len() >= matrix_bytes(rows, cols) && out.len() >= rows);
    assert!(t.q.len() >= cols / GROUP * 16 && t.scale.len() >= cols / BLOCK_COLS);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        // SAFETY: the features are present; sizes checked above.
        unsafe { gemv_avx2(data, rows, cols, t, out) };
        return;
    }
    gemv_scalar(data, rows, cols, t, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_avx2(data: &[u8], rows: usize, cols: usize, t: &Tables, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let nb = cols / BLOCK_COLS;
    let low4 = _mm256_set1_epi8(0x0F);
    // pmaddubsw's unsigned multipliers: 2 for the plane-1 entry, 1 for plane 0.
    let mult = _mm256_set1_epi16(0x0102);
    for tile in 0..rows / TILE_ROWS {
        // f32 accumulators: rows 0-7, 8-15, 16-23, 24-31.
        let mut acc = [_mm256_setzero_ps(); 4];
        let base = data.as_ptr().add(tile * nb * TILE_BLOCK_BYTES);
        for b in 0..nb {
            let tb = base.add(b * TILE_BLOCK_BYTES);
            let tq = t.q.as_ptr().add(b * GROUPS * 16);
            // i16 sums: `a` lane 0 rows 0-7, lane 1 rows 16-23; `c` rows 8-15, 24-31.
            let (mut a, mut c) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            let codes = tb.add(128);
            for g in 0..GROUPS {
                let tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128(tq.add(16 * g).cast()));
                let v = _mm256_loadu_si256(codes.add(32 * g).cast());
                let lo = _mm256_and_si256(v, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                let pl = _mm256_shuffle_epi8(tbl, lo);
                let ph = _mm256_shuffle_epi8(tbl, hi);
                a = _mm256_add_epi16(a, _mm256_maddubs_epi16(mult, pl));
                c = _mm256_add_epi16(c, _mm256_maddubs_epi16(mult, ph));
            }
            let s = _mm256_set1_ps(t.scale[b]);
            let sx = _mm256_set1_ps(t.sum[b]);
            let parts = [
                _mm256_castsi256_si128(a),
                _mm256_castsi256_si128(c),
                _mm256_extracti128_si256(a, 1),
                _mm256_extracti128_si256(c, 1),
            ];
            for (k, p) in parts.iter().enumerate() {
                let i = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(*p));
                let d = _mm256_cvtph_ps(_mm_loadu_si128(tb.add(16 * k).cast()));
                let m = _mm256_cvtph_ps(_mm_loadu_si128(tb.add(64 + 16 * k).cast()));
                acc[k] = _mm256_fmadd_ps(i, _mm256_mul_ps(d, s), acc[k]);
                acc[k] = _mm256_fmadd_ps(m, sx, acc[k]);
            }
        }
        let o = out.as_mut_ptr().add(tile * TILE_ROWS);
        for (k, v) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(8 * k), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..rows * cols)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_that_of_four_levels() {
        let (rows, cols) = (64, 256);
        let w = data(rows, cols, 1);
        let q = quantize(&w, rows, cols, None);
        assert_eq!(q.len(), matrix_bytes(rows, cols));
        assert_eq!(q.len() * 8, rows * cols * 5 / 2); // 2.5 bits per weight
        let dq = dequantize(&q, rows, cols);
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let err: Vec<f32> = w.iter().zip(&dq).map(|(a, b)| a - b).collect();
        // Uniform data on 4 levels: step/sqrt(12) with step = range/3.
        let bound = 0.1 / 3.0 / 12f32.sqrt();
        assert!(rms(&err) < 1.05 * bound, "{} vs {bound}", rms(&err));
    }

    #[test]
    fn table_gemv_matches_the_dequantized_product() {
        let (rows, cols) = (96, 512);
        let w = data(rows, cols, 2);
        let x = data(1, cols, 3);
        let q = quantize(&w, rows, cols, None);
        let dq = dequantize(&q, rows, cols);
        let t = tables(&x);
        let mut scalar = vec![0.0; rows];
        gemv_scalar(&q, rows, cols, &t, &mut scalar);
        let mut best = vec![0.0; rows];
        gemv(&q, rows, cols, &t, &mut best);
        for r in 0..rows {
            let exact: f32 = dq[r * cols..][..cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum();
            // The kernel equals its scalar reference up to f32 rounding.
            assert!(
                (best[r] - scalar[r]).abs() <= 1e-5 * (1.0 + scalar[r].abs()),
                "row {r}"
            );
            // The i8 tables cost a small error against the exact product.
            let scale: f32 = dq[r * cols..][..cols].iter().map(|v| v.abs()).sum::<f32>()
                * x.iter().fold(0f32, |m, v| m.max(v.abs()))
                / 127.0;
            assert!(
                (scalar[r] - exact).abs() <= scale,
                "row {r}: {} vs {exact}",
                scalar[r]
            );
        }
    }
}
