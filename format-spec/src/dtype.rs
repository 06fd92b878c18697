//! The dtype table of format v1: ids, block geometry and bits per weight.
//!
//! Ids are part of the file format and are never reused: a retired type keeps
//! its id forever. Block layouts of the quantized types are specified byte by
//! byte in `FORMAT.md`; their `#[repr(C)]` structs live in `kompakt-kernels`.

/// Element type of a stored tensor.
///
/// A tensor of shape `[.., cols]` is stored as `rows = product(other dims)`
/// rows; each row holds `ceil(cols / block_elems)` blocks of `block_bytes`
/// bytes (the last block of a row is zero-padded when `cols` is not a
/// multiple of `block_elems`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    /// IEEE 754 binary32.
    F32 = 0,
    /// IEEE 754 binary16.
    F16 = 1,
    /// bfloat16 (upper half of a binary32).
    BF16 = 2,
    /// Unsigned byte (opaque data).
    U8 = 3,
    /// Signed 32-bit integer.
    I32 = 4,
    /// 8-bit: blocks of 32, one f16 scale: 8.5 bits per weight.
    Q8_0 = 16,
    /// 4-bit super-blocks of 256 with 6-bit sub-scales and mins: 4.5 bpw.
    Q4K = 17,
    /// 3-bit super-blocks of 256 with 6-bit signed sub-scales: 3.4375 bpw.
    Q3K = 18,
    /// 2-bit super-blocks of 256 with 4-bit sub-scales and mins: 2.625 bpw.
    Q2K = 19,
    /// Non-uniform 2-bit: 8-dimensional codebook vectors: see FORMAT.md.
    /// (Id 20 was IQ2 with the format-1.0 codebook; see [`DType::retired`].)
    IQ2 = 21,
    /// Q4K blocks with the rows interleaved in groups of four, for
    /// multiplying four rows at once: see FORMAT.md. 4.5 bpw; the row count
    /// must be a multiple of 4 ([`DType::shape_error`]).
    Q4KX4 = 22,
}

impl DType {
    /// Every dtype this build understands.
    pub const ALL: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::U8,
        DType::I32,
        DType::Q8_0,
        DType::Q4K,
        DType::Q3K,
        DType::Q2K,
        DType::IQ2,
        DType::Q4KX4,
    ];

    /// The numeric id stored in files.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// Ids that older files may hold but this build no longer reads, with
    /// what they were and what to do (FORMAT.md "Retired dtype ids").
    pub fn retired(id: u32) -> Option<&'static str> {
        match id {
            20 => Some(
                "iq2 with the format-1.0 codebook (magnitudes 1:3:5), replaced in format 1.1 \
                 by id 21 (magnitudes 2:7:13); re-convert the model with this kompakt",
            ),
            _ => None,
        }
    }

    /// Looks up an id read from a file; `None` for ids this build does not know.
    pub fn from_id(id: u32) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.id() == id)
    }

    /// Canonical lowercase name (`f32`, `q4_k`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::Q8_0 => "q8_0",
            DType::Q4K => "q4_k",
            DType::Q3K => "q3_k",
            DType::Q2K => "q2_k",
            DType::IQ2 => "iq2",
            DType::Q4KX4 => "q4_k_x4",
        }
    }

    /// Parses a canonical name.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Elements per block (1 for plain types).
    pub const fn block_elems(self) -> u64 {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::U8 | DType::I32 => 1,
            DType::Q8_0 => 32,
            DType::Q4K | DType::Q3K | DType::Q2K | DType::IQ2 | DType::Q4KX4 => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
            DType::Q8_0 => 34,
            DType::Q4K | DType::Q4KX4 => 144,
            DType::Q3K => 110,
            DType::Q2K => 84,
            DType::IQ2 => 70,
        }
    }

    /// Rows per interleaved row group (4 for [`DType::Q4KX4`], 1 otherwise).
    pub const fn group_rows(self) -> u64 {
        match self {
            DType::Q4KX4 => 4,
            _ => 1,
        }
    }

    /// Why `shape` cannot be stored in this dtype, or `None` when it can:
    /// an interleaved type needs a row count (the product of all but the
    /// last dimension) that is a multiple of its [`DType::group_rows`].
    /// Sizes that overflow are left to [`DType::storage_bytes`].
    pub fn shape_error(self, shape: &[u64]) -> Option<String> {
        let g = self.group_rows();
        if g == 1 {
            return None;
        }
        let rows = match shape.split_last() {
            None => 1,
            Some((_, rest)) => rest.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?,
        };
        (!rows.is_multiple_of(g)).then(|| {
            format!(
                "{} interleaves rows in groups of {g}, but the shape has {rows} row(s)",
                self.name()
            )
        })
    }

    /// True for block-quantized types.
    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Storage bits per element, block overhead included.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_elems() as f64
    }

    /// Bytes needed for a tensor of `shape`, with checked arithmetic.
    /// `None` on overflow. A scalar (empty shape) is one element.
    pub fn storage_bytes(self, shape: &[u64]) -> Option<u64> {
        let (cols, rows) = match shape.split_last() {
            None => (1u64, 1u64),
            Some((&c, rest)) => {
                let mut r = 1u64;
                for &d in rest {
                    r = r.checked_mul(d)?;
                }
                (c, r)
            }
        };
        let blocks_per_row = cols.div_ceil(self.block_elems());
        rows.checked_mul(blocks_per_row)?
            .checked_mul(self.block_bytes())
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for d in DType::ALL {
            assert_eq!(DType::from_id(d.id()), Some(d));
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        let mut ids: Vec<u32> = DType::ALL.iter().map(|d| d.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), DType::ALL.len());
        assert_eq!(DType::from_id(999), None);
    }

    #[test]
    fn storage_bytes_pads_rows_to_whole_blocks() {
        assert_eq!(DType::F32.storage_bytes(&[3, 5]), Some(60));
        assert_eq!(DType::Q4K.storage_bytes(&[2, 256]), Some(288));
        assert_eq!(DType::Q4K.storage_bytes(&[2, 896]), Some(2 * 4 * 144));
        assert_eq!(DType::Q8_0.storage_bytes(&[]), Some(34));
        assert_eq!(DType::F32.storage_bytes(&[u64::MAX, 2]), None);
        assert_eq!(DType::Q4KX4.storage_bytes(&[8, 4096]), Some(8 * 16 * 144));
    }

    #[test]
    fn interleaved_rows_come_in_groups_of_four() {
        assert_eq!(DType::Q4KX4.shape_error(&[8, 256]), None);
        assert_eq!(DType::Q4KX4.shape_error(&[2, 2, 256]), None);
        let e = DType::Q4KX4.shape_error(&[6, 256]).unwrap();
        assert!(e.contains("groups of 4") && e.contains("6 row"), "{e}");
        assert!(DType::Q4KX4.shape_error(&[256]).is_some());
        assert_eq!(DType::Q4K.shape_error(&[6, 256]), None);
    }

    #[test]
    fn bits_per_weight() {
        assert_eq!(DType::Q4K.bits_per_weight(), 4.5);
        assert_eq!(DType::Q3K.bits_per_weight(), 3.4375);
        assert_eq!(DType::Q2K.bits_per_weight(), 2.625);
        assert_eq!(DType::Q8_0.bits_per_weight(), 8.5);
        assert_eq!(DType::IQ2.bits_per_weight(), 2.1875);
        assert!(DType::IQ2.bits_per_weight() <= 2.3);
    }
}
