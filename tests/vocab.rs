//! The vocabulary table and tokenized prompts of FORMAT.md 1.4: what the
//! runtime decodes and prompts with instead of parsing `tokenizer.json`.
//! Checked against Hugging Face `tokenizers` (every id, random sequences,
//! streamed pieces), for a trimmed vocabulary too, and files written before
//! 1.4 (no table) still load and translate the same through the tokenizer.
use std::path::Path;

use kompakt_converter::{ConvertOptions, PromptStyle};
use kompakt_format::vocab::{self, Vocab};
use kompakt_format::{DType, KpkFile, KpkWriter};
use kompakt_runtime::{Model, Session, TranslateOptions};
use kompakt_tests::{converted, fixtures};

fn tokenizer() -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(fixtures().join("tokenizer/tokenizer.json")).unwrap()
}

/// xorshift64*, for reproducible id sequences.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn every_id_and_random_sequences_decode_as_tokenizers_does() {
    let path = converted("tiny-mha", DType::F32, PromptStyle::Chat);
    let model = Model::load(&path).unwrap();
    let tok = tokenizer();
    let n = tok.get_vocab_size(true) as u32;
    let file = KpkFile::open(&path).unwrap();
    let table = Vocab::open(&file).unwrap().expect("a 1.4 file has a table");
    assert_eq!(table.len() as u32, n);
    let mut multibyte = 0;
    for id in 0..n + 3 {
        let want = tok.decode(&[id], true).unwrap();
        assert_eq!(model.decode(&[id]).unwrap(), want, "id {id}");
        multibyte += usize::from(std::str::from_utf8(table.piece(id)).is_err());
    }
    // The fixture's byte-level vocabulary has tokens that are half a
    // character (what makes U+FFFD handling matter).
    assert!(multibyte > 0, "no partial-character token in the fixture");
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for len in 1..400 {
        let ids: Vec<u32> = (0..len % 40 + 1)
            .map(|_| (rng(&mut s) % u64::from(n)) as u32)
            .collect();
        assert_eq!(
            model.decode(&ids).unwrap(),
            tok.decode(&ids, true).unwrap(),
            "{ids:?}"
        );
    }
    // Real text, incl. German and Chinese: tokenize, then decode back.
    for text in [
        "Bitte speichern Sie Ihre Arbeit, bevor Sie das Fenster schließen.",
        "请保存你的工作，关闭窗口之前。",
        "naïve café — 100 % ✓",
    ] {
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(model.decode(&ids).unwrap(), tok.decode(&ids, true).unwrap());
    }
}

#[test]
fn stored_prompts_equal_the_tokenized_templates() {
    for style in [PromptStyle::Chat, PromptStyle::Base] {
        let path = converted("tiny-mha", DType::F32, style);
        let model = Model::load(&path).unwrap();
        let file = KpkFile::open(&path).unwrap();
        for lang in model.config().languages() {
            assert!(file
                .metadata()
                .opt_i64s(&vocab::prompt_ids_key(&lang))
                .is_some());
            let stored = model.prompt_ids(&lang, 7).unwrap();
            let template = model.template(&lang).unwrap();
            let tokenized = model.prompt_text_ids(template, 7).unwrap();
            assert_eq!(stored, tokenized, "{style:?} {lang}");
        }
    }
}

#[test]
fn a_trimmed_vocabulary_decodes_its_ids_as_tokenizers_does() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trimmed.kpk");
    let mut opts = ConvertOptions::new(fixtures().join("models/tiny-mha"), &out, DType::F32);
    opts.keep_vocab = Some(kompakt_converter::vocab::KeepVocab::Ids(vec![5, 77, 300]));
    kompakt_converter::convert(&opts, &mut |_| true).unwrap();
    let model = Model::load(&out).unwrap();
    let tok = tokenizer();
    let kept = model.config().kept_ids.clone().expect("trimmed");
    assert!(kept.len() < tok.get_vocab_size(true));
    for &id in &kept {
        assert_eq!(
            model.decode(&[id]).unwrap(),
            tok.decode(&[id], true).unwrap()
        );
    }
    let ids: Vec<u32> = kept.iter().rev().copied().collect();
    assert_eq!(model.decode(&ids).unwrap(), tok.decode(&ids, true).unwrap());
}

/// Copies a `.kpk` file without its vocabulary table and tokenized prompts
/// (what a file written before format 1.4 holds).
fn without_table(src: &Path, dst: &Path) {
    let f = KpkFile::open(src).unwrap();
    let mut w = KpkWriter::create(dst).unwrap();
    for (k, v) in f.metadata().iter() {
        if k != vocab::SPECIAL_IDS && !k.starts_with("prompt.ids.") {
            w.metadata_mut().insert(k, v.clone()).unwrap();
        }
    }
    for t in f.tensors() {
        if !t.name.starts_with("tokenizer.") {
            let v = f.tensor(&t.name).unwrap();
            w.write_tensor(&t.name, t.dtype, &t.shape, v.data).unwrap();
        }
    }
    w.finish().unwrap();
}

#[test]
fn files_without_the_table_translate_the_same_through_the_tokenizer() {
    let path = converted("tiny-mha", DType::F32, PromptStyle::Chat);
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.kpk");
    without_table(&path, &old);
    assert!(Vocab::open(&KpkFile::open(&old).unwrap())
        .unwrap()
        .is_none());
    let wav = fixtures().join("audio/short_16k_mono_s16.wav");
    let pcm = kompakt_audio::load_16k_mono(&wav).unwrap();
    let run = |p: &Path| {
        let model = std::sync::Arc::new(Model::load(p).unwrap());
        let mut s = Session::new(model, 1).unwrap();
        let opts = TranslateOptions {
            lang: "de".into(),
            max_new_tokens: 12,
            ..Default::default()
        };
        s.translate(&pcm, &opts, &mut kompakt_runtime::Quiet)
            .unwrap()
    };
    let (new, old) = (run(&path), run(&old));
    assert_eq!(new.token_ids, old.token_ids);
    assert_eq!(new.text, old.text);
    assert_eq!(new.prompt_tokens, old.prompt_tokens);
}

/// Collects the streamed pieces of a translation.
#[derive(Default)]
struct Pieces(Vec<String>);

impl kompakt_runtime::Observer for Pieces {
    fn on_text(&mut self, piece: &str) -> bool {
        self.0.push(piece.to_string());
        true
    }
}

#[test]
fn streamed_pieces_concatenate_to_the_tokenizers_decode() {
    let path = converted("tiny-mha", DType::F32, PromptStyle::Chat);
    let model = std::sync::Arc::new(Model::load(&path).unwrap());
    let tok = tokenizer();
    let wav = fixtures().join("audio/short_16k_mono_s16.wav");
    let pcm = kompakt_audio::load_16k_mono(&wav).unwrap();
    let mut s = Session::new(model, 1).unwrap();
    for (lang, beams) in [("de", 1), ("zh", 1), ("de", 3)] {
        let opts = TranslateOptions {
            lang: lang.into(),
            beams,
            max_new_tokens: 40,
            ..Default::default()
        };
        let mut pieces = Pieces::default();
        let out = s.translate(&pcm, &opts, &mut pieces).unwrap();
        assert_eq!(out.text, tok.decode(&out.token_ids, true).unwrap());
        assert!(pieces.0.len() > 1, "{lang}: {} pieces", pieces.0.len());
        assert_eq!(pieces.0.concat(), out.text, "{lang} beams {beams}");
        assert!(pieces
            .0
            .iter()
            .all(|p| !p.contains('\u{FFFD}') || out.text.contains('\u{FFFD}')));
    }
}

/// Qwen2's real 151,643-token vocabulary, where the proxy checkpoint is
/// available (`KOMPAKT_DATA`; not in CI): the table built from it (which
/// checks every id against `tokenizers` while building) decodes German and
/// Chinese text and random id runs as `tokenizers` does.
#[test]
fn the_real_qwen2_vocabulary_when_available() {
    let Some(path) = std::env::var_os("KOMPAKT_DATA")
        .map(|d| Path::new(&d).join("proxy/checkpoint/tokenizer.json"))
        .filter(|p| p.exists())
    else {
        eprintln!("skipped: no $KOMPAKT_DATA/proxy/checkpoint/tokenizer.json");
        return;
    };
    let json = std::fs::read(&path).unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(&json).unwrap();
    let audio = tok.token_to_id("<|AUDIO|>").unwrap();
    let prompts = vec![("de".to_string(), "a <|AUDIO|> b".to_string())];
    let t = kompakt_converter::vocab::decoding_table(&json, None, &prompts, audio).unwrap();
    let table = Vocab::from_parts(&t.pieces, &t.ends);
    let skip: Vec<u32> = t.special.iter().map(|&i| i as u32).collect();
    assert_eq!(table.len(), tok.get_vocab_size(true));
    let mut s = 7u64;
    let n = table.len() as u64;
    for len in 1..3000 {
        let ids: Vec<u32> = (0..len % 24 + 1)
            .map(|_| (rng(&mut s) % n) as u32)
            .collect();
        assert_eq!(table.decode(&ids, &skip), tok.decode(&ids, true).unwrap());
    }
    for text in [
        "Bitte speichern Sie Ihre Arbeit, bevor Sie das Fenster schließen.",
        "请保存你的工作，关闭窗口之前。",
        "Größenänderung – „Anführungszeichen“ … 😀",
    ] {
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(table.decode(&ids, &skip), text);
    }
}
