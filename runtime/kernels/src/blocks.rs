//! `#[repr(C)]` block structs of the quantized dtypes (byte layouts in
//! `format-spec/FORMAT.md`, "Quantized block layouts"). Weight blocks have alignment 1 (f16 fields
//! are `[u8; 2]`, little-endian) so they can be viewed in place in an
//! unaligned mmap with `bytemuck::cast_slice`.

use bytemuck::{Pod, Zeroable};
use half::f16;
use std::mem::size_of;

/// Weights per Q8_0 block.
pub const QK8_0: usize = 32;
/// Weights per super-block of the K and IQ2 types.
pub const QK_K: usize = 256;

#[inline]
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

#[inline]
pub(crate) fn to_f16_le(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

/// Q8_0: 32 weights `w = d * qs[i]`. 34 bytes = 8.5 bits per weight.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// f16 scale.
    pub d: [u8; 2],
    /// Signed 8-bit quants, -127..=127.
    pub qs: [i8; QK8_0],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// Q4K: 256 weights in 8 sub-blocks of 32,
/// `w = d * sc[j] * q - dmin * m[j]`, `q` in 0..=15, `sc`/`m` 6-bit.
/// 144 bytes = 4.5 bits per weight.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// f16 super-scale of the sub-scales.
    pub d: [u8; 2],
    /// f16 super-scale of the sub-mins.
    pub dmin: [u8; 2],
    /// 8 scales then 8 mins, 6 bits each, packed by [`pack_6bit16`].
    pub scales: [u8; 12],
    /// Byte `j`: low nibble = weight `64*(j/32) + j%32`, high nibble = that + 32.
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q3K: 256 weights in 16 sub-blocks of 16, `w = d * sc[j] * (q - 4)`,
/// `q` in 0..=7, `sc` signed 6-bit (stored + 32). 110 bytes = 3.4375 bpw.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// f16 super-scale.
    pub d: [u8; 2],
    /// 16 scales `sc + 32`, 6 bits each, packed by [`pack_6bit16`].
    pub scales: [u8; 12],
    /// Byte `j` bit `b`: bit 2 of `q` of weight `32*b + j`.
    pub qh: [u8; 32],
    /// Byte `j` bits `2k..2k+2`: bits 0-1 of `q` of weight `128*(j/32) + 32*k + j%32`.
    pub ql: [u8; 64],
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// Q2K: 256 weights in 16 sub-blocks of 16, `w = d * sc[j] * q - dmin * m[j]`,
/// `q` in 0..=3, `sc`/`m` 4-bit. 84 bytes = 2.625 bits per weight.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// f16 super-scale of the sub-scales.
    pub d: [u8; 2],
    /// f16 super-scale of the sub-mins.
    pub dmin: [u8; 2],
    /// Byte `j`: low nibble = `sc[j]`, high nibble = `m[j]`.
    pub scales: [u8; 16],
    /// Byte `j` bits `2k..2k+2`: `q` of weight `128*(j/32) + 32*k + j%32`.
    pub qs: [u8; 64],
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// IQ2: 256 weights in 8 sub-blocks of 32, each of 4 groups of 8 weights.
/// A group is a 16-bit code: bits 0-8 index the 512-entry codebook of
/// 8-dimensional magnitude vectors (entries 2, 7, 13; see [`crate::iq2_grid`]),
/// bits 9-15 are the signs of elements 0..7 (1 = negative); the sign of
/// element 7 makes the count of negative signs even.
/// `w = d * (s[j] + 1) / 16 * sign * grid`, `s` 4-bit.
/// 70 bytes = 2.1875 bits per weight.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ2 {
    /// f16 super-scale.
    pub d: [u8; 2],
    /// Byte `j`: low nibble = `s[2j]`, high nibble = `s[2j+1]`.
    pub scales: [u8; 4],
    /// 32 little-endian u16 group codes, group `g` = weights `8g..8g+8`.
    pub qs: [u8; 64],
}
const _: () = assert!(size_of::<BlockIQ2>() == 70);

impl BlockIQ2 {
    #[inline]
    pub fn code(&self, g: usize) -> u16 {
        u16::from_le_bytes([self.qs[2 * g], self.qs[2 * g + 1]])
    }
}

/// Activation block (not stored in files): 256 values `x = d * qs[i]`, plus
/// the sums of `qs` over each 16 (for the min terms of Q4K/Q2K/Q3K).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

impl BlockQ8K {
    pub fn zeroed() -> Self {
        Zeroable::zeroed()
    }
}

/// Activation block for Q8_0 weights (not stored in files): 32 values
/// `x = d * qs[i]`, one f32 scale per 32 like ggml's `q8_0` activations
/// (ggml stores that scale as f16). Per 256 ([`BlockQ8K`]) one large
/// activation makes the step of its 255 neighbours coarse; per 32 the 8-bit
/// weights are not drowned by activation rounding.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8A32 {
    pub d: f32,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(size_of::<BlockQ8A32>() == 36);

impl BlockQ8A32 {
    pub fn zeroed() -> Self {
        Zeroable::zeroed()
    }
}

/// Packs 16 six-bit values: byte `i` (0..8) = `v[i] & 15 | (v[i+8] & 15) << 4`;
/// byte `8+j` (0..4) bits `2m..2m+2` = `v[j + 4m] >> 4`.
pub fn pack_6bit16(v: &[u8; 16]) -> [u8; 12] {
    let mut o = [0u8; 12];
    for i in 0..8 {
        o[i] = (v[i] & 15) | ((v[i + 8] & 15) << 4);
    }
    for j in 0..4 {
        for m in 0..4 {
            o[8 + j] |= ((v[j + 4 * m] >> 4) & 3) << (2 * m);
        }
    }
    o
}

/// Inverse of [`pack_6bit16`], as two little-endian u64 of 8 bytes each:
/// (`v[0..8]`, `v[8..16]`).
#[inline]
pub fn unpack_6bit16(p: &[u8; 12]) -> (u64, u64) {
    let lo = u64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
    let h = u32::from_le_bytes([p[8], p[9], p[10], p[11]]) as u64;
    const M4: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    const M2: u64 = 0x0303_0303;
    let h0 = (h & M2) | (((h >> 2) & M2) << 32);
    let h1 = ((h >> 4) & M2) | (((h >> 6) & M2) << 32);
    ((lo & M4) | (h0 << 4), ((lo >> 4) & M4) | (h1 << 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn six_bit_packing_round_trips() {
        let v: [u8; 16] = core::array::from_fn(|i| ((i * 37 + 11) % 64) as u8);
        let (a, b) = unpack_6bit16(&pack_6bit16(&v));
        let mut got = [0u8; 16];
        got[..8].copy_from_slice(&a.to_le_bytes());
        got[8..].copy_from_slice(&b.to_le_bytes());
        assert_eq!(got, v);
    }
}
