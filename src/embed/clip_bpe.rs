//! CLIP's byte-level BPE tokenizer, built from the merges file that ships with CLIP
//! (`bpe_simple_vocab_16e6.txt.gz`), as a `tokenizers` pipeline.
//!
//! The vocabulary is the 256 byte symbols, the same with `</w>`, one entry per merge and the two
//! special tokens (49,408 ids); the pipeline is the one of the `openai/clip-vit-*` models'
//! `tokenizer.json` (NFC, whitespace collapse and lowercase, CLIP's regex, byte-level BPE, start
//! and end tokens) plus truncation to 77 tokens with the end token kept last.
//! Compatibility details: docs/embed.md, "Tokenisation".

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior, Tokenizer, TruncationParams,
};

/// The start token and its id.
pub const START_OF_TEXT: &str = "<|startoftext|>";
pub const START_OF_TEXT_ID: u32 = 49406;
/// The end token and its id (also the largest id: CLIP's text tower pools at its position).
pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const END_OF_TEXT_ID: u32 = 49407;
/// Number of vocabulary entries.
pub const VOCAB_SIZE: usize = 49408;
/// Number of merges CLIP takes from the merges file.
pub const NUM_MERGES: usize = 49152 - 256 - 2;
/// CLIP's context length: tokens per text, start and end token included.
pub const CONTEXT_LENGTH: usize = 77;
/// The suffix marking the last symbol of a word.
pub const END_OF_WORD: &str = "</w>";

/// CLIP's pre-tokenising regex, with the special tokens first as in Hugging Face's file. The
/// reference compiles it case-insensitively; it runs after lowercasing, so that changes nothing.
const PRE_TOKENIZER_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// GPT-2's reversible byte → symbol mapping, in its own order: first the bytes that are printable
/// Latin-1 characters (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`), each mapped to itself, then the other
/// bytes in increasing order, mapped to U+0100, U+0101, … This order is the order of the first
/// 256 vocabulary ids.
pub fn byte_symbols() -> Vec<(u8, char)> {
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut out: Vec<(u8, char)> = (0u32..256)
        .filter(|&b| printable(b))
        .map(|b| (b as u8, char::from_u32(b).expect("Latin-1 code point")))
        .collect();
    let others = (0u32..256).filter(|&b| !printable(b));
    for (code, b) in (256u32..).zip(others) {
        out.push((
            b as u8,
            char::from_u32(code).expect("code point below 0x200"),
        ));
    }
    out
}

/// The merges CLIP uses: lines 1..=[`NUM_MERGES`] of the gzipped merges file (line 0 is a
/// header holding `#version`), each a pair of symbols separated by one space.
pub fn read_merges(merges_gz: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(merges_gz)
        .with_context(|| format!("opening the CLIP merges file {}", merges_gz.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} as gzipped UTF-8 text", merges_gz.display()))?;
    let mut lines = text.split('\n');
    let header = lines.next().unwrap_or_default();
    // The file CLIP ships starts with `"bpe_simple_vocab_16e6.txt#version: 0.2`; the reference
    // skips that line unread.
    if !header.contains("#version") {
        bail!(
            "{}: the first line should be a '#version' header, found {header:?}",
            merges_gz.display()
        );
    }
    let mut merges = Vec::with_capacity(NUM_MERGES);
    for (i, line) in lines.take(NUM_MERGES).enumerate() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => bail!(
                "{} line {}: expected two symbols separated by a space, found {line:?}",
                merges_gz.display(),
                i + 2
            ),
        }
    }
    if merges.len() != NUM_MERGES {
        bail!(
            "{}: {} merges, CLIP needs {NUM_MERGES}",
            merges_gz.display(),
            merges.len()
        );
    }
    Ok(merges)
}

/// The 49,408 vocabulary entries in id order, from the merges of [`read_merges`].
pub fn clip_vocab(merges: &[(String, String)]) -> Vec<String> {
    let symbols: Vec<String> = byte_symbols()
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    let mut vocab = Vec::with_capacity(2 * symbols.len() + merges.len() + 2);
    vocab.extend(symbols.iter().cloned());
    vocab.extend(symbols.iter().map(|s| format!("{s}{END_OF_WORD}")));
    vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    vocab.push(START_OF_TEXT.to_string());
    vocab.push(END_OF_TEXT.to_string());
    vocab
}

/// CLIP's tokenizer from its merges file (the pipeline: module documentation and
/// docs/embed.md, "Tokenisation").
/// `encode(text, true)` gives `[49406, …, 49407]`, at most 77 ids.
pub fn clip_tokenizer_from_bpe(merges_gz: &Path) -> Result<Tokenizer> {
    let merges = read_merges(merges_gz)?;
    let tokenizer = clip_tokenizer_from_merges(merges)
        .with_context(|| format!("building CLIP's tokenizer from {}", merges_gz.display()))?;
    for (token, id) in [
        (START_OF_TEXT, START_OF_TEXT_ID),
        (END_OF_TEXT, END_OF_TEXT_ID),
    ] {
        if tokenizer.token_to_id(token) != Some(id) {
            bail!("{token} should have id {id}");
        }
    }
    Ok(tokenizer)
}

/// CLIP's tokenizer pipeline over any list of merges: the vocabulary of [`clip_vocab`], so the
/// start and end tokens take the last two ids (the end token stays the largest id, where CLIP's
/// text tower pools). With CLIP's merges this is [`clip_tokenizer_from_bpe`]; with none, every
/// byte of a word is one token (514 ids), a tokenizer small models for tests can use without the
/// merges file.
pub fn clip_tokenizer_from_merges(merges: Vec<(String, String)>) -> Result<Tokenizer> {
    let vocab_list = clip_vocab(&merges);
    let end_id = vocab_list.len() as u32 - 1;
    let mut vocab = Vocab::default();
    for (id, token) in vocab_list.iter().enumerate() {
        if vocab.insert(token.clone(), id as u32).is_some() {
            bail!("the vocabulary entry {token:?} occurs twice");
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(END_OF_TEXT.to_string())
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(END_OF_WORD.to_string())
        .fuse_unk(false)
        .build()
        .map_err(|e| anyhow!("building the CLIP BPE model: {e}"))?;

    let mut tokenizer = Tokenizer::new(bpe);
    let normalizer = NormalizerSequence::new(vec![
        NormalizerWrapper::NFC(NFC),
        NormalizerWrapper::Replace(
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".to_string()),
                " ",
            )
            .map_err(|e| anyhow!("whitespace normaliser: {e}"))?,
        ),
        NormalizerWrapper::Lowercase(Lowercase),
    ]);
    tokenizer
        .with_normalizer(Some(NormalizerWrapper::Sequence(normalizer)))
        .map_err(|e| anyhow!("setting the normaliser: {e}"))?;
    let split = Split::new(
        SplitPattern::Regex(PRE_TOKENIZER_REGEX.to_string()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| anyhow!("CLIP's pre-tokenising regex: {e}"))?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(
        PreTokenizerSequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]),
    )));
    tokenizer.with_post_processor(Some(PostProcessorWrapper::Roberta(
        RobertaProcessing::new(
            (END_OF_TEXT.to_string(), end_id),
            (START_OF_TEXT.to_string(), end_id - 1),
        )
        .trim_offsets(false)
        .add_prefix_space(false),
    )));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let special = |content: &str| AddedToken::from(content, true).normalized(true);
    tokenizer
        .add_special_tokens([special(START_OF_TEXT), special(END_OF_TEXT)])
        .map_err(|e| anyhow!("adding the special tokens: {e}"))?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: CONTEXT_LENGTH,
            ..TruncationParams::default()
        }))
        .map_err(|e| anyhow!("setting truncation: {e}"))?;

    for (token, id) in [(START_OF_TEXT, end_id - 1), (END_OF_TEXT, end_id)] {
        if tokenizer.token_to_id(token) != Some(id) {
            bail!("{token} should have id {id}");
        }
    }
    Ok(tokenizer)
}

/// Writes CLIP's tokenizer (see [`clip_tokenizer_from_bpe`]) as a `tokenizer.json` that
/// `Tokenizer::from_file` (and Hugging Face's fast tokenizers) load.
pub fn write_clip_tokenizer_json(merges_gz: &Path, out_json: &Path) -> Result<()> {
    write_tokenizer_json(&clip_tokenizer_from_bpe(merges_gz)?, out_json)
}

/// Saves a tokenizer as a `tokenizer.json`, creating the folder it goes in.
pub fn write_tokenizer_json(tokenizer: &Tokenizer, out_json: &Path) -> Result<()> {
    if let Some(parent) = out_json.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    tokenizer
        .save(out_json, false)
        .map_err(|e| anyhow!("writing {}: {e}", out_json.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_symbols_are_a_bijection_in_gpt2_order() {
        let symbols = byte_symbols();
        assert_eq!(symbols.len(), 256);
        // First the printable bytes, each mapped to itself: '!' is id 0, 'a' is id 64.
        assert_eq!(symbols[0], (b'!', '!'));
        assert_eq!(symbols[64], (b'a', 'a'));
        assert_eq!(symbols[187], (0xFF, 'ÿ'));
        // Then the rest from byte 0, mapped upwards from U+0100 (space is 'Ġ', U+0120).
        assert_eq!(symbols[188], (0, '\u{100}'));
        assert!(symbols.contains(&(b' ', 'Ġ')));
        let mut bytes: Vec<u8> = symbols.iter().map(|s| s.0).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        let mut chars: Vec<char> = symbols.iter().map(|s| s.1).collect();
        chars.sort_unstable();
        chars.dedup();
        assert_eq!(chars.len(), 256);
    }

    #[test]
    fn vocab_layout() {
        let merges = vec![("a".to_string(), "b</w>".to_string())];
        let vocab = clip_vocab(&merges);
        assert_eq!(vocab.len(), 256 * 2 + 1 + 2);
        assert_eq!(vocab[256 + 64], "a</w>");
        assert_eq!(vocab[512], "ab</w>");
        assert_eq!(vocab[513], START_OF_TEXT);
        assert_eq!(vocab[514], END_OF_TEXT);
    }

    #[test]
    fn without_merges_every_byte_is_a_token_and_the_end_token_is_the_largest_id() {
        let tok = clip_tokenizer_from_merges(Vec::new()).unwrap();
        assert_eq!(tok.get_vocab_size(true), 514);
        // `c` and `a` are symbols 66 and 64; the word's last byte takes its `</w>` form, 256 on.
        let ids = tok.encode("Cat", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, [512, 66, 64, 256 + 83, 513]);
        let two = tok.encode("a  b", true).unwrap().get_ids().to_vec();
        assert_eq!(two, [512, 256 + 64, 256 + 65, 513]);
    }

    #[test]
    fn bad_merges_files_are_rejected() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let write_gz = |name: &str, text: &str| {
            let p = dir.path().join(name);
            let mut e = flate2::write::GzEncoder::new(
                std::fs::File::create(&p).unwrap(),
                flate2::Compression::fast(),
            );
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap();
            p
        };
        let no_header = write_gz("a.gz", "a b\n");
        assert!(read_merges(&no_header).is_err());
        let short = write_gz("b.gz", "#version: 0.2\na b\nab c");
        let err = read_merges(&short).unwrap_err().to_string();
        assert!(err.contains("merges"), "{err}");
        let malformed = write_gz("c.gz", "#version: 0.2\na b c\n");
        assert!(read_merges(&malformed).is_err());
    }
}
