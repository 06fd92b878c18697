//! Criterion: kompakt mat-vec per type at the real shapes (1 thread), and a
//! mat-mat (n = 64). `KOMPAKT_BENCH_SHORT=1` keeps two shapes.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kompakt_benches::*;
use kompakt_kernels::{matmul, DType, WeightRef};

fn bench(c: &mut Criterion) {
    let shapes: Vec<_> = if short_mode() {
        SHAPES[..1].iter().chain(&SHAPES[3..4]).copied().collect()
    } else {
        SHAPES.to_vec()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (name, rows, cols) in shapes {
        let mut g = c.benchmark_group(format!("matvec {name}"));
        g.sample_size(10);
        for dt in KTYPES.iter().copied().chain([DType::F16]) {
            let data = kompakt_weight(dt, rows, cols);
            let w = WeightRef::new(dt, &data, rows, cols).unwrap();
            let x = gaussian(3, cols);
            let mut y = vec![0f32; rows];
            g.throughput(Throughput::Bytes(data.len() as u64));
            g.bench_function(dt.name(), |b| {
                b.iter(|| pool.install(|| matmul(&w, &x, 1, &mut y)))
            });
        }
        g.finish();
    }
    let (rows, cols, n) = (1280, 1280, 64);
    let mut g = c.benchmark_group("matmul 1280x1280 n=64");
    g.sample_size(10);
    g.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
    for dt in [DType::Q4K, DType::Q8_0, DType::F16] {
        let data = kompakt_weight(dt, rows, cols);
        let w = WeightRef::new(dt, &data, rows, cols).unwrap();
        let x = gaussian(3, n * cols);
        let mut y = vec![0f32; n * rows];
        g.bench_function(dt.name(), |b| b.iter(|| matmul(&w, &x, n, &mut y)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
