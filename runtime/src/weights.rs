//! Typed handles on the tensors of a mapped `.kpk` file.
//!
//! Matrices stay in the mapping and are multiplied in their stored dtype by
//! `kompakt-kernels`; vectors (norms, biases, the encoder's positions) are
//! read in place when stored as f32, and converted to f32 once at load
//! otherwise ([`Vector`]), so loading allocates next to nothing.
use kompakt_format::{DType, KpkFile};
use kompakt_kernels::WeightRef;

use crate::error::{Result, RuntimeError};

fn tensor_err(name: &str, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Tensor {
        name: name.to_string(),
        msg: msg.into(),
    }
}

/// Checks that tensor `name` exists with `shape`, returns its dtype.
pub fn check(file: &KpkFile, name: &str, shape: &[usize]) -> Result<DType> {
    let t = file.tensor(name)?;
    let got: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
    if got != shape {
        return Err(tensor_err(
            name,
            format!("shape {got:?}, expected {shape:?}"),
        ));
    }
    Ok(t.dtype())
}

/// Reads a small float tensor of `shape` into f32.
pub fn vector(file: &KpkFile, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let dtype = check(file, name, shape)?;
    let t = file.tensor(name)?;
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(t.to_f32_vec()?),
        d if d.is_quantized() => {
            let rows: usize = shape[..shape.len().saturating_sub(1)].iter().product();
            let cols = *shape.last().unwrap_or(&1);
            let w = WeightRef::new(d, t.data, rows.max(1), cols)
                .map_err(|e| tensor_err(name, e.to_string()))?;
            let mut out = vec![0.0; rows.max(1) * cols];
            kompakt_kernels::dequantize(&w, &mut out);
            Ok(out)
        }
        d => Err(tensor_err(name, format!("dtype {d} cannot hold weights"))),
    }
}

/// A vector of weights as f32: a range of the mapping when the file stores
/// it as f32 (what the converter writes for norms, biases and positions),
/// else converted once at load.
#[derive(Clone, Debug)]
pub enum Vector {
    Mapped {
        start: usize,
        len: usize,
    },
    /// f16 values in the mapping ([`Vector::load_f16_in_place`]); only
    /// [`Vector::add_to`] reads them.
    MappedF16 {
        start: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

impl Vector {
    /// Resolves tensor `name` of `shape`.
    pub fn load(file: &KpkFile, name: &str, shape: &[usize]) -> Result<Vector> {
        if check(file, name, shape)? == DType::F32 {
            let t = file.tensor(name)?;
            // A view fails only on a misaligned buffer; then it is copied.
            if let Ok(v) = t.as_f32() {
                return Ok(Vector::Mapped {
                    start: offset_in(file, t.data),
                    len: v.len(),
                });
            }
        }
        Ok(Vector::Owned(vector(file, name, shape)?))
    }

    /// As [`Vector::load`], but an f16 tensor also stays in the mapping (a
    /// large table read a slice at a time, such as the encoder's positions:
    /// 7.7 MB as f32 at full size).
    pub fn load_f16_in_place(file: &KpkFile, name: &str, shape: &[usize]) -> Result<Vector> {
        if check(file, name, shape)? == DType::F16 {
            let t = file.tensor(name)?;
            if let Ok(v) = t.as_f16() {
                return Ok(Vector::MappedF16 {
                    start: offset_in(file, t.data),
                    len: v.len(),
                });
            }
        }
        Vector::load(file, name, shape)
    }

    /// The values; `file` is the file the vector was loaded from. Panics
    /// for f16 values left in place (read those with [`Vector::add_to`]).
    pub fn get<'a>(&'a self, file: &'a KpkFile) -> &'a [f32] {
        match self {
            Vector::Owned(v) => v,
            Vector::Mapped { start, len } => {
                bytemuck::cast_slice(&file.as_bytes()[*start..*start + 4 * *len])
            }
            Vector::MappedF16 { .. } => unreachable!("f16 vectors are read with add_to"),
        }
    }

    /// `x[i] += v[i]` for the first `x.len()` values.
    pub fn add_to(&self, file: &KpkFile, x: &mut [f32]) {
        match self {
            Vector::MappedF16 { start, len } => {
                let v: &[half::f16] =
                    bytemuck::cast_slice(&file.as_bytes()[*start..*start + 2 * *len]);
                for (a, b) in x.iter_mut().zip(v) {
                    *a += b.to_f32();
                }
            }
            _ => crate::ops::add_in_place(x, &self.get(file)[..x.len()]),
        }
    }
}

/// Byte offset of `data` (a tensor's bytes) in the file's mapping.
fn offset_in(file: &KpkFile, data: &[u8]) -> usize {
    data.as_ptr() as usize - file.as_bytes().as_ptr() as usize
}

/// A weight matrix `[rows = out, cols = in]` left in the mapping.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
}

impl Matrix {
    /// Resolves and checks `name` as a `[rows, cols]` matrix. A tensor of
    /// higher rank (a convolution kernel) is accepted when its trailing
    /// dimensions multiply to `cols`.
    pub fn load(file: &KpkFile, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let t = file.tensor(name)?;
        let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
        let ok = shape.first() == Some(&rows) && shape[1..].iter().product::<usize>() == cols;
        if !ok {
            return Err(tensor_err(
                name,
                format!("shape {shape:?}, expected [{rows}, {cols}]"),
            ));
        }
        let dtype = t.dtype();
        if matches!(dtype, DType::U8 | DType::I32) {
            return Err(tensor_err(
                name,
                format!("dtype {dtype} cannot hold weights"),
            ));
        }
        // Validates the byte length once, so later views cannot fail.
        WeightRef::new(dtype, t.data, rows, cols).map_err(|e| tensor_err(name, e.to_string()))?;
        Ok(Matrix {
            name: name.to_string(),
            rows,
            cols,
            dtype,
        })
    }

    /// The stored weights, viewed in `file`.
    pub fn view<'f>(&self, file: &'f KpkFile) -> Result<WeightRef<'f>> {
        let t = file.tensor(&self.name)?;
        WeightRef::new(self.dtype, t.data, self.rows, self.cols)
            .map_err(|e| tensor_err(&self.name, e.to_string()))
    }

    /// `y = x W^T` for `n` rows of `x`.
    pub fn matmul(&self, file: &KpkFile, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        debug_assert_eq!(x.len(), n * self.cols);
        debug_assert_eq!(y.len(), n * self.rows);
        let w = self.view(file)?;
        kompakt_kernels::matmul(&w, x, n, y);
        Ok(())
    }

    /// Logical parameter count.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
}

/// A linear layer: matrix plus optional bias.
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Matrix,
    pub b: Option<Vector>,
}

impl Linear {
    /// Loads `{prefix}.weight` and, when `bias`, `{prefix}.bias`.
    pub fn load(
        file: &KpkFile,
        prefix: &str,
        rows: usize,
        cols: usize,
        bias: bool,
    ) -> Result<Linear> {
        let w = Matrix::load(file, &format!("{prefix}.weight"), rows, cols)?;
        let b = if bias {
            Some(Vector::load(file, &format!("{prefix}.bias"), &[rows])?)
        } else {
            None
        };
        Ok(Linear { w, b })
    }

    /// `y = x W^T + b` for `n` rows; returns the new buffer.
    pub fn forward(&self, file: &KpkFile, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut y = vec![0.0; n * self.w.rows];
        self.w.matmul(file, x, n, &mut y)?;
        if let Some(b) = &self.b {
            crate::ops::add_bias(&mut y, b.get(file));
        }
        Ok(y)
    }
}

/// LayerNorm or RMSNorm parameters.
#[derive(Clone, Debug)]
pub struct Norm {
    pub w: Vector,
    pub b: Option<Vector>,
}

impl Norm {
    pub fn load(file: &KpkFile, prefix: &str, d: usize, bias: bool) -> Result<Norm> {
        let w = Vector::load(file, &format!("{prefix}.weight"), &[d])?;
        let b = if bias {
            Some(Vector::load(file, &format!("{prefix}.bias"), &[d])?)
        } else {
            None
        };
        Ok(Norm { w, b })
    }
}
