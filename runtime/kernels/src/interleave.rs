//! The Q4KX4 layout: Q4K blocks with the rows interleaved in groups of four
//! (`format-spec/FORMAT.md`, "Q4KX4"), so that the mat-vec kernel multiplies
//! four rows at once: one decode of the scales of four rows, one float
//! update per four rows, and rows in the vector lanes (no horizontal sums).
//!
//! Geometry: rows in panels of [`PANEL_ROWS`] (the last may be shorter, a
//! multiple of 4); in a panel, columns in chunks of [`CHUNK_BLOCKS`] blocks
//! (the last may be narrower); in a chunk, the panel's groups of four rows in
//! order, each holding the chunk's [`X4Block`]s in column order. A kernel
//! that walks a panel chunk by chunk reads memory in order and keeps the
//! chunk's activations in L1.

use crate::blocks::{pack_6bit16, unpack_6bit16, BlockQ4K, BlockQ8K};
use bytemuck::{Pod, Zeroable};

/// Rows per interleaved group.
pub const GROUP_ROWS: usize = 4;
/// Rows per panel (16 groups).
pub const PANEL_ROWS: usize = 64;
/// Blocks (of 256 columns) per column chunk.
pub const CHUNK_BLOCKS: usize = 16;

/// Block `k` of four rows `r0..r0+4`: 576 bytes (4 x 144, 4.5 bpw).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct X4Block {
    /// f16 `d` of rows 0..4.
    pub d: [[u8; 2]; 4],
    /// f16 `dmin` of rows 0..4.
    pub dmin: [[u8; 2]; 4],
    /// Low 4 bits of the sub-scales (low nibbles) and mins (high nibbles),
    /// see [`scale_slot`] and [`min_slot`].
    pub nib: [u8; 32],
    /// High 2 bits: byte `q` bits 0-1 / 2-3 = scale in `nib[q]` / `nib[16+q]`,
    /// bits 4-5 / 6-7 = min in `nib[q]` / `nib[16+q]`.
    pub hi: [u8; 16],
    /// `qs[8c..8c+8]` of row `r` at `32c + 8r` (c = 0..16).
    pub qs: [u8; 512],
}
const _: () = assert!(size_of::<X4Block>() == 576);

/// (row, sub-block) of the sub-scale in `nib[p]`'s low nibble: lane
/// `p / 16` holds rows `2 lane` and `2 lane + 1`, 8 sub-scales each.
pub const fn scale_slot(p: usize) -> (usize, usize) {
    let (lane, q) = (p / 16, p % 16);
    (2 * lane + q / 8, q % 8)
}

/// (row, sub-block) of the min in `nib[p]`'s high nibble: lane `p / 16`
/// holds rows `lane` and `lane + 2`.
pub const fn min_slot(p: usize) -> (usize, usize) {
    let (lane, q) = (p / 16, p % 16);
    (lane + 2 * (q / 8), q % 8)
}

/// Interleaves block `k` of four Q4K rows.
pub fn pack(b: [&BlockQ4K; 4]) -> X4Block {
    let mut x = X4Block::zeroed();
    let mut s = [[0u8; 8]; 4];
    let mut m = [[0u8; 8]; 4];
    for r in 0..4 {
        let (sc, mn) = unpack_6bit16(&b[r].scales);
        s[r] = sc.to_le_bytes();
        m[r] = mn.to_le_bytes();
        x.d[r] = b[r].d;
        x.dmin[r] = b[r].dmin;
    }
    let sv = |p: usize| {
        let (r, j) = scale_slot(p);
        s[r][j]
    };
    let mv = |p: usize| {
        let (r, j) = min_slot(p);
        m[r][j]
    };
    for p in 0..32 {
        x.nib[p] = (sv(p) & 15) | ((mv(p) & 15) << 4);
    }
    for q in 0..16 {
        x.hi[q] = (sv(q) >> 4)
            | ((sv(16 + q) >> 4) << 2)
            | ((mv(q) >> 4) << 4)
            | ((mv(16 + q) >> 4) << 6);
    }
    for c in 0..16 {
        for r in 0..4 {
            x.qs[32 * c + 8 * r..32 * c + 8 * r + 8].copy_from_slice(&b[r].qs[8 * c..8 * c + 8]);
        }
    }
    x
}

/// The four Q4K blocks of an interleaved block (inverse of [`pack`]).
pub fn unpack(x: &X4Block) -> [BlockQ4K; 4] {
    let mut v = [[0u8; 16]; 4];
    for p in 0..32 {
        let (h, l) = (p / 16, p % 16);
        let sh = (x.hi[l] >> (2 * h)) & 3;
        let mh = (x.hi[l] >> (4 + 2 * h)) & 3;
        let (r, j) = scale_slot(p);
        v[r][j] = (x.nib[p] & 15) | (sh << 4);
        let (r, j) = min_slot(p);
        v[r][8 + j] = (x.nib[p] >> 4) | (mh << 4);
    }
    core::array::from_fn(|r| {
        let mut b = BlockQ4K::zeroed();
        b.d = x.d[r];
        b.dmin = x.dmin[r];
        b.scales = pack_6bit16(&v[r]);
        for c in 0..16 {
            b.qs[8 * c..8 * c + 8].copy_from_slice(&x.qs[32 * c + 8 * r..32 * c + 8 * r + 8]);
        }
        b
    })
}

/// Index (in [`X4Block`]s) of block `k` of group `g` in a matrix of `rows`
/// rows (a multiple of 4) and `nb` blocks per row.
pub fn block_index(rows: usize, nb: usize, g: usize, k: usize) -> usize {
    let gpp = PANEL_ROWS / GROUP_ROWS;
    let (panel, gl) = (g / gpp, g % gpp);
    let groups_here = (rows / GROUP_ROWS - panel * gpp).min(gpp);
    let c = k / CHUNK_BLOCKS;
    let width = CHUNK_BLOCKS.min(nb - c * CHUNK_BLOCKS);
    panel * gpp * nb + c * CHUNK_BLOCKS * groups_here + gl * width + k % CHUNK_BLOCKS
}

/// Q4K rows (row-major, `nb` blocks each; `rows` a multiple of 4) to Q4KX4.
pub fn interleave(q4k: &[u8], rows: usize, nb: usize) -> Vec<u8> {
    assert!(rows.is_multiple_of(GROUP_ROWS), "{rows} rows");
    let blocks: &[BlockQ4K] = bytemuck::cast_slice(q4k);
    assert_eq!(blocks.len(), rows * nb);
    let mut out = vec![X4Block::zeroed(); rows * nb / GROUP_ROWS];
    for g in 0..rows / GROUP_ROWS {
        for k in 0..nb {
            out[block_index(rows, nb, g, k)] = pack(core::array::from_fn(|r| {
                &blocks[(GROUP_ROWS * g + r) * nb + k]
            }));
        }
    }
    bytemuck::cast_slice(&out).to_vec()
}

/// Row `r` of a Q4KX4 matrix as Q4K blocks (`out.len() == nb`).
pub fn row(x4: &[u8], rows: usize, nb: usize, r: usize, out: &mut [BlockQ4K]) {
    assert!(r < rows && out.len() == nb);
    let blocks: &[X4Block] = bytemuck::cast_slice(x4);
    for (k, o) in out.iter_mut().enumerate() {
        *o = unpack(&blocks[block_index(rows, nb, r / GROUP_ROWS, k)])[r % GROUP_ROWS];
    }
}

/// Rows `r0..r0 + out.len() / nb` (whole groups) of a Q4KX4 matrix as
/// row-major Q4K blocks.
pub fn rows_q4k(x4: &[u8], rows: usize, nb: usize, r0: usize, out: &mut [BlockQ4K]) {
    let n = out.len() / nb.max(1);
    assert!(r0.is_multiple_of(GROUP_ROWS) && n.is_multiple_of(GROUP_ROWS) && r0 + n <= rows);
    let blocks: &[X4Block] = bytemuck::cast_slice(x4);
    for gl in 0..n / GROUP_ROWS {
        for k in 0..nb {
            let four = unpack(&blocks[block_index(rows, nb, r0 / GROUP_ROWS + gl, k)]);
            for (r, b) in four.into_iter().enumerate() {
                out[(GROUP_ROWS * gl + r) * nb + k] = b;
            }
        }
    }
}

/// The frame of the Q4KX4 mat-vec kernels, rows `r0..r0 + out.len()` of a
/// matrix of `rows` rows and `nb` blocks per row (`w` its X4 blocks, `x` the
/// activation): checks the geometry before anything is read (`r0` must start
/// a panel and the range end one or at `rows`), builds one `prep(block)` per
/// activation block (the kernels' sub-block sums, in their own layout), then
/// walks panel by panel, chunk by chunk, group by group (the file order),
/// calling `span(x4_blocks, act_blocks, preps)` on each group's blocks of a
/// chunk and adding the four row sums it returns into that group's outputs
/// (`out` is zeroed first).
#[allow(clippy::too_many_arguments)] // the kernel-table arguments, then the two kernel parts
pub fn gemv_spans<T>(
    w: &[u8],
    rows: usize,
    nb: usize,
    r0: usize,
    x: &[BlockQ8K],
    out: &mut [f32],
    prep: impl FnMut(&BlockQ8K) -> T,
    mut span: impl FnMut(&[X4Block], &[BlockQ8K], &[T]) -> [f32; GROUP_ROWS],
) {
    let blocks: &[X4Block] = bytemuck::cast_slice(w);
    let r1 = r0 + out.len();
    assert!(
        blocks.len() == rows * nb / GROUP_ROWS
            && rows.is_multiple_of(GROUP_ROWS)
            && r0.is_multiple_of(PANEL_ROWS)
            && (r1 == rows || r1.is_multiple_of(PANEL_ROWS))
            && r0 <= r1
            && r1 <= rows
            && x.len() >= nb,
        "Q4KX4 mat-vec: rows {r0}..{r1} of {rows}, {} blocks for {nb} per row, \
         {} activation blocks",
        blocks.len(),
        x.len()
    );
    let preps: Vec<T> = x[..nb].iter().map(prep).collect();
    out.fill(0.0);
    for p0 in (r0..r1).step_by(PANEL_ROWS) {
        let p1 = (p0 + PANEL_ROWS).min(r1);
        for k0 in (0..nb).step_by(CHUNK_BLOCKS) {
            let k1 = (k0 + CHUNK_BLOCKS).min(nb);
            for g in p0 / GROUP_ROWS..p1 / GROUP_ROWS {
                let first = block_index(rows, nb, g, k0);
                let v = span(
                    &blocks[first..first + (k1 - k0)],
                    &x[k0..k1],
                    &preps[k0..k1],
                );
                let o = GROUP_ROWS * g - r0;
                for (o, v) in out[o..o + GROUP_ROWS].iter_mut().zip(v) {
                    *o += v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q4k_rows(rows: usize, nb: usize) -> Vec<u8> {
        let mut s = 1u64;
        (0..rows * nb * 144)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn pack_unpack_round_trips() {
        let w = q4k_rows(4, 1);
        let b: &[BlockQ4K] = bytemuck::cast_slice(&w);
        let back = unpack(&pack([&b[0], &b[1], &b[2], &b[3]]));
        for r in 0..4 {
            assert_eq!(
                bytemuck::bytes_of(&back[r]),
                bytemuck::bytes_of(&b[r]),
                "row {r}"
            );
        }
    }

    #[test]
    fn every_block_lands_once_and_rows_come_back() {
        // 2 panels (the second short), 3 chunks (the last narrow).
        let (rows, nb) = (72, 35);
        let mut seen = vec![false; rows * nb / 4];
        for g in 0..rows / 4 {
            for k in 0..nb {
                let i = block_index(rows, nb, g, k);
                assert!(!seen[i], "g {g} k {k} -> {i} twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        let w = q4k_rows(rows, nb);
        let x4 = interleave(&w, rows, nb);
        assert_eq!(x4.len(), w.len());
        let mut one = vec![BlockQ4K::zeroed(); nb];
        for r in [0, 5, 63, 64, 71] {
            row(&x4, rows, nb, r, &mut one);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&one),
                &w[r * nb * 144..(r + 1) * nb * 144]
            );
        }
        let mut some = vec![BlockQ4K::zeroed(); 8 * nb];
        rows_q4k(&x4, rows, nb, 60, &mut some);
        assert_eq!(
            bytemuck::cast_slice::<_, u8>(&some),
            &w[60 * nb * 144..68 * nb * 144]
        );
    }
}
