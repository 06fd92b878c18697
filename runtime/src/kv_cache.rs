//! Key/value cache of the decoder. It lives in a session, never in the model.
//!
//! Storage is token-major per layer (`[len][n_kv_heads * head_dim]`) and is
//! reserved up front for the whole request, so appending never reallocates.
//! Beam search shares the prompt's cache between beams ([`KvCache::prefix`])
//! and gives each beam a small suffix of its own tokens.
use std::sync::Arc;

use crate::ops::KvSegment;

/// Keys and values of one layer.
#[derive(Clone, Debug, Default)]
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Cache of a token sequence: an optional shared, frozen prefix plus owned
/// tokens after it.
#[derive(Clone, Debug)]
pub struct KvCache {
    prefix: Option<Arc<KvCache>>,
    layers: Vec<LayerKv>,
    kv_dim: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache with room for `capacity` tokens.
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> KvCache {
        let layers = (0..n_layers)
            .map(|_| LayerKv {
                k: Vec::with_capacity(capacity * kv_dim),
                v: Vec::with_capacity(capacity * kv_dim),
            })
            .collect();
        KvCache {
            prefix: None,
            layers,
            kv_dim,
            len: 0,
        }
    }

    /// A cache that continues after the frozen `prefix`.
    pub fn after(prefix: Arc<KvCache>, capacity: usize) -> KvCache {
        let mut c = KvCache::new(prefix.layers.len(), prefix.kv_dim, capacity);
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
        self.layers[layer].k.extend_from_slice(k);
        self.layers[layer].v.extend_from_slice(v);
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
        out.push(KvSegment { k: &l.k, v: &l.v });
        out
    }

    /// Bytes of cache owned by this sequence (the shared prefix not counted).
    pub fn owned_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.capacity() + l.v.capacity()) * 4)
            .sum()
    }

    /// Freezes this cache so sequences can share it as a prefix.
    pub fn prefix(self) -> Arc<KvCache> {
        Arc::new(self)
    }
}
