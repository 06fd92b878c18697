//! Memory read-bandwidth probe: the limit of matrix-vector products, measured
//! in the same process as the kernels it is compared with.
use rayon::prelude::*;
use std::time::Instant;

/// Read bandwidth in GB/s (10^9 bytes/s): best of at least `reps` sums of a
/// `bytes`-long buffer (use several times the last-level cache; 1 GiB is
/// safe), split into `threads` equal parts, one per thread, for at least
/// `min_s` seconds. Uses 256-bit loads when AVX2 is available.
pub fn read_bandwidth(bytes: usize, threads: usize, reps: usize, min_s: f64) -> f64 {
    let buf: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    read_bandwidth_of(bytemuck::cast_slice(&buf), threads, reps, min_s)
}

/// [`read_bandwidth`] over the caller's bytes (their 8-byte-aligned middle).
///
/// Probing the very buffer a kernel reads takes the memory it lives in out
/// of the comparison: on a VM, two buffers of the same size can read at
/// 22 and 28 GB/s, depending on how the host backs their pages (measured on
/// the 2-vCPU EPYC VM: a sum over a 359 MB heap buffer and over a fresh
/// mapping of the same bytes, 4 alternating rounds).
pub fn read_bandwidth_of(bytes: &[u8], threads: usize, reps: usize, min_s: f64) -> f64 {
    let (_, buf, _) = bytemuck::pod_align_to::<u8, u64>(bytes);
    if buf.is_empty() {
        return f64::NAN;
    }
    let threads = threads.max(1);
    let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else {
        return f64::NAN;
    };
    let chunk = buf.len().div_ceil(threads).max(1);
    let run = || {
        let s: u64 = buf
            .par_chunks(chunk)
            .map(sum_u64)
            .reduce(|| 0, |a, b| a.wrapping_add(b));
        std::hint::black_box(s);
    };
    let secs = pool.install(|| {
        run();
        let mut best = f64::INFINITY;
        let start = Instant::now();
        let mut i = 0;
        while i < reps || (start.elapsed().as_secs_f64() < min_s && i < 50 * reps.max(1)) {
            let t = Instant::now();
            run();
            best = best.min(t.elapsed().as_secs_f64());
            i += 1;
        }
        best
    });
    (buf.len() * 8) as f64 / secs / 1e9
}

fn sum_u64(c: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected.
        return unsafe { sum_u64_avx2(c) };
    }
    let mut acc = [0u64; 8];
    let mut chunks = c.chunks_exact(8);
    for v in &mut chunks {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(v[k]);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, b| a.wrapping_add(*b));
    acc.iter().fold(tail, |a, b| a.wrapping_add(*b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_u64_avx2(c: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut i = 0;
    // SAFETY: each load reads 4 u64 below c.len().
    unsafe {
        while i + 16 <= c.len() {
            for (k, a) in acc.iter_mut().enumerate() {
                let v = _mm256_loadu_si256(c.as_ptr().add(i + 4 * k) as *const __m256i);
                *a = _mm256_add_epi64(*a, v);
            }
            i += 16;
        }
    }
    let mut lanes = [0u64; 16];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: 4 u64 stored into lanes[4k..4k+4].
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().add(4 * k) as *mut __m256i, *a) };
    }
    let tail = c[i..].iter().fold(0u64, |a, b| a.wrapping_add(*b));
    lanes.iter().fold(tail, |a, b| a.wrapping_add(*b))
}

/// The CPU's model name from `/proc/cpuinfo` (`model name` on x86, `Model`
/// on many ARM boards), or the architecture name where there is none.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_element() {
        let v: Vec<u64> = (1..=37).collect();
        assert_eq!(sum_u64(&v), 37 * 38 / 2);
    }

    #[test]
    fn bandwidth_is_positive_and_finite() {
        let gbs = read_bandwidth(8 << 20, 2, 2, 0.0);
        assert!(gbs.is_finite() && gbs > 0.0, "{gbs}");
        let bytes = vec![1u8; (1 << 20) + 3];
        let gbs = read_bandwidth_of(&bytes[3..], 1, 2, 0.0);
        assert!(gbs.is_finite() && gbs > 0.0, "{gbs}");
        assert!(read_bandwidth_of(&bytes[..7], 1, 2, 0.0).is_nan());
    }
}
