//! Named intermediate tensors ("taps", like llama.cpp's `cb(cur, name, il)`),
//! recorded on request so tests can compare the forward pass stage by stage.
//! Also carries the optional calibration collector ([`Calibration`]).
use std::collections::BTreeMap;

use crate::calib::{Calibration, Stack};

/// One recorded tensor, row-major.
#[derive(Clone, Debug)]
pub struct Tap {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A recorder; does nothing unless enabled.
#[derive(Default, Debug)]
pub struct Taps {
    enabled: bool,
    map: BTreeMap<String, Tap>,
    /// Calibration statistics, collected only when present.
    calib: Option<Box<Calibration>>,
}

impl Taps {
    pub fn enabled() -> Taps {
        Taps {
            enabled: true,
            map: BTreeMap::new(),
            calib: None,
        }
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
    /// Records `data` under `name` (replacing an earlier record) if enabled.
    pub fn record(&mut self, name: impl FnOnce() -> String, data: &[f32], shape: &[usize]) {
        if self.enabled {
            self.map.insert(
                name(),
                Tap {
                    shape: shape.to_vec(),
                    data: data.to_vec(),
                },
            );
        }
    }
    pub fn get(&self, name: &str) -> Option<&Tap> {
        self.map.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Starts (or, with `false`, stops and discards) collecting calibration
    /// statistics.
    pub fn set_calibration(&mut self, on: bool) {
        self.calib = on.then(Box::default);
    }
    /// Whether calibration statistics are being collected.
    pub fn is_calibrating(&self) -> bool {
        self.calib.is_some()
    }
    /// The statistics collected so far.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calib.as_deref()
    }
    /// The statistics collected so far, mutable.
    pub fn calibration_mut(&mut self) -> Option<&mut Calibration> {
        self.calib.as_deref_mut()
    }
    /// Takes the statistics collected so far, leaving an empty collector.
    pub fn take_calibration(&mut self) -> Option<Calibration> {
        self.calib.as_mut().map(|c| std::mem::take(&mut **c))
    }
    /// Records `x` (`[n][in]`) as the input of the weights `names`.
    #[inline]
    pub fn record_input(&mut self, names: &[&str], x: &[f32], n: usize) {
        if let Some(c) = self.calib.as_deref_mut() {
            c.add_input(names, x, n);
        }
    }
    /// A copy of a block's input when calibrating (for [`Taps::record_block`]).
    #[inline]
    pub fn block_input(&self, x: &[f32]) -> Option<Vec<f32>> {
        self.calib.as_ref().map(|_| x.to_vec())
    }
    /// Records block `layer` of `stack` turning `h_in` into `h_out` (`[n][d]`).
    #[inline]
    pub fn record_block(
        &mut self,
        stack: Stack,
        layer: usize,
        h_in: Option<Vec<f32>>,
        h_out: &[f32],
        d: usize,
    ) {
        if let (Some(c), Some(h_in)) = (self.calib.as_deref_mut(), h_in) {
            c.add_block(stack, layer, &h_in, h_out, d);
        }
    }
}
