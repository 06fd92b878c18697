//! `kompakt bench`: load time, memory, per-stage speed and real-time factor of
//! a model on this machine, with the memory read bandwidth measured in the
//! same run (the limit of decoding, which streams every LLM weight per token).
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use kompakt_format::KpkFile;
use kompakt_runtime::{Quiet, Session, Timings, TranslateOptions};

use crate::translate::KvCacheArg;
use serde::Serialize;

#[derive(Args)]
pub struct BenchArgs {
    /// The .kpk model
    #[arg(long)]
    pub model: PathBuf,
    /// Clip lengths in seconds (each at most 30)
    #[arg(long, value_delimiter = ',', default_value = "5,10,30")]
    pub audio_seconds: Vec<f64>,
    /// Thread counts to measure
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Tokens decoded per clip (end-of-sequence is suppressed until then)
    #[arg(long, default_value_t = 40)]
    pub tokens: usize,
    /// Runs per configuration; the median is reported
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Target language prompt
    #[arg(long, default_value = "de")]
    pub lang: String,
    /// A 16 kHz-convertible WAV to cut the clips from (looped when shorter);
    /// default: a synthetic voiced signal (speed does not depend on content)
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Buffer of the read-bandwidth probe in MiB (keep it well above the
    /// last-level cache)
    #[arg(long, default_value_t = 1024)]
    pub probe_mib: usize,
    /// Skip the cold-start measurement (evicting the file from the page cache)
    #[arg(long)]
    pub no_cold: bool,
    /// Read the model into memory backed by 2 MiB transparent huge pages
    /// (Linux) instead of memory-mapping it: faster decoding (6-22 % at 1
    /// thread on a 2-vCPU EPYC VM), a slower cold load (the whole file is
    /// read up front) and private memory the size of the file
    #[arg(long)]
    pub huge_pages: bool,
    /// Storage of the KV cache: f16 (half the memory) or f32
    #[arg(long, value_enum, default_value_t = KvCacheArg::F16)]
    pub kv_cache: KvCacheArg,
    /// Prompt positions per prefill micro-batch (smaller: less peak memory
    /// on long clips)
    #[arg(long, default_value_t = kompakt_runtime::PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    model: ModelInfo,
    load: LoadTimes,
    bandwidth: Vec<Bandwidth>,
    runs: Vec<Run>,
    memory: Memory,
}

#[derive(Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    kernels: &'static str,
}

#[derive(Serialize)]
struct ModelInfo {
    path: String,
    file_bytes: u64,
    bin: String,
    parameters: u64,
    /// Weight bytes read for one decoded token: every decoder layer, the
    /// final norm, the lm_head and one embedding row.
    decode_bytes_per_token: u64,
}

#[derive(Serialize)]
struct LoadTimes {
    /// `Model::load` after the file was evicted from the page cache.
    cold_s: Option<f64>,
    /// First translation after the cold load (weights paged in on first use).
    cold_first_translation_s: Option<f64>,
    /// The same translation once every page is cached.
    warm_translation_s: Option<f64>,
    /// `Model::load` with the file in the page cache.
    warm_s: f64,
}

#[derive(Serialize)]
struct Bandwidth {
    threads: usize,
    /// A fresh buffer of `--probe-mib`, best of before and after the runs.
    read_gb_s: f64,
    /// The model file's own mapped pages, after the runs. On a VM the host
    /// backs some memory better than other memory (two buffers of the same
    /// size read at 22 and 28 GB/s on the EPYC VM), so this is the limit of
    /// the decode's reads in particular.
    model_read_gb_s: f64,
}

#[derive(Serialize, Clone)]
struct Run {
    threads: usize,
    audio_s: f64,
    audio_tokens: usize,
    prompt_tokens: usize,
    features_s: f64,
    encoder_s: f64,
    prefill_s: f64,
    prefill_tok_s: f64,
    decode_tokens: usize,
    decode_s: f64,
    decode_tok_s: f64,
    total_s: f64,
    /// Processing seconds per audio second (below 1 is faster than real time).
    rtf: f64,
    /// Weight bytes per token times decode tokens/s.
    decode_gb_s: f64,
    /// `decode_gb_s` over the read bandwidth at the same thread count.
    bandwidth_fraction: Option<f64>,
    /// `decode_gb_s` over the model pages' read bandwidth, same threads.
    model_bandwidth_fraction: Option<f64>,
}

#[derive(Serialize)]
struct Memory {
    /// Highest resident set sampled while translating (every 2 ms).
    peak_rss_bytes: u64,
    /// File-backed part of it (the mapped model file, plus the pages of the
    /// executable and its libraries).
    peak_mapped_bytes: u64,
    /// Pages of the model file resident after the runs (`mincore`): the
    /// weights that translation touched.
    model_resident_bytes: Option<u64>,
    /// Anonymous part of it: KV cache, activations, tokenizer, buffers.
    peak_anon_bytes: u64,
    /// Anonymous memory after loading, before any translation.
    anon_after_load_bytes: u64,
    /// KV cache of the longest clip (prompt + decoded tokens).
    kv_cache_bytes: u64,
    /// Storage of the KV cache values: "f16" or "f32".
    kv_cache_type: &'static str,
    /// Prompt positions per prefill micro-batch (`--prefill-chunk`).
    prefill_chunk: usize,
    /// Peak anonymous memory minus what loading left and minus the KV cache:
    /// activations, scratch buffers and allocator slack.
    activations_bytes: u64,
    /// The kernel's high-water mark of the process (VmHWM) before the
    /// bandwidth probe, for comparison with the sampled peak.
    vm_hwm_bytes: Option<u64>,
    /// "mmap" (the file mapped), or "huge_pages" (`--huge-pages`: read into
    /// private memory advised for transparent huge pages).
    model_memory: &'static str,
    /// Anonymous memory on 2 MiB pages after the runs (`AnonHugePages`):
    /// how much of a `--huge-pages` copy the kernel actually gave huge pages.
    anon_huge_pages_bytes: Option<u64>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.tokens == 0 || args.repeat == 0 {
        bail!("--tokens and --repeat must be at least 1");
    }
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads takes thread counts of at least 1, e.g. 1,2");
    }
    if args.probe_mib == 0 {
        bail!("--probe-mib must be at least 1");
    }
    if args.audio_seconds.is_empty() {
        bail!("--audio-seconds needs at least one length");
    }
    for &s in &args.audio_seconds {
        if !(s > 0.0 && s <= 30.0) {
            bail!("--audio-seconds {s}: each clip must be longer than 0 and at most 30 s");
        }
    }
    let source = match &args.audio {
        Some(p) => {
            let pcm = kompakt_audio::load_16k_mono(p)
                .with_context(|| format!("reading {}", p.display()))?;
            if pcm.is_empty() {
                bail!("{}: the file holds no samples", p.display());
            }
            Some(pcm)
        }
        None => None,
    };
    let clip = |secs: f64| -> Vec<f32> {
        let n = (secs * kompakt_audio::TARGET_SAMPLE_RATE as f64).round() as usize;
        match &source {
            Some(pcm) => pcm.iter().copied().cycle().take(n).collect(),
            None => synthetic_voice(n),
        }
    };
    let opts = TranslateOptions {
        lang: args.lang.clone(),
        beams: 1,
        max_new_tokens: args.tokens,
        min_new_tokens: args.tokens,
        ..Default::default()
    };
    let max_threads = *args.threads.iter().max().unwrap_or(&1);
    let configure = |s: &mut Session| {
        s.set_kv_precision(args.kv_cache.into());
        s.set_prefill_chunk(args.prefill_chunk);
    };
    let shortest = args
        .audio_seconds
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);

    // Read bandwidth, measured before the runs (here, before the memory
    // sampler starts) and again after them; the better reading is the limit.
    // On a VM the same thread count can read at very different rates as the
    // host places its vCPUs (2 threads here: 35 or 55-65 GB/s), so one probe
    // could understate the limit and overstate the decode's share of it.
    let probe =
        |threads| kompakt_kernels::probe::read_bandwidth(args.probe_mib << 20, threads, 3, 1.0);
    let probe_before: Vec<f64> = args.threads.iter().map(|&t| probe(t)).collect();
    // Reset VmHWM (Linux >= 4.0), which the probe's buffer would otherwise set.
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    // Cold start: evict the file, load, translate once (pages come in on use).
    let sampler = RssSampler::start();
    let mut load = LoadTimes {
        cold_s: None,
        cold_first_translation_s: None,
        warm_translation_s: None,
        warm_s: 0.0,
    };
    if !args.no_cold {
        evict(&args.model)?;
        let t = Instant::now();
        let model = Arc::new(crate::load_model(&args.model, args.huge_pages)?);
        load.cold_s = Some(t.elapsed().as_secs_f64());
        let mut s = Session::new(model, max_threads)?;
        configure(&mut s);
        let pcm = clip(shortest);
        let t = Instant::now();
        s.translate(&pcm, &opts, &mut Quiet)
            .context("translating the first clip")?;
        load.cold_first_translation_s = Some(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let model = Arc::new(crate::load_model(&args.model, args.huge_pages)?);
    load.warm_s = t.elapsed().as_secs_f64();
    let anon_after_load = statm().map(|m| m.anon).unwrap_or(0);
    let info = model_info(&args.model, model.file())?;
    // Warm-up translation (also with --no-cold): the measured runs below
    // must not include page-ins of a file that is not in the page cache.
    {
        let mut s = Session::new(model.clone(), max_threads)?;
        configure(&mut s);
        let pcm = clip(shortest);
        let t = Instant::now();
        s.translate(&pcm, &opts, &mut Quiet)
            .context("the warm-up translation")?;
        load.warm_translation_s = Some(t.elapsed().as_secs_f64());
    }

    let show_progress = !args.json && std::io::stderr().is_terminal();
    let mut runs = Vec::new();
    let total = args.threads.len() * args.audio_seconds.len();
    for (i, &threads) in args.threads.iter().enumerate() {
        let mut session = Session::new(model.clone(), threads)?;
        configure(&mut session);
        for (j, &secs) in args.audio_seconds.iter().enumerate() {
            if show_progress {
                eprint!(
                    "\r[{}/{total}] {secs} s clip, {threads} thread(s)...   ",
                    i * args.audio_seconds.len() + j + 1
                );
            }
            let pcm = clip(secs);
            let mut samples = Vec::with_capacity(args.repeat);
            for _ in 0..args.repeat {
                let out = session
                    .translate(&pcm, &opts, &mut Quiet)
                    .with_context(|| format!("translating a {secs} s clip"))?;
                samples.push((out.timings, out.n_audio_tokens, out.prompt_tokens));
            }
            runs.push(median_run(
                threads,
                secs,
                &samples,
                info.decode_bytes_per_token,
            ));
        }
    }
    if show_progress {
        eprint!("\r{:60}\r", "");
    }
    let peak = sampler.stop();
    let vm_hwm = vm_hwm();

    // KV cache of the longest clip: every layer's keys and values.
    let llm = &model.config().llm;
    let longest_prompt = runs.iter().map(|r| r.prompt_tokens).max().unwrap_or(0);
    let value_bytes = kompakt_runtime::KvPrecision::from(args.kv_cache).bytes();
    let kv_cache_bytes =
        (llm.n_layers * llm.kv_dim() * 2 * value_bytes * (longest_prompt + args.tokens)) as u64;
    let memory = Memory {
        peak_rss_bytes: peak.rss,
        peak_mapped_bytes: peak.file,
        model_resident_bytes: resident_bytes(model.file().as_bytes()),
        peak_anon_bytes: peak.anon,
        anon_after_load_bytes: anon_after_load,
        kv_cache_bytes,
        prefill_chunk: args.prefill_chunk.max(1),
        kv_cache_type: match args.kv_cache {
            KvCacheArg::F16 => "f16",
            KvCacheArg::F32 => "f32",
        },
        activations_bytes: peak
            .anon
            .saturating_sub(anon_after_load)
            .saturating_sub(kv_cache_bytes),
        vm_hwm_bytes: vm_hwm,
        model_memory: if args.huge_pages {
            "huge_pages"
        } else {
            "mmap"
        },
        anon_huge_pages_bytes: proc_kb("/proc/self/smaps_rollup", "AnonHugePages:"),
    };

    // The second probe runs after the sampler, so its buffer stays out of the peaks.
    let mut bandwidth = Vec::new();
    let model_bytes = model.file().as_bytes();
    for (&threads, before) in args.threads.iter().zip(probe_before) {
        bandwidth.push(Bandwidth {
            threads,
            read_gb_s: probe(threads).max(before),
            model_read_gb_s: kompakt_kernels::probe::read_bandwidth_of(
                model_bytes,
                threads,
                3,
                1.0,
            ),
        });
    }
    for r in &mut runs {
        if let Some(b) = bandwidth.iter().find(|b| b.threads == r.threads) {
            r.bandwidth_fraction = Some(r.decode_gb_s / b.read_gb_s);
            r.model_bandwidth_fraction = Some(r.decode_gb_s / b.model_read_gb_s);
        }
    }
    let report = Report {
        machine: machine(),
        model: info,
        load,
        bandwidth,
        runs,
        memory,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.tokens);
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_run(
    threads: usize,
    audio_s: f64,
    samples: &[(Timings, usize, usize)],
    bytes_per_token: u64,
) -> Run {
    let pick = |f: &dyn Fn(&Timings) -> f64| median(samples.iter().map(|s| f(&s.0)).collect());
    let (t0, audio_tokens, prompt_tokens) = &samples[0];
    let features_s = pick(&|t| t.features_s);
    let encoder_s = pick(&|t| t.encoder_s);
    let prefill_s = pick(&|t| t.prefill_s);
    let decode_s = pick(&|t| t.decode_s);
    let total_s = pick(&|t| t.features_s + t.encoder_s + t.prefill_s + t.decode_s);
    // The first token comes from the prefill logits; the rest are decoder steps.
    let steps = t0.decode_tokens.saturating_sub(1).max(1);
    let decode_tok_s = steps as f64 / decode_s;
    Run {
        threads,
        audio_s,
        audio_tokens: *audio_tokens,
        prompt_tokens: *prompt_tokens,
        features_s,
        encoder_s,
        prefill_s,
        prefill_tok_s: t0.prefill_tokens as f64 / prefill_s,
        decode_tokens: t0.decode_tokens,
        decode_s,
        decode_tok_s,
        total_s,
        rtf: total_s / audio_s,
        decode_gb_s: bytes_per_token as f64 * decode_tok_s / 1e9,
        bandwidth_fraction: None,
        model_bandwidth_fraction: None,
    }
}

fn model_info(path: &Path, file: &KpkFile) -> Result<ModelInfo> {
    let s = kompakt_format::summary::Summary::of(file);
    let mut per_token = 0u64;
    for t in file.tensors() {
        let name = t.name.as_str();
        if name.starts_with("llm.layers.")
            || name.starts_with("llm.norm")
            || name == "llm.lm_head.weight"
        {
            per_token += t.nbytes;
        } else if name == "llm.embed.weight" {
            per_token += t.nbytes / t.shape.first().copied().unwrap_or(1).max(1);
        }
    }
    Ok(ModelInfo {
        path: path.display().to_string(),
        file_bytes: file.file_size(),
        bin: s.bin.name().to_string(),
        parameters: s.params.total.params,
        decode_bytes_per_token: per_token,
    })
}

/// A voiced, syllable-rate modulated signal with a little noise: 16 kHz.
fn synthetic_voice(n: usize) -> Vec<f32> {
    let sr = kompakt_audio::TARGET_SAMPLE_RATE as f64;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let f0 = 120.0 + 30.0 * (std::f64::consts::TAU * 0.7 * t).sin();
            phase += std::f64::consts::TAU * f0 / sr;
            let voiced: f64 = (1..=12).map(|h| (h as f64 * phase).sin() / h as f64).sum();
            let envelope = 0.5 + 0.5 * (std::f64::consts::TAU * 4.0 * t).sin();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let noise = (seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            (0.2 * envelope * voiced + 0.01 * noise) as f32
        })
        .collect()
}

/// Drops the file's pages from the page cache so the next load is cold.
fn evict(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; advice only, no memory is touched.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            bail!(
                "could not evict {} from the page cache (posix_fadvise: {rc}); use --no-cold",
                path.display()
            );
        }
    }
    drop(f);
    Ok(())
}

/// Bytes of `data` (a page-aligned file mapping) resident in memory.
fn resident_bytes(data: &[u8]) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        if data.is_empty() || !(data.as_ptr() as usize).is_multiple_of(PAGE) {
            return None;
        }
        let mut vec = vec![0u8; data.len().div_ceil(PAGE)];
        // SAFETY: `data` is one live mapping starting on a page boundary;
        // `vec` has one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                data.as_ptr() as *mut libc::c_void,
                data.len(),
                vec.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return None;
        }
        Some(vec.iter().filter(|&&v| v & 1 == 1).count() as u64 * PAGE as u64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = data;
        None
    }
}

struct Statm {
    rss: u64,
    file: u64,
    anon: u64,
}

/// Resident, file-backed and anonymous bytes of this process.
fn statm() -> Option<Statm> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let _size = f.next()??;
    let resident = f.next()??;
    let shared = f.next()??;
    let page = 4096;
    Some(Statm {
        rss: resident * page,
        file: shared * page,
        anon: resident.saturating_sub(shared) * page,
    })
}

fn vm_hwm() -> Option<u64> {
    proc_kb("/proc/self/status", "VmHWM:")
}

/// The value in bytes of a `key: N kB` line of a /proc file (Linux).
fn proc_kb(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Samples `/proc/self/statm` every 2 ms on a thread of its own and keeps the
/// maxima (each part's own maximum).
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Statm>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = Statm {
                rss: 0,
                file: 0,
                anon: 0,
            };
            while !flag.load(Ordering::Relaxed) {
                if let Some(m) = statm() {
                    peak.rss = peak.rss.max(m.rss);
                    peak.file = peak.file.max(m.file);
                    peak.anon = peak.anon.max(m.anon);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        RssSampler { stop, handle }
    }

    fn stop(self) -> Statm {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(Statm {
            rss: 0,
            file: 0,
            anon: 0,
        })
    }
}

fn machine() -> Machine {
    Machine {
        cpu: kompakt_kernels::probe::cpu_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernels: kompakt_kernels::kernels().isa,
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn print_report(r: &Report, tokens: usize) {
    let m = &r.model;
    println!(
        "model {} ({} bytes = {:.1} MB, {}, {} parameters)",
        m.path,
        m.file_bytes,
        mb(m.file_bytes),
        m.bin,
        m.parameters
    );
    println!(
        "machine: {}, {} cores, {} kernels",
        r.machine.cpu, r.machine.cores, r.machine.kernels
    );
    let l = &r.load;
    match (l.cold_s, l.cold_first_translation_s, l.warm_translation_s) {
        (Some(c), Some(f), Some(w)) => println!(
            "load: cold {c:.3} s, warm {:.3} s; first translation after a cold load {f:.2} s, \
             warm {w:.2} s",
            l.warm_s
        ),
        (_, _, Some(w)) => println!(
            "load: warm {:.3} s; first translation after a warm load {w:.2} s",
            l.warm_s
        ),
        _ => println!("load: warm {:.3} s", l.warm_s),
    }
    let bw: Vec<String> = r
        .bandwidth
        .iter()
        .map(|b| {
            format!(
                "{} thread(s) {:.1} GB/s (the model's pages: {:.1} GB/s)",
                b.threads, b.read_gb_s, b.model_read_gb_s
            )
        })
        .collect();
    println!(
        "read bandwidth (best of a probe before and one after the runs; a sum over the \
         model's mapped pages after them): {}",
        bw.join(", ")
    );
    println!(
        "weights read per decoded token: {:.1} MB\n",
        mb(m.decode_bytes_per_token)
    );
    println!(
        "| audio s | threads | features s | encoder s | prefill tok/s | decode tok/s | \
         {tokens}-token RTF | decode GB/s | of bandwidth | of the model pages' bandwidth |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for x in &r.runs {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.0} ({} tok) | {:.2} | {:.3} | {:.1} | {} | {} |",
            x.audio_s,
            x.threads,
            x.features_s,
            x.encoder_s,
            x.prefill_tok_s,
            x.prompt_tokens,
            x.decode_tok_s,
            x.rtf,
            x.decode_gb_s,
            x.bandwidth_fraction
                .map_or("-".into(), |f| format!("{:.0} %", 100.0 * f)),
            x.model_bandwidth_fraction
                .map_or("-".into(), |f| format!("{:.0} %", 100.0 * f))
        );
    }
    let mm = &r.memory;
    println!(
        "\nmemory: peak resident {:.1} MB = file-backed {:.1} MB (model pages resident: {}) + \
         anonymous {:.1} MB: {:.1} MB after load, KV cache ({}) of the longest clip {:.1} MB, \
         activations and buffers {:.1} MB (prefill in chunks of {}); VmHWM {}; model in {}, \
         anonymous huge pages {}",
        mb(mm.peak_rss_bytes),
        mb(mm.peak_mapped_bytes),
        mm.model_resident_bytes
            .map_or("n/a".into(), |b| format!("{:.1} MB", mb(b))),
        mb(mm.peak_anon_bytes),
        mb(mm.anon_after_load_bytes),
        mm.kv_cache_type,
        mb(mm.kv_cache_bytes),
        mb(mm.activations_bytes),
        mm.prefill_chunk,
        mm.vm_hwm_bytes
            .map_or("n/a".into(), |b| format!("{:.1} MB", mb(b))),
        mm.model_memory,
        mm.anon_huge_pages_bytes
            .map_or("n/a".into(), |b| format!("{:.1} MB", mb(b)))
    );
}
