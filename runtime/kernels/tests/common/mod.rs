//! Helpers shared by the kernel test files.
#![allow(dead_code)] // each test file uses its own subset

use kompakt_kernels::{DType, KernelTable, RowQ8Fn};

/// Deterministic generator (64-bit LCG) with Gaussian samples.
pub struct Rng(pub u64);

impl Rng {
    pub fn u(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn gauss(&mut self) -> f32 {
        ((-2.0 * self.u().ln()).sqrt() * (std::f64::consts::TAU * self.u()).cos()) as f32
    }

    pub fn gvec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.gauss()).collect()
    }
}

/// The K and IQ2 types (per-256 `BlockQ8K` activations; Q8_0 takes per-32).
pub const KTYPES: [DType; 4] = [DType::Q4K, DType::Q3K, DType::Q2K, DType::IQ2];

/// The row kernel of a [`KTYPES`] type in table `t`.
pub fn row_fn(t: &KernelTable, dt: DType) -> RowQ8Fn {
    match dt {
        DType::Q4K => t.row_q4k,
        DType::Q3K => t.row_q3k,
        DType::Q2K => t.row_q2k,
        _ => t.row_iq2,
    }
}
