//! Named intermediate tensors ("taps", like llama.cpp's `cb(cur, name, il)`),
//! recorded on request so tests can compare the forward pass stage by stage.
use std::collections::BTreeMap;

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
}

impl Taps {
    pub fn enabled() -> Taps {
        Taps {
            enabled: true,
            map: BTreeMap::new(),
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
}
