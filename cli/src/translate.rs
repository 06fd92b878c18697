//! `kompakt translate`: speech in, one line of translation per input segment out.
//!
//! Three kinds of input, all giving exactly one output line per segment, in order:
//! - short WAV files (at most 30 s): one line per file, as read;
//! - long WAV files (over 30 s, or any file with `--vad`): cut at pauses by the energy VAD of
//!   `kompakt_audio::vad`, one line per detected segment (`--segments-out` saves the cuts);
//! - an IWSLT/MuST-C segment list (`--segments LIST.yaml --wav-dir DIR`): each entry is read
//!   from its WAV with `read_wav_range` (never the whole talk), one line per entry.
//!
//! Segments over 30 s are split at their quietest point and the pieces' translations joined with
//! a space. With `-o FILE` every line is flushed as it is written, so `--resume` can continue an
//! interrupted run after the last complete line.
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kompakt_audio::longform::{self, MAX_CLIP_S};
use kompakt_audio::vad::VadConfig;
use kompakt_runtime::{Observer, Session, Timings, TranslateOptions};

mod segments;

use segments::{check_range, to_yaml, wav_info, SegmentList, WavCache};

#[derive(Args)]
pub struct TranslateArgs {
    /// The .kpk model
    #[arg(long)]
    pub model: PathBuf,
    /// Target language (a prompt stored in the model: de, zh)
    #[arg(long, default_value = "de")]
    pub lang: String,
    /// A one-off instruction instead of the model's one for --lang (e.g.
    /// "Translate the English speech into German, formally:"), put into the
    /// model's prompt template (`kompakt inspect` shows it); --lang then only
    /// labels the output
    #[arg(long, value_name = "TEXT")]
    pub instruction: Option<String>,
    /// Beam width (1 = greedy)
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// Maximum number of generated tokens per segment (per 30 s piece)
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Worker threads (0 = one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
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
    /// Print one JSON object per segment with token ids and stage timings
    #[arg(long)]
    pub json: bool,
    /// Stream text to the terminal as it is decoded
    #[arg(long)]
    pub stream: bool,
    /// IWSLT/MuST-C segment list (YAML list of {duration, offset, speaker_id, wav}); one
    /// output line per entry
    #[arg(long, value_name = "LIST.yaml", conflicts_with_all = ["audio", "vad"])]
    pub segments: Option<PathBuf>,
    /// Directory holding the WAV files a segment list names (default: the list's directory)
    #[arg(long, value_name = "DIR", requires = "segments")]
    pub wav_dir: Option<PathBuf>,
    /// Segment every file with the energy VAD, also files of 30 s or less
    #[arg(long)]
    pub vad: bool,
    /// Save the segmentation of the WAV files as a segment list (reads back with --segments,
    /// --wav-dir set to the files' directory)
    #[arg(long, value_name = "FILE.yaml", conflicts_with = "segments")]
    pub segments_out: Option<PathBuf>,
    /// Write the translations to this file (one line per segment, flushed as written)
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Continue an interrupted run: keep the complete lines already in --output and translate
    /// only the segments after them
    #[arg(long, requires = "output")]
    pub resume: bool,
    /// On a bad segment (missing or unreadable WAV, range past the end) write an empty line
    /// and a warning instead of stopping
    #[arg(long)]
    pub keep_going: bool,
    /// WAV files (any PCM or float format, any rate and channel count)
    #[arg(required_unless_present = "segments")]
    pub audio: Vec<PathBuf>,
}

struct Streamer {
    on: bool,
}

impl Observer for Streamer {
    fn on_text(&mut self, piece: &str) -> bool {
        if self.on {
            eprint!("{piece}");
        }
        true
    }
}

/// Where the audio of one output line comes from.
enum Source {
    /// A whole file (at most 30 s), read as today.
    Whole(PathBuf),
    /// A span of a file, read with `read_wav_range`.
    Range {
        path: PathBuf,
        offset: f64,
        duration: f64,
    },
}

/// One output line.
struct Job {
    /// Names the segment in messages.
    label: String,
    source: Source,
    /// Audio seconds (for progress and the real-time factor).
    seconds: f64,
    /// A problem found while planning; the line is empty (only with --keep-going).
    error: Option<String>,
}

impl Job {
    fn fields(&self) -> (String, f64, Option<f64>) {
        match &self.source {
            Source::Whole(p) => (p.display().to_string(), 0.0, None),
            Source::Range {
                path,
                offset,
                duration,
            } => (path.display().to_string(), *offset, Some(*duration)),
        }
    }
}

/// Jobs of a segment list.
fn plan_list(list_path: &Path, wav_dir: Option<&Path>, keep_going: bool) -> Result<Vec<Job>> {
    let list = SegmentList::read(list_path)?;
    if list.entries.is_empty() {
        bail!(
            "{}: the segment list has no entries (expected lines like \
             `- {{duration: 5.0, offset: 0.0, speaker_id: spk1, wav: talk.wav}}`)",
            list_path.display()
        );
    }
    let dir = match wav_dir {
        Some(d) => d.to_path_buf(),
        None => list_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let mut cache = WavCache::default();
    let mut jobs = Vec::with_capacity(list.entries.len());
    for (i, (e, line)) in list.entries.iter().zip(&list.lines).enumerate() {
        let path = dir.join(&e.wav);
        let label = format!(
            "segment {} of {}{} (wav {}, offset {} s, duration {} s)",
            i + 1,
            list_path.display(),
            line.map(|l| format!(", line {l}")).unwrap_or_default(),
            e.wav,
            e.offset,
            e.duration
        );
        let checked = cache
            .get(&path)
            .and_then(|info| check_range(&info, e.offset, e.duration));
        let (duration, error) = match checked {
            Ok(d) => (d, None),
            Err(msg) if keep_going => (e.duration.max(0.0), Some(msg)),
            Err(msg) => bail!("{label}: {msg}"),
        };
        jobs.push(Job {
            label,
            seconds: if duration.is_finite() { duration } else { 0.0 },
            source: Source::Range {
                path,
                offset: e.offset,
                duration,
            },
            error,
        });
    }
    Ok(jobs)
}

/// Jobs of WAV files given on the command line.
fn plan_files(args: &TranslateArgs) -> Result<Vec<Job>> {
    let cfg = VadConfig::default();
    let mut jobs = Vec::new();
    for path in &args.audio {
        let name = path.display().to_string();
        let info = match wav_info(path) {
            Ok(info) => info,
            Err(e) if args.keep_going => {
                jobs.push(Job {
                    label: name,
                    source: Source::Whole(path.clone()),
                    seconds: 0.0,
                    error: Some(crate::one_line(&e)),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let total_s = info.duration_s();
        if total_s <= MAX_CLIP_S && !args.vad {
            jobs.push(Job {
                label: name,
                source: Source::Whole(path.clone()),
                seconds: total_s,
                error: None,
            });
            continue;
        }
        // Millisecond values, as --segments-out writes them and --segments
        // reads them; the C API and Python cut a long recording the same way.
        let cuts = longform::segment_file(path, &info, &cfg)
            .with_context(|| format!("segmenting {name}"))?;
        for (k, cut) in cuts.iter().enumerate() {
            let (offset, duration) = (cut.offset_s, cut.duration_s);
            jobs.push(Job {
                label: format!("{name} segment {} ({} s + {} s)", k + 1, offset, duration),
                source: Source::Range {
                    path: path.clone(),
                    offset,
                    duration,
                },
                seconds: duration,
                error: None,
            });
        }
    }
    Ok(jobs)
}

/// The segmentation of the jobs as a segment list (`wav` = file name).
fn segments_yaml(jobs: &[Job], files: &[PathBuf]) -> String {
    let speaker = |p: &Path| {
        let i = files.iter().position(|f| f == p).unwrap_or(0);
        format!("spk.{}", i + 1)
    };
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let entries: Vec<(String, f64, f64, String)> = jobs
        .iter()
        .map(|j| match &j.source {
            Source::Whole(p) => (
                file_name(p),
                0.0,
                (j.seconds * 1000.0).floor() / 1000.0,
                speaker(p),
            ),
            Source::Range {
                path,
                offset,
                duration,
            } => (file_name(path), *offset, *duration, speaker(path)),
        })
        .collect();
    to_yaml(&entries)
}

/// Keeps the complete lines of an interrupted output (dropping a partial last line) and
/// returns how many there are.
fn complete_lines(file: &mut File) -> Result<usize> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        file.set_len(keep as u64)?;
    }
    file.seek(SeekFrom::End(0))?;
    Ok(bytes[..keep].iter().filter(|&&b| b == b'\n').count())
}

/// Reads a job's audio as 16 kHz mono.
fn load(source: &Source) -> Result<Vec<f32>> {
    Ok(match source {
        Source::Whole(p) => kompakt_audio::load_16k_mono(p)?,
        Source::Range {
            path,
            offset,
            duration,
        } => longform::read_cut_16k(
            path,
            &longform::Cut {
                offset_s: *offset,
                duration_s: *duration,
            },
        )?,
    })
}

struct Done {
    text: String,
    token_ids: Vec<u32>,
    pieces: usize,
    audio_tokens: usize,
    read_s: f64,
    timings: Timings,
}

/// Translates one job's audio, splitting clips over 30 s at their quietest points.
fn translate_job(
    session: &mut Session,
    job: &Job,
    opts: &TranslateOptions,
    stream: bool,
) -> Result<Done> {
    let t = Instant::now();
    let pcm = load(&job.source)?;
    let read_s = t.elapsed().as_secs_f64();
    let mut done = Done {
        text: String::new(),
        token_ids: Vec::new(),
        pieces: 0,
        audio_tokens: 0,
        read_s,
        timings: Timings::default(),
    };
    if pcm.is_empty() {
        return Ok(done);
    }
    let mut streamer = Streamer { on: stream };
    let (out, pieces) = session.translate_clip(&pcm, opts, &mut streamer)?;
    if stream {
        eprintln!();
    }
    // One line per segment: no line breaks or other control characters inside.
    let text: String = out
        .text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    done.text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    done.pieces = pieces;
    done.token_ids = out.token_ids;
    done.audio_tokens = out.n_audio_tokens;
    done.timings = out.timings;
    Ok(done)
}

fn json_line(
    job: &Job,
    lang: &str,
    done: Option<&Done>,
    error: Option<&str>,
    load_s: f64,
) -> String {
    let (file, offset, duration) = job.fields();
    let mut v = serde_json::json!({
        "file": file,
        "offset": offset,
        "duration": duration,
        "lang": lang,
        "audio_seconds": job.seconds,
        "text": done.map(|d| d.text.as_str()).unwrap_or(""),
        "error": error,
    });
    if let Some(d) = done {
        let tm = &d.timings;
        v["token_ids"] = serde_json::json!(d.token_ids);
        v["pieces"] = serde_json::json!(d.pieces);
        v["audio_tokens"] = serde_json::json!(d.audio_tokens);
        v["timings"] = serde_json::json!({
            "load_s": load_s,
            "read_s": d.read_s,
            "features_s": tm.features_s,
            "encoder_s": tm.encoder_s,
            "prefill_s": tm.prefill_s,
            "prefill_tokens_per_s": tm.prefill_tokens as f64 / tm.prefill_s.max(1e-9),
            "decode_s": tm.decode_s,
            "decode_tokens": tm.decode_tokens,
            "decode_tokens_per_s": tm.decode_tokens as f64 / tm.decode_s.max(1e-9),
        });
    }
    v.to_string()
}

fn progress_bar(total_s: f64, jobs: usize, hidden: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some((total_s * 1000.0).round() as u64),
        if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {percent:>3}% of audio, segment {msg} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(format!("0/{jobs}"));
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}

pub fn run(args: TranslateArgs) -> Result<()> {
    let t_start = Instant::now();
    if args.beams == 0 || args.max_tokens == 0 {
        bail!("--beams and --max-tokens must be at least 1");
    }
    // Plan first: a bad list fails before the model is loaded.
    let jobs = match &args.segments {
        Some(list) => plan_list(list, args.wav_dir.as_deref(), args.keep_going)?,
        None => plan_files(&args)?,
    };
    if let Some(path) = &args.segments_out {
        std::fs::write(path, segments_yaml(&jobs, &args.audio))
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let (skip, out): (usize, Box<dyn Write>) = match &args.output {
        Some(path) => {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            let skip = if args.resume {
                complete_lines(&mut file).with_context(|| format!("reading {}", path.display()))?
            } else {
                file.set_len(0)?;
                0
            };
            if skip > jobs.len() {
                bail!(
                    "{} already has {skip} lines but there are only {} segments: not an \
                     output of this input",
                    path.display(),
                    jobs.len()
                );
            }
            if args.resume && skip > 0 {
                eprintln!(
                    "resuming: {skip} of {} segments already in {}",
                    jobs.len(),
                    path.display()
                );
            }
            (skip, Box::new(BufWriter::new(file)))
        }
        None => (0, Box::new(std::io::stdout())),
    };
    run_jobs(&args, &jobs, skip, out, t_start)
}

fn run_jobs(
    args: &TranslateArgs,
    jobs: &[Job],
    skip: usize,
    mut out: Box<dyn Write>,
    t_start: Instant,
) -> Result<()> {
    let todo = &jobs[skip..];
    if todo.is_empty() {
        out.flush()?;
        return Ok(());
    }
    let t0 = Instant::now();
    let model = Arc::new(crate::load_model(&args.model, args.huge_pages)?);
    let load_s = t0.elapsed().as_secs_f64();
    if let Some(i) = &args.instruction {
        model.instruction_prompt(i)?;
    } else if !model.config().templates.contains_key(&args.lang) {
        bail!(
            "target language `{}` is not in this model (available: {})",
            args.lang,
            model.config().languages().join(", ")
        );
    }
    let mut session = Session::new(model.clone(), args.threads)?;
    session.set_kv_precision(args.kv_cache.into());
    session.set_prefill_chunk(args.prefill_chunk);
    let opts = TranslateOptions {
        lang: args.lang.clone(),
        instruction: args.instruction.clone(),
        beams: args.beams,
        max_new_tokens: args.max_tokens,
        ..Default::default()
    };

    let total_s: f64 = todo.iter().map(|j| j.seconds).sum();
    let pb = progress_bar(total_s, jobs.len(), args.stream || todo.len() < 2);
    let t_run = Instant::now();
    let mut failed = 0usize;
    for (i, job) in todo.iter().enumerate() {
        pb.set_message(format!("{}/{}", skip + i + 1, jobs.len()));
        let result = match &job.error {
            Some(msg) => Err(anyhow::anyhow!("{msg}")),
            None => translate_job(&mut session, job, &opts, args.stream),
        };
        let line = match result {
            Ok(done) => {
                if args.json {
                    json_line(job, &args.lang, Some(&done), None, load_s)
                } else {
                    done.text
                }
            }
            Err(e) if args.keep_going => {
                failed += 1;
                let msg = crate::one_line(&e);
                let named = if msg.starts_with(&job.label) {
                    msg.clone()
                } else {
                    format!("{}: {msg}", job.label)
                };
                pb.suspend(|| eprintln!("warning: {named}; writing an empty line"));
                if args.json {
                    json_line(job, &args.lang, None, Some(&msg), load_s)
                } else {
                    String::new()
                }
            }
            Err(e) => {
                pb.finish_and_clear();
                out.flush()?;
                if crate::one_line(&e).starts_with(&job.label) {
                    return Err(e);
                }
                return Err(e.context(job.label.clone()));
            }
        };
        writeln!(out, "{}", line.replace(['\n', '\r'], " "))?;
        out.flush()?;
        pb.inc((job.seconds * 1000.0).round() as u64);
    }
    pb.finish_and_clear();
    let wall = t_start.elapsed().as_secs_f64();
    if todo.len() > 1 || args.output.is_some() {
        eprintln!(
            "translated {} segments, {:.1} s of audio in {:.2} s ({:.2} s translating, {:.2} s \
             planning and loading the model): {:.1}x real time{}",
            todo.len(),
            total_s,
            wall,
            t_run.elapsed().as_secs_f64(),
            wall - t_run.elapsed().as_secs_f64(),
            total_s / wall.max(1e-9),
            if failed > 0 {
                format!(", {failed} failed (empty lines)")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// `--kv-cache` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KvCacheArg {
    F16,
    F32,
}

impl From<KvCacheArg> for kompakt_runtime::KvPrecision {
    fn from(a: KvCacheArg) -> Self {
        match a {
            KvCacheArg::F16 => kompakt_runtime::KvPrecision::F16,
            KvCacheArg::F32 => kompakt_runtime::KvPrecision::F32,
        }
    }
}
