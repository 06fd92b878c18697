//! kompakt's inference runtime: maps a `.kpk` file and translates speech.
//!
//! A [`Model`] is immutable and shared (`Arc`) by any number of
//! [`Session`]s; a session holds one stream's caches, threads and taps.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kompakt_runtime::{Model, Session, TranslateOptions, Quiet};
//! let model = Arc::new(Model::load("model.kpk")?);
//! let mut session = Session::new(model, 0)?;
//! let pcm = kompakt_audio::load_16k_mono("talk.wav".as_ref())?;
//! let out = session.translate(&pcm, &TranslateOptions::default(), &mut Quiet)?;
//! println!("{}", out.text);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
pub mod calib;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod error;
#[cfg(feature = "tokenizer")]
pub mod eval;
pub mod kv_cache;
pub mod model;
pub mod ops;
pub mod search;
pub mod session;
pub mod taps;
pub mod weights;

pub use config::ModelConfig;
pub use decoder::PREFILL_CHUNK;
pub use error::{Result, RuntimeError};
pub use kv_cache::KvPrecision;
pub use model::Model;
pub use session::{
    AudioEmbedding, Observer, Quiet, Segment, Session, Stage, TextGeneration, Timings,
    TranslateOptions, Translation,
};
