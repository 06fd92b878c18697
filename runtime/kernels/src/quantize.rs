//! Quantizers: f32 rows to stored rows of every weight dtype.

use crate::blocks::*;
use bytemuck::Zeroable;
use kompakt_format::DType;

/// Quantizes one row `src` (`cols` values) into `out` (the stored row).
pub fn quantize_row(dtype: DType, src: &[f32], importance: Option<&[f32]>, out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&to_f16_le(*v));
            }
        }
        DType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        DType::U8 | DType::I32 => panic!("{dtype} is not a weight type"),
        _ => {
            let be = dtype.block_elems() as usize;
            let bb = dtype.block_bytes() as usize;
            let mut x = [0f32; QK_K];
            let mut w = [0f32; QK_K];
            for (bi, o) in out.chunks_exact_mut(bb).enumerate() {
                let start = (bi * be).min(src.len());
                let end = ((bi + 1) * be).min(src.len());
                let n = end - start;
                x[..be].fill(0.0);
                x[..n].copy_from_slice(&src[start..end]);
                match importance {
                    Some(imp) => {
                        w[..be].fill(0.0);
                        w[..n].copy_from_slice(&imp[start..end]);
                    }
                    None => {
                        w[..be].fill(0.0);
                        w[..n].fill(1.0);
                    }
                }
                quantize_block(dtype, &x[..be], &w[..be], o);
            }
        }
    }
}

/// Quantizes one block minimising `sum w[i] * (x[i] - deq[i])^2`.
pub fn quantize_block(dtype: DType, x: &[f32], w: &[f32], out: &mut [u8]) {
    match dtype {
        DType::Q8_0 => quantize_q8_0(x, w, bytemuck::from_bytes_mut(out)),
        DType::Q4K => quantize_q4k(x, w, bytemuck::from_bytes_mut(out)),
        DType::Q3K => quantize_q3k(x, w, bytemuck::from_bytes_mut(out)),
        DType::Q2K => quantize_q2k(x, w, bytemuck::from_bytes_mut(out)),
        DType::IQ2 => quantize_iq2(x, w, bytemuck::from_bytes_mut(out)),
        _ => unreachable!("{dtype} is not block-quantized"),
    }
}

/// Uniform weights where a sub-block's weights sum to zero (padding, or
/// channels the calibration never saw), so its values still get fitted.
fn weights_or_ones<'a>(w: &'a [f32], ones: &'a [f32]) -> &'a [f32] {
    if w.iter().sum::<f32>() > 0.0 {
        w
    } else {
        &ones[..w.len()]
    }
}

const ONES: [f32; QK_K] = [1.0; QK_K];

fn wsse(x: &[f32], w: &[f32], f: impl Fn(usize) -> f32) -> f32 {
    x.iter()
        .zip(w)
        .enumerate()
        .map(|(i, (&v, &wt))| wt * (v - f(i)) * (v - f(i)))
        .sum()
}

/// Symmetric fit `x ~ scale * l`, `l` in `-nmax..nmax`, weighted; searches
/// the inverse scale around `-nmax / x[argmax |x|]` (ggml `make_qx_quants` idea).
fn make_qx(x: &[f32], w: &[f32], nmax: i32) -> f32 {
    let max = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    if max == 0.0 {
        return 0.0;
    }
    let (mut best, mut best_scale) = (-1f32, 0f32);
    for is in -9..=9 {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (&v, &wt) in x.iter().zip(w) {
            let l = (iscale * v).round().clamp(-nmax as f32, (nmax - 1) as f32);
            sumlx += wt * v * l;
            suml2 += wt * l * l;
        }
        if suml2 > 0.0 && sumlx * sumlx / suml2 > best {
            best = sumlx * sumlx / suml2;
            best_scale = sumlx / suml2;
        }
    }
    best_scale
}

/// Asymmetric fit `x ~ scale * l - min`, `l` in `0..=nmax`, `min >= 0`,
/// weighted least squares over a search of inverse scales (ggml
/// `make_qkx2_quants` idea). Returns `(scale, min)`.
fn make_qkx(x: &[f32], w: &[f32], nmax: i32) -> (f32, f32) {
    let xmin = x.iter().fold(f32::INFINITY, |m, &v| m.min(v)).min(0.0);
    let xmax = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if xmax <= xmin {
        return (0.0, -xmin);
    }
    let nm = nmax as f32;
    let sw: f32 = w.iter().sum();
    let sx: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum();
    let err_of = |scale: f32, minv: f32| -> f32 {
        let is = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        wsse(x, w, |i| {
            scale * ((x[i] - minv) * is).round().clamp(0.0, nm) + minv
        })
    };
    let mut best = ((xmax - xmin) / nm, xmin);
    let mut best_err = err_of(best.0, best.1);
    for is in 0..=24 {
        let iscale = (nm - 1.0 + 0.1 * is as f32) / (xmax - xmin);
        let (mut sl, mut sl2, mut sxl) = (0f32, 0f32, 0f32);
        for (&v, &wt) in x.iter().zip(w) {
            let l = (iscale * (v - xmin)).round().clamp(0.0, nm);
            sl += wt * l;
            sl2 += wt * l * l;
            sxl += wt * v * l;
        }
        let det = sw * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (sw * sxl - sx * sl) / det;
        let mut minv = (sl2 * sx - sl * sxl) / det;
        if minv > 0.0 {
            minv = 0.0;
            scale = sxl / sl2;
        }
        if scale <= 0.0 {
            continue;
        }
        let e = err_of(scale, minv);
        if e < best_err {
            best_err = e;
            best = (scale, minv);
        }
    }
    (best.0, -best.1)
}

/// Round-to-nearest of `v` onto `n` levels with the code `max` (0..=max).
#[inline]
fn q_near(v: f32, max: f32) -> u8 {
    v.round().clamp(0.0, max) as u8
}

fn quantize_q8_0(x: &[f32], w: &[f32], b: &mut BlockQ8_0) {
    // Without importance: plain absmax / 127 (exactly stable under
    // requantization); with it, also a few smaller scales.
    let weighted = w.iter().any(|&v| v != w[0]);
    let w = weights_or_ones(w, &ONES);
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        *b = BlockQ8_0::zeroed();
        return;
    }
    let mut best = (f32::INFINITY, 0f32);
    for k in 0..if weighted { 8 } else { 1 } {
        let d = f16_le(to_f16_le(amax / (127.0 - 0.5 * k as f32)));
        let e = wsse(x, w, |i| d * (x[i] / d).round().clamp(-127.0, 127.0));
        if e < best.0 {
            best = (e, d);
        }
    }
    let d = best.1;
    b.d = to_f16_le(d);
    for (q, v) in b.qs.iter_mut().zip(x) {
        *q = (v / d).round().clamp(-127.0, 127.0) as i8;
    }
}

/// Quantizes non-negative sub-scales to `bits` with one super-scale.
fn super_scale(v: &[f32], max_code: f32) -> (f32, Vec<u8>) {
    let m = v.iter().fold(0f32, |a, &b| a.max(b));
    if m <= 0.0 {
        return (0.0, vec![0; v.len()]);
    }
    let d = f16_le(to_f16_le(m / max_code));
    if d == 0.0 {
        return (0.0, vec![0; v.len()]);
    }
    (d, v.iter().map(|&s| q_near(s / d, max_code)).collect())
}

/// Weighted error of an asymmetric block (`sub` sub-blocks of `x.len()/sub`)
/// with sub-scales `d * qsc[j]`, mins `dm * qmn[j]`, codes `0..=nmax` re-rounded.
fn asym_err(x: &[f32], w: &[f32], nmax: f32, d: f32, qsc: &[u8], dm: f32, qmn: &[u8]) -> f32 {
    let n = x.len() / qsc.len();
    let mut e = 0f32;
    for j in 0..qsc.len() {
        let (s, m) = (d * qsc[j] as f32, dm * qmn[j] as f32);
        let is = if s > 0.0 { 1.0 / s } else { 0.0 };
        let r = n * j..n * j + n;
        let wj = weights_or_ones(&w[r.clone()], &ONES);
        for (&v, &wt) in x[r].iter().zip(wj) {
            let q = q_near((v + m) * is, nmax) as f32;
            let dv = v - (s * q - m);
            e += wt * dv * dv;
        }
    }
    e
}

/// Super-scales of an asymmetric block: starting from `max / code_max`,
/// tries scaled candidates for the sub-scale super-scale, then for the min
/// super-scale, keeping the pair with the smallest weighted block error
/// (codes re-rounded; ggml's `make_qp_quants` idea, by direct search).
fn asym_super(
    x: &[f32],
    w: &[f32],
    nmax: f32,
    sc: &[f32],
    mn: &[f32],
    code_max: f32,
) -> (f32, Vec<u8>, f32, Vec<u8>) {
    let (mut d, mut qsc) = super_scale(sc, code_max);
    let (mut dm, mut qmn) = super_scale(mn, code_max);
    let mut best = asym_err(x, w, nmax, d, &qsc, dm, &qmn);
    let quant =
        |v: &[f32], dd: f32| -> Vec<u8> { v.iter().map(|&s| q_near(s / dd, code_max)).collect() };
    for which in 0..2 {
        let (v, base) = if which == 0 { (sc, d) } else { (mn, dm) };
        if base <= 0.0 {
            continue;
        }
        for k in -6i32..=6 {
            if k == 0 {
                continue;
            }
            let dd = f16_le(to_f16_le(base * (1.0 + 0.015 * k as f32)));
            if dd <= 0.0 {
                continue;
            }
            let q = quant(v, dd);
            let e = if which == 0 {
                asym_err(x, w, nmax, dd, &q, dm, &qmn)
            } else {
                asym_err(x, w, nmax, d, &qsc, dd, &q)
            };
            if e < best {
                best = e;
                if which == 0 {
                    (d, qsc) = (dd, q);
                } else {
                    (dm, qmn) = (dd, q);
                }
            }
        }
    }
    (d, qsc, dm, qmn)
}

fn quantize_q4k(x: &[f32], w: &[f32], b: &mut BlockQ4K) {
    let mut sc = [0f32; 8];
    let mut mn = [0f32; 8];
    for j in 0..8 {
        let r = 32 * j..32 * j + 32;
        let wj = weights_or_ones(&w[r.clone()], &ONES);
        (sc[j], mn[j]) = make_qkx(&x[r], wj, 15);
    }
    let (d, qsc, dm, qmn) = asym_super(x, w, 15.0, &sc, &mn, 63.0);
    let mut packed = [0u8; 16];
    packed[..8].copy_from_slice(&qsc);
    packed[8..].copy_from_slice(&qmn);
    b.d = to_f16_le(d);
    b.dmin = to_f16_le(dm);
    b.scales = pack_6bit16(&packed);
    b.qs = [0; 128];
    for j in 0..8 {
        let (s, m) = (d * qsc[j] as f32, dm * qmn[j] as f32);
        let is = if s > 0.0 { 1.0 / s } else { 0.0 };
        let (g, sh) = (j / 2, 4 * (j % 2));
        for i in 0..32 {
            let q = q_near((x[32 * j + i] + m) * is, 15.0);
            b.qs[32 * g + i] |= q << sh;
        }
    }
}

fn quantize_q3k(x: &[f32], w: &[f32], b: &mut BlockQ3K) {
    let mut sc = [0f32; 16];
    for j in 0..16 {
        let r = 16 * j..16 * j + 16;
        sc[j] = make_qx(&x[r.clone()], weights_or_ones(&w[r], &ONES), 4);
    }
    let max = sc
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    *b = BlockQ3K::zeroed();
    if max == 0.0 {
        b.scales = pack_6bit16(&[32; 16]);
        return;
    }
    let d = f16_le(to_f16_le(-max / 32.0));
    let qs: [i8; 16] = core::array::from_fn(|j| {
        if d != 0.0 {
            (sc[j] / d).round().clamp(-32.0, 31.0) as i8
        } else {
            0
        }
    });
    b.d = to_f16_le(d);
    b.scales = pack_6bit16(&core::array::from_fn(|j| (qs[j] + 32) as u8));
    for wi in 0..QK_K {
        let s = d * qs[wi / 16] as f32;
        let l = if s != 0.0 {
            (x[wi] / s).round().clamp(-4.0, 3.0) as i32 + 4
        } else {
            4
        } as u8;
        let (g, k, i) = (wi / 128, (wi % 128) / 32, wi % 32);
        b.ql[32 * g + i] |= (l & 3) << (2 * k);
        b.qh[wi % 32] |= ((l >> 2) & 1) << (wi / 32);
    }
}

fn quantize_q2k(x: &[f32], w: &[f32], b: &mut BlockQ2K) {
    let mut sc = [0f32; 16];
    let mut mn = [0f32; 16];
    for j in 0..16 {
        let r = 16 * j..16 * j + 16;
        let wj = weights_or_ones(&w[r.clone()], &ONES);
        (sc[j], mn[j]) = make_qkx(&x[r], wj, 3);
    }
    let (d, qsc, dm, qmn) = asym_super(x, w, 3.0, &sc, &mn, 15.0);
    *b = BlockQ2K::zeroed();
    b.d = to_f16_le(d);
    b.dmin = to_f16_le(dm);
    for j in 0..16 {
        b.scales[j] = qsc[j] | (qmn[j] << 4);
    }
    for wi in 0..QK_K {
        let j = wi / 16;
        let (s, m) = (d * qsc[j] as f32, dm * qmn[j] as f32);
        let l = if s > 0.0 {
            q_near((x[wi] + m) / s, 3.0)
        } else {
            0
        };
        let (g, k, i) = (wi / 128, (wi % 128) / 32, wi % 32);
        b.qs[32 * g + i] |= l << (2 * k);
    }
}

/// Reverse map of the IQ2 grid: base-3 lattice index (level indices 0, 1, 2,
/// element 0 most significant) to grid index, or -1.
fn iq2_reverse() -> &'static [i16; 6561] {
    static REV: std::sync::OnceLock<Box<[i16; 6561]>> = std::sync::OnceLock::new();
    REV.get_or_init(|| {
        let mut r = Box::new([-1i16; 6561]);
        for (gi, &e) in crate::iq2_grid::GRID.iter().enumerate() {
            let mut v = 0usize;
            for k in 0..8 {
                let l = ((e >> (8 * k)) & 0xFF) as u8;
                v = v * 3
                    + crate::iq2_grid::LEVELS
                        .iter()
                        .position(|&x| x == l)
                        .unwrap();
            }
            r[v] = gi as i16;
        }
        r
    })
}

/// Best (grid index, sign bits, error) for one group of 8 at scale `s > 0`.
fn iq2_group(x: &[f32], w: &[f32], s: f32) -> (u16, u16, f32) {
    let is = 1.0 / s;
    let t: [f32; 8] = core::array::from_fn(|k| x[k].abs() * is);
    let mut neg = 0u8;
    for k in 0..8 {
        if x[k] < 0.0 {
            neg |= 1 << k;
        }
    }
    let f = iq2_costs(&t, w, 8);
    if neg.count_ones() & 1 == 0 {
        let (g, e) = iq2_nearest(&f);
        return (g, (neg & 0x7F) as u16, e * s * s);
    }
    // Odd parity: one element gets the wrong sign (it is then best coded
    // with the lowest level). Candidates: the two smallest weighted
    // magnitudes (a linear scan, no sort).
    let (mut m0, mut m1) = ((f32::INFINITY, 0usize), (f32::INFINITY, 0usize));
    for k in 0..8 {
        let v = w[k] * t[k];
        if v < m0.0 {
            m1 = m0;
            m0 = (v, k);
        } else if v < m1.0 {
            m1 = (v, k);
        }
    }
    let mut best = (f32::INFINITY, 0u16, 0u8);
    for flip in [m0.1, m1.1] {
        let mut ff = f;
        for l in 0..3 {
            ff[flip][l] = w[flip] * (t[flip] + L[l]) * (t[flip] + L[l]);
        }
        let (g, e) = iq2_nearest(&ff);
        if e < best.0 {
            best = (e, g, neg ^ (1 << flip));
        }
    }
    (best.1, (best.2 & 0x7F) as u16, best.0 * s * s)
}

const L: [f32; 3] = [
    crate::iq2_grid::LEVELS[0] as f32,
    crate::iq2_grid::LEVELS[1] as f32,
    crate::iq2_grid::LEVELS[2] as f32,
];

/// Powers of 3 by element (element 0 most significant), for the base-3
/// lattice index of [`iq2_reverse`].
const POW3: [usize; 8] = [2187, 729, 243, 81, 27, 9, 3, 1];

/// Best grid entry for the magnitudes `t` (in units of the scale), the
/// element `flip` (8 = none) having the wrong sign: (index, weighted error).
#[cfg(test)]
fn iq2_magnitudes(t: &[f32; 8], w: &[f32], flip: usize) -> (u16, f32) {
    iq2_nearest(&iq2_costs(t, w, flip))
}

/// `f[k][l]`: weighted squared error of element `k` on level `l`, element
/// `flip` (8 = none) having the wrong sign.
fn iq2_costs(t: &[f32; 8], w: &[f32], flip: usize) -> [[f32; 3]; 8] {
    core::array::from_fn(|k| {
        let tk = if k == flip { -t[k] } else { t[k] };
        core::array::from_fn(|l| w[k] * (tk - L[l]) * (tk - L[l]))
    })
}

/// The codebook entry with the smallest `sum_k f[k][level_k]`: (index, error).
///
/// Exact: the error is a sum over elements of `f[k][level]`. The per-element
/// best levels `top` give the unconstrained optimum; if that point is not in
/// the codebook, note that the codebook is closed under lowering any element
/// (lower levels have lower cost), so an optimum only lowers elements below
/// `top`: a depth-first search over those choices, pruned by the extra
/// error, where a node whose remaining elements can stay at `top` ends the
/// branch (that completion is then the best one of the branch).
fn iq2_nearest(f: &[[f32; 3]; 8]) -> (u16, f32) {
    let mut top = [0usize; 8];
    let mut base = 0f32;
    let mut v = 0usize;
    for k in 0..8 {
        let mut l = 0;
        if f[k][1] < f[k][l] {
            l = 1;
        }
        if f[k][2] < f[k][l] {
            l = 2;
        }
        top[k] = l;
        base += f[k][l];
        v += l * POW3[k];
    }
    let rev = iq2_reverse();
    if rev[v] >= 0 {
        return (rev[v] as u16, base);
    }
    // Greedy upper bound: lower the element with the smallest error
    // increase per cost decrease until the point is in the codebook.
    let (mut lv, mut gv, mut ge) = (top, v, 0f32);
    while rev[gv] < 0 {
        let mut pick = (f32::INFINITY, 8);
        for k in 0..8 {
            if lv[k] > 0 {
                let c = if lv[k] == 2 { 1412.0 } else { 758.0 };
                let r = (f[k][lv[k] - 1] - f[k][lv[k]]) / c;
                if r < pick.0 {
                    pick = (r, k);
                }
            }
        }
        let k = pick.1;
        ge += f[k][lv[k] - 1] - f[k][lv[k]];
        lv[k] -= 1;
        gv -= POW3[k];
    }
    // Elements whose first step down costs most are decided first.
    let step: [f32; 8] = core::array::from_fn(|k| {
        if top[k] == 0 {
            f32::INFINITY
        } else {
            f[k][top[k] - 1] - f[k][top[k]]
        }
    });
    // Insertion sort by descending step (8 elements).
    let mut order: [usize; 8] = core::array::from_fn(|k| k);
    for i in 1..8 {
        let mut j = i;
        while j > 0 && step[order[j - 1]] < step[order[j]] {
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    struct Search<'a> {
        f: &'a [[f32; 3]; 8],
        top: &'a [usize; 8],
        order: &'a [usize; 8],
        rev: &'a [i16; 6561],
        best: (f32, usize),
        nodes: u32,
        min_step: f32,
    }
    impl Search<'_> {
        fn go(&mut self, i: usize, v: usize, extra: f32) {
            if extra >= self.best.0 {
                return;
            }
            if self.rev[v] >= 0 {
                self.best = (extra, v);
                return;
            }
            self.nodes += 1;
            // Some remaining element must still go down, by at least its
            // first step; `order` is by descending step, so the smallest
            // remaining step is the last one's.
            if i == 8 || self.nodes > 20000 || extra + self.min_step >= self.best.0 {
                return;
            }
            let k = self.order[i];
            let tk = self.top[k];
            let ftop = self.f[k][tk];
            for l in (0..=tk).rev() {
                self.go(i + 1, v - (tk - l) * POW3[k], extra + self.f[k][l] - ftop);
            }
        }
    }
    let mut s = Search {
        f,
        top: &top,
        order: &order,
        rev,
        best: (ge, gv),
        nodes: 0,
        min_step: step[order[7]],
    };
    s.go(0, v, 0.0);
    let (extra, bv) = s.best;
    (rev[bv] as u16, base + extra)
}

/// Codes a sub-block of 32 at scale `s`; returns the weighted error.
fn iq2_sub(x: &[f32], w: &[f32], s: f32, codes: &mut [u16; 4]) -> f32 {
    if s <= 0.0 {
        *codes = [0; 4];
        return wsse(x, w, |_| 0.0);
    }
    let mut e = 0f32;
    for g in 0..4 {
        let (gi, sg, eg) = iq2_group(&x[8 * g..8 * g + 8], &w[8 * g..8 * g + 8], s);
        codes[g] = gi | (sg << 9);
        e += eg;
    }
    e
}

/// Least-squares scale for fixed codes: (scale, error at that scale,
/// `sum w c^2`, the curvature of the error in the scale).
fn iq2_refit(x: &[f32], w: &[f32], codes: &[u16; 4]) -> (f32, f32, f32) {
    let (mut num, mut den, mut xx) = (0f32, 0f32, 0f32);
    for g in 0..4 {
        let sg = crate::iq2_grid::sign_bits8(codes[g] >> 9);
        for k in 0..8 {
            let c = crate::iq2_grid::grid_value((codes[g] & 511) as usize, k) as f32;
            let c = if (sg >> k) & 1 == 1 { -c } else { c };
            let (xv, wv) = (x[8 * g + k], w[8 * g + k]);
            num += wv * xv * c;
            den += wv * c * c;
            xx += wv * xv * xv;
        }
    }
    if den > 0.0 && num > 0.0 {
        (num / den, (xx - num * num / den).max(0.0), den)
    } else {
        (0.0, xx, den)
    }
}

/// Trial scales per IQ2 sub-block.
const IQ2_TRIALS: usize = 4;

/// Super-scale candidates evaluated exactly (besides the largest sub-scale).
const IQ2_SUPER: usize = 2;

/// Best scale of one sub-block: (scale, error, curvature `sum w c^2`).
fn iq2_sub_scale(xs: &[f32], ws: &[f32]) -> (f32, f32, f32) {
    let sw: f32 = ws.iter().sum();
    let rms = (xs.iter().zip(ws).map(|(v, wt)| wt * v * v).sum::<f32>() / sw).sqrt();
    if rms == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let mut codes = [0u16; 4];
    let mut best = (f32::INFINITY, 0f32);
    // Trial scales relative to the weighted RMS, and relative to the
    // largest magnitude (the largest value on level 4..6: ggml's iq2
    // trials), which suits sub-blocks dominated by a few important weights.
    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let trials = (0..IQ2_TRIALS)
        .map(|k| rms * (0.30 + 0.10 * k as f32) / L[0])
        .chain((0..5).map(|k| amax / ((4.1 + 0.4 * k as f32) * L[2] / 5.0)));
    for s in trials {
        let e = iq2_sub(xs, ws, s, &mut codes);
        if e < best.0 {
            best = (e, s);
        }
    }
    // Codes at the best trial, their least-squares scale, and the codes
    // re-chosen at that scale if that lowers the error.
    let (e, s) = best;
    iq2_sub(xs, ws, s, &mut codes);
    let (s2, _, den) = iq2_refit(xs, ws, &codes);
    if s2 > 0.0 {
        let mut c2 = [0u16; 4];
        let e2 = iq2_sub(xs, ws, s2, &mut c2);
        if e2 < e {
            return (s2, e2, iq2_refit(xs, ws, &c2).2);
        }
    }
    (s, e, den)
}

fn quantize_iq2(x: &[f32], w: &[f32], b: &mut BlockIQ2) {
    let mut sub_s = [0f32; 8];
    let mut curv = [0f32; 8];
    for j in 0..8 {
        let r = 32 * j..32 * j + 32;
        let (xs, ws) = (&x[r.clone()], weights_or_ones(&w[r], &ONES));
        let (s, _, c) = iq2_sub_scale(xs, ws);
        sub_s[j] = s;
        curv[j] = c;
    }
    *b = BlockIQ2::zeroed();
    let max = sub_s.iter().fold(0f32, |m, &v| m.max(v));
    if max == 0.0 {
        return;
    }
    // Super-scale candidates: the error of each sub-block is modelled as
    // `curv (s_q - s)^2` around its own best scale `s` (codes fixed), where
    // `s_q` is its nearest 4-bit scale; candidates make some sub-block's
    // scale exact (`d = 16 s / (q + 1)`) or sit at/below the largest. The
    // best few by the model, and the largest, are evaluated exactly.
    let model = |d: f32| -> f32 {
        let mut t = 0f32;
        for j in 0..8 {
            let q = (sub_s[j] * 16.0 / d - 1.0).round().clamp(0.0, 15.0);
            let e = d * (q + 1.0) / 16.0 - sub_s[j];
            t += curv[j] * e * e;
        }
        t
    };
    let mut cands: Vec<(f32, f32)> = Vec::with_capacity(140);
    let lo = max * 0.6;
    for j in 0..8 {
        if sub_s[j] <= 0.0 {
            continue;
        }
        for q in 0..16 {
            let d = sub_s[j] * 16.0 / (q as f32 + 1.0);
            if d >= lo && d <= max * 1.07 {
                let d = f16_le(to_f16_le(d));
                cands.push((model(d), d));
            }
        }
    }
    for f in [1.0f32, 0.96, 0.92] {
        let d = f16_le(to_f16_le(max * f));
        cands.push((model(d), d));
    }
    cands.sort_by(|a, b| a.0.total_cmp(&b.0));
    cands.dedup_by(|a, b| a.1 == b.1);
    let mut eval: Vec<f32> = cands.iter().take(IQ2_SUPER).map(|c| c.1).collect();
    let dmax = f16_le(to_f16_le(max));
    if !eval.contains(&dmax) {
        eval.push(dmax);
    }
    let mut best_blk = (f32::INFINITY, 0f32, [0u8; 8], [[0u16; 4]; 8]);
    for d in eval {
        if d <= 0.0 {
            continue;
        }
        let (mut tot, mut qs, mut cs) = (0f32, [0u8; 8], [[0u16; 4]; 8]);
        for j in 0..8 {
            let r = 32 * j..32 * j + 32;
            let (xs, ws) = (&x[r.clone()], weights_or_ones(&w[r], &ONES));
            // Pick the 4-bit code with the smallest error among the two nearest.
            let t = sub_s[j] * 16.0 / d - 1.0;
            let mut best = (f32::INFINITY, 0u8, [0u16; 4]);
            for q in [t.floor(), t.ceil()] {
                let q = q.clamp(0.0, 15.0) as u8;
                let mut codes = [0u16; 4];
                let e = iq2_sub(xs, ws, d * (q as f32 + 1.0) / 16.0, &mut codes);
                if e < best.0 {
                    best = (e, q, codes);
                }
            }
            tot += best.0;
            qs[j] = best.1;
            cs[j] = best.2;
            if tot >= best_blk.0 {
                break;
            }
        }
        if tot < best_blk.0 {
            best_blk = (tot, d, qs, cs);
        }
    }
    let (_, d, qs, cs) = best_blk;
    b.d = to_f16_le(d);
    for j in 0..8 {
        b.scales[j / 2] |= qs[j] << (4 * (j % 2));
        for g in 0..4 {
            b.qs[8 * j + 2 * g..8 * j + 2 * g + 2].copy_from_slice(&cs[j][g].to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over the whole codebook.
    fn nearest(t: &[f32; 8], w: &[f32], flip: usize) -> f32 {
        (0..512)
            .map(|g| {
                (0..8)
                    .map(|k| {
                        let tk = if k == flip { -t[k] } else { t[k] };
                        let c = crate::iq2_grid::grid_value(g, k) as f32;
                        w[k] * (tk - c) * (tk - c)
                    })
                    .sum::<f32>()
            })
            .fold(f32::INFINITY, f32::min)
    }

    #[test]
    fn iq2_magnitudes_rounds_to_the_nearest_level() {
        // 1.9 is nearer to level 1 than to level 3: all ones (entry 0).
        let t = [1.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let g = iq2_magnitudes(&t, &[1.0; 8], 8).0;
        assert_eq!(g, 0);
    }

    #[test]
    fn iq2_magnitudes_is_the_weighted_nearest_codeword() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut u = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32
        };
        let mut off = 0;
        for i in 0..4000 {
            let hi = L[2] * 1.3;
            let t: [f32; 8] = core::array::from_fn(|_| u() * hi);
            let w: Vec<f32> = (0..8).map(|_| 0.01 + u() * u() * 10.0).collect();
            let flip = if i % 2 == 0 { 8 } else { i % 8 };
            let (g, e) = iq2_magnitudes(&t, &w, flip);
            let best = nearest(&t, &w, flip);
            if e > best * (1.0 + 1e-4) + 1e-5 {
                off += 1;
            }
            assert!(g < 512);
        }
        assert_eq!(off, 0, "{off} of 4000 groups missed the nearest codeword");
    }
}
