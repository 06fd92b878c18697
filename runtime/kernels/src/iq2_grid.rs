//! The IQ2 codebook: 512 eight-dimensional magnitude vectors with entries in
//! {2, 7, 13} ([`LEVELS`]), generated at compile time (no copied tables).
//!
//! Which vectors: each element is on level 0, 1 or 2. A Gaussian weight
//! divided by a sub-block scale of about 0.45 sigma rounds to level 0, 1 or 2
//! with probabilities about 0.632, 0.296, 0.072 (levels 1 : 3 : 5). A vector
//! with `a` elements on level 1 and `b` on level 2 is then
//! `(p1/p0)^a (p2/p0)^b` as likely as all level 0, i.e. its cost is
//! `758 a + 2170 b` (thousandths of `-ln`). The codebook is the 512 level
//! vectors with the smallest cost; ties (only inside the last, partly taken
//! class) are broken by lexicographic order of the level digits (element 0
//! most significant). Index = rank in that order.
//!
//! The magnitudes of the levels are 2 : 7 : 13 (1 : 3.5 : 6.5) rather than
//! 1 : 3 : 5: the wider outer levels lower the importance-weighted error of
//! all 7 real Qwen2.5 tensors of `quant-quality` tried (blk.0/10/21 attn_k,
//! blk.0/10 attn_q, blk.0 ffn_up, blk.21 ffn_down)
//! (attn_q/attn_k, whose weights are heavy-tailed, by 4-15 %, ffn tensors by
//! 0.4-6 %; 1:3:5, 1:3:5.25, 1:3:5.5, 1:3:5.67, 1:3.25:5.75, 1:3.33:6,
//! 1:3.5:6, 1:3.5:6.5, 1:4:7 were compared; 1:3.5:6.5 was within 1 % of the
//! best on each). Levels must stay below 128 (signed bytes in the NEON
//! kernel; `2 * 127 * LEVELS[2]` below 32768 for the AVX2 `maddubs` pairs).

/// The three magnitude levels.
pub const LEVELS: [u8; 3] = [2, 7, 13];

/// Codebook entry `i`: 8 magnitudes (from [`LEVELS`]) packed as bytes, element 0
/// in the lowest byte.
pub const GRID: [u64; 512] = generate();

/// Sign pattern for the 7 stored sign bits: bytes 0x01 (+1) or 0xFF (-1);
/// byte 7 is negative when the 7 bits have odd parity.
pub const SIGNS: [u64; 128] = signs();

/// Grid entry `i`, element `k`.
#[inline]
pub fn grid_value(i: usize, k: usize) -> i8 {
    ((GRID[i] >> (8 * k)) & 0xFF) as i8
}

/// The 8 signs (`1` or `-1`) of a 7-bit sign field.
#[inline]
pub fn sign_bits8(bits7: u16) -> u8 {
    let b = (bits7 & 0x7F) as u8;
    b | (((b.count_ones() & 1) as u8) << 7)
}

const fn cost(v: usize) -> u32 {
    // v: base-3 digits, digit k (most significant first) = level index 0/1/2.
    let mut a = 0;
    let mut b = 0;
    let mut x = v;
    let mut k = 0;
    while k < 8 {
        let d = x % 3;
        if d == 1 {
            a += 1;
        } else if d == 2 {
            b += 1;
        }
        x /= 3;
        k += 1;
    }
    758 * a + 2170 * b
}

const fn entry(v: usize) -> u64 {
    // Element 0 is the most significant base-3 digit.
    let mut out = 0u64;
    let mut x = v;
    let mut k = 0;
    while k < 8 {
        let d = (x % 3) as u64;
        out |= (LEVELS[d as usize] as u64) << (8 * (7 - k));
        x /= 3;
        k += 1;
    }
    out
}

const fn generate() -> [u64; 512] {
    let mut g = [0u64; 512];
    let mut n = 0;
    let mut last: i64 = -1;
    while n < 512 {
        // Next larger cost value present.
        let mut next = u32::MAX;
        let mut v = 0;
        while v < 6561 {
            let c = cost(v);
            if (c as i64) > last && c < next {
                next = c;
            }
            v += 1;
        }
        let mut v = 0;
        while v < 6561 && n < 512 {
            if cost(v) == next {
                g[n] = entry(v);
                n += 1;
            }
            v += 1;
        }
        last = next as i64;
    }
    g
}

const fn signs() -> [u64; 128] {
    let mut s = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        let bits = (i as u32) | ((((i as u32).count_ones()) & 1) << 7);
        let mut o = 0u64;
        let mut k = 0;
        while k < 8 {
            let byte: u64 = if (bits >> k) & 1 == 1 { 0xFF } else { 0x01 };
            o |= byte << (8 * k);
            k += 1;
        }
        s[i] = o;
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn grid_is_distinct_and_well_formed() {
        let mut v = GRID.to_vec();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 512);
        assert_eq!(GRID[0], 0x0101_0101_0101_0101 * LEVELS[0] as u64);
        for i in 0..512 {
            for k in 0..8 {
                assert!(LEVELS.contains(&(grid_value(i, k) as u8)));
            }
        }
        for (i, s) in SIGNS.iter().enumerate() {
            let neg = s.to_le_bytes().iter().filter(|&&b| b == 0xFF).count();
            assert_eq!(neg % 2, 0);
            assert_eq!(
                sign_bits8(i as u16) as u32,
                (0..8)
                    .map(|k| ((s >> (8 * k)) & 0xFF == 0xFF) as u32)
                    .enumerate()
                    .map(|(k, b)| b << k)
                    .sum::<u32>()
            );
        }
    }
}
