//! Segment lists: the IWSLT/MuST-C segment YAML (reading and writing), WAV header probing and
//! the plan of a run (one job per output line).
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

/// One entry of a segment list: `{duration: F, offset: F, speaker_id: S, wav: NAME}`; other
/// keys (`speaker_id`, MuST-C's `rW`, `uW`, ...) are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    pub duration: f64,
    pub offset: f64,
    pub wav: String,
}

/// A parsed segment list with the line of each entry (when it could be found).
pub struct SegmentList {
    pub entries: Vec<Entry>,
    pub lines: Vec<Option<usize>>,
}

impl SegmentList {
    /// Parses YAML text; `name` labels errors.
    pub fn parse(text: &str, name: &str) -> Result<SegmentList> {
        if text.trim().is_empty() {
            return Ok(SegmentList {
                entries: Vec::new(),
                lines: Vec::new(),
            });
        }
        let entries: Vec<Entry> = serde_yaml::from_str(text).map_err(|e| {
            let msg = strip_location(&e.to_string());
            match e.location() {
                Some(loc) => anyhow!(
                    "{name}: malformed segment list at line {}, column {}: {msg} (expected a \
                     list of {{duration, offset, speaker_id, wav}} entries)",
                    loc.line(),
                    loc.column()
                ),
                None => anyhow!(
                    "{name}: malformed segment list: {msg} (expected a list of \
                     {{duration, offset, speaker_id, wav}} entries)"
                ),
            }
        })?;
        let found = entry_lines(text);
        let lines = if found.len() == entries.len() {
            found.into_iter().map(Some).collect()
        } else {
            vec![None; entries.len()]
        };
        Ok(SegmentList { entries, lines })
    }

    pub fn read(path: &Path) -> Result<SegmentList> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading segment list {}", path.display()))?;
        SegmentList::parse(&text, &path.display().to_string())
    }
}

/// serde_yaml appends " at line L column C"; the caller prints the location itself.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// 1-based lines of the top-level sequence items (lines starting with `-` at the smallest
/// indentation any such line has).
fn entry_lines(text: &str) -> Vec<usize> {
    let items: Vec<(usize, usize)> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = l.trim_start();
            (t == "-" || t.starts_with("- ")).then(|| (i + 1, l.len() - t.len()))
        })
        .collect();
    let Some(indent) = items.iter().map(|&(_, ind)| ind).min() else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter(|&(_, ind)| ind == indent)
        .map(|(line, _)| line)
        .collect()
}

/// A number as YAML writes it: shortest form with at most 3 decimals.
/// A YAML plain scalar when safe, else a double-quoted (JSON) string.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/+".contains(c))
        && !s.starts_with(['-', '.'])
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Writes entries in the MuST-C flow style, one per line.
pub fn to_yaml(entries: &[(String, f64, f64, String)]) -> String {
    let mut out = String::new();
    for (wav, offset, duration, speaker) in entries {
        let _ = writeln!(
            out,
            "- {{duration: {}, offset: {}, speaker_id: {}, wav: {}}}",
            seconds(*duration),
            seconds(*offset),
            scalar(speaker),
            scalar(wav)
        );
    }
    out
}

pub use kompakt_audio::longform::{check_range, seconds, WavInfo};

/// Reads only the header of a WAV file.
pub fn wav_info(path: &Path) -> Result<WavInfo> {
    Ok(kompakt_audio::longform::wav_info(path)?)
}

/// Caches header probes of the WAV files a list names.
#[derive(Default)]
pub struct WavCache {
    infos: HashMap<PathBuf, std::result::Result<WavInfo, String>>,
}

impl WavCache {
    pub fn get(&mut self, path: &Path) -> std::result::Result<WavInfo, String> {
        self.infos
            .entry(path.to_path_buf())
            .or_insert_with(|| wav_info(path).map_err(|e| crate::one_line(&e)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kompakt_audio::longform::to_ms;

    #[test]
    fn flow_and_block_style() {
        let flow = "- {duration: 3.5, offset: 1.25, rW: 8, uW: 0, speaker_id: spk.767, wav: ted_767.wav}\n\
                    - {duration: 2, offset: 5, speaker_id: spk.767, wav: ted_767.wav}\n";
        let l = SegmentList::parse(flow, "x").unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[0].duration, 3.5);
        assert_eq!(l.entries[1].offset, 5.0);
        assert_eq!(l.lines, vec![Some(1), Some(2)]);
        let block = "# a comment\n- duration: 3.5\n  offset: 1.25\n  speaker_id: 7\n  wav: a.wav\n\
                     - wav: b.wav\n  offset: 0\n  duration: 1\n";
        let l = SegmentList::parse(block, "x").unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[1].wav, "b.wav");
        assert_eq!(l.lines, vec![Some(2), Some(6)]);
        assert!(SegmentList::parse("", "x").unwrap().entries.is_empty());
    }

    #[test]
    fn malformed_lists_name_the_line() {
        let e = SegmentList::parse(
            "- {duration: 1, offset: 0, wav: a.wav}\n- {duration: x, offset: 0, wav: a.wav}\n",
            "l.yaml",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("l.yaml") && e.contains("line 2"), "{e}");
        let e = SegmentList::parse("- {duration: 1, offset: 0\n", "l.yaml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line "), "{e}");
        let e = SegmentList::parse("- {offset: 0, wav: a.wav}\n", "l.yaml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("duration"), "{e}");
    }

    #[test]
    fn yaml_round_trip() {
        let y = to_yaml(&[
            ("talk.wav".into(), 0.5, 3.0766, "spk.1".into()),
            ("my talk: 2.wav".into(), 10.0, 2.25, "spk.1".into()),
        ]);
        assert!(
            y.starts_with("- {duration: 3.077, offset: 0.5, speaker_id: spk.1, wav: talk.wav}\n"),
            "{y}"
        );
        let l = SegmentList::parse(&y, "y").unwrap();
        assert_eq!(l.entries[1].wav, "my talk: 2.wav");
        assert_eq!(l.entries[1].duration, 2.25);
        assert_eq!(to_ms(3.0766), 3.077);
    }

    #[test]
    fn ranges() {
        let info = WavInfo {
            rate: 16_000,
            frames: 160_000,
        };
        assert_eq!(check_range(&info, 1.0, 2.0), Ok(2.0));
        assert_eq!(check_range(&info, 9.0, 1.0), Ok(1.0));
        assert!((check_range(&info, 9.0, 1.03).unwrap() - 1.0).abs() < 1e-9);
        assert!(check_range(&info, 9.0, 2.0)
            .unwrap_err()
            .contains("past the end"));
        assert!(check_range(&info, 12.0, 1.0).is_err());
        assert!(check_range(&info, -1.0, 1.0).is_err());
        assert!(check_range(&info, 1.0, 0.0).is_err());
    }
}
