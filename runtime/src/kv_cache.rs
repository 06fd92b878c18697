//! Key/value cache of the decoder. It lives in a session, never in the model.
//!
//! Storage is token-major per layer (`[len][n_kv_heads * head_dim]`) and is
//! reserved up front for the whole request, so appending never reallocates.
//! Values are kept in f16 (half the memory; the default) or f32
//! ([`KvPrecision`]); attention always computes in f32.
//! Beam search shares the prompt's cache between beams ([`KvCache::prefix`])
//! and gives each beam a small suffix of its own tokens.
use std::sync::Arc;

use half::f16;

use crate::ops::{KvRows, KvSegment};

/// Storage precision of cached keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvPrecision {
    /// 2 bytes per value (llama.cpp's default too).
    #[default]
    F16,
    /// 4 bytes per value: exactly the computed keys and values.
    F32,
}

impl KvPrecision {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            KvPrecision::F16 => 2,
            KvPrecision::F32 => 4,
        }
    }
}

/// Growable storage of one tensor in the cache's precision.
#[derive(Clone, Debug)]
enum Buf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Buf {
    fn with_capacity(p: KvPrecision, n: usize) -> Buf {
        match p {
            KvPrecision::F32 => Buf::F32(Vec::with_capacity(n)),
            KvPrecision::F16 => Buf::F16(Vec::with_capacity(n)),
        }
    }

    fn extend(&mut self, x: &[f32]) {
        match self {
            Buf::F32(b) => b.extend_from_slice(x),
            Buf::F16(b) => {
                let at = b.len();
                b.resize(at + x.len(), f16::ZERO);
                half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut b[at..], x);
            }
        }
    }

    fn rows(&self) -> KvRows<'_> {
        match self {
            Buf::F32(b) => KvRows::F32(b),
            Buf::F16(b) => KvRows::F16(b),
        }
    }

    fn capacity_bytes(&self) -> usize {
        match self {
            Buf::F32(b) => b.capacity() * 4,
            Buf::F16(b) => b.capacity() * 2,
        }
    }
}

/// Keys and values of one layer.
#[derive(Clone, Debug)]
struct LayerKv {
    k: Buf,
    v: Buf,
}

/// Cache of a token sequence: an optional shared, frozen prefix plus owned
/// tokens after it.
#[derive(Clone, Debug)]
pub struct KvCache {
    prefix: Option<Arc<KvCache>>,
    layers: Vec<LayerKv>,
    kv_dim: usize,
    len: usize,
    precision: KvPrecision,
}

impl KvCache {
    /// An empty cache with room for `capacity` tokens.
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize, precision: KvPrecision) -> KvCache {
        let layers = (0..n_layers)
            .map(|_| LayerKv {
                k: Buf::with_capacity(precision, capacity * kv_dim),
                v: Buf::with_capacity(precision, capacity * kv_dim),
            })
            .collect();
        KvCache {
            prefix: None,
            layers,
            kv_dim,
            len: 0,
            precision,
        }
    }

    /// Storage precision of this cache.
    pub fn precision(&self) -> KvPrecision {
        self.precision
    }

    /// A cache that continues after the frozen `prefix` (same precision).
    pub fn after(prefix: Arc<KvCache>, capacity: usize) -> KvCache {
        let mut c = KvCache::new(
            prefix.layers.len(),
            prefix.kv_dim,
            capacity,
            prefix.precision,
        );
        c.prefix = Some(prefix);
        c
    }

    /// Tokens held, prefix included.
    pub fn len(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.len()) + self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `k`/`v` rows of layer `layer`; the caller appends every layer
    /// the same number of rows, then calls [`KvCache::commit`].
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.layers[layer].k.extend(k);
        self.layers[layer].v.extend(v);
    }

    /// Records that `n` tokens were appended to every layer.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// The segments of layer `layer`, oldest first (at most two levels).
    pub fn segments(&self, layer: usize) -> Vec<KvSegment<'_>> {
        let mut out = Vec::with_capacity(2);
        if let Some(p) = &self.prefix {
            out.extend(p.segments(layer));
        }
        let l = &self.layers[layer];
        out.push(KvSegment {
            k: l.k.rows(),
            v: l.v.rows(),
        });
        out
    }

    /// Bytes of cache owned by this sequence (the shared prefix not counted).
    pub fn owned_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.k.capacity_bytes() + l.v.capacity_bytes())
            .sum()
    }

    /// Freezes this cache so sequences can share it as a prefix.
    pub fn prefix(self) -> Arc<KvCache> {
        Arc::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_cache_rounds_to_half_and_halves_the_bytes() {
        let k = [1.0f32, -2.5, 0.1, 65504.0];
        let v = [3.0f32, 0.333_333, -0.0, 1e-3];
        for p in [KvPrecision::F16, KvPrecision::F32] {
            let mut c = KvCache::new(1, 4, 2, p);
            c.append(0, &k, &v);
            c.commit(1);
            assert_eq!(c.owned_bytes(), 2 * 2 * 4 * p.bytes());
            let seg = c.segments(0);
            assert_eq!(seg.len(), 1);
            for (i, (&want_k, &want_v)) in k.iter().zip(&v).enumerate() {
                let (got_k, got_v) = (seg[0].k.at(i), seg[0].v.at(i));
                match p {
                    KvPrecision::F32 => assert_eq!((got_k, got_v), (want_k, want_v)),
                    KvPrecision::F16 => {
                        assert_eq!(got_k, f16::from_f32(want_k).to_f32());
                        assert_eq!(got_v, f16::from_f32(want_v).to_f32());
                    }
                }
            }
        }
        // 0.1 and 1/3 are not representable in f16: the f16 cache differs.
        let mut c = KvCache::new(1, 4, 1, KvPrecision::F16);
        c.append(0, &k, &v);
        assert_ne!(c.segments(0)[0].k.at(2), 0.1);
    }
}
