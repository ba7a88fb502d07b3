//! CLIP's tokenizer and candle's CLIP, each checked against an independent reference:
//! * the tokenizer built from the BPE merges file against open_clip's own `SimpleTokenizer`, on the
//!   naming vocabularies of the MSAE study and on a list of awkward strings;
//! * candle-transformers' CLIP (text and image features, F32 on the CPU) against a NumPy float64
//!   forward pass (`tests/oracles/clip_numpy.py`), on a small random CLIP in the Hugging Face
//!   layout.
//!
//! Both need the test assets (`scripts/test-assets.sh`) and skip with a notice without them.

use crate::common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::{
    text_model::{Activation, ClipTextConfig},
    vision_model::ClipVisionConfig,
    ClipConfig, ClipModel,
};
use common::{oracle, read_npy_f64_rows, run_python};
use msae::embed::clip_bpe::{
    clip_tokenizer_from_bpe, write_clip_tokenizer_json, CONTEXT_LENGTH, END_OF_TEXT_ID,
    START_OF_TEXT_ID, VOCAB_SIZE,
};
use msae::embed::random_clip::{write_random_clip, TinyClipConfig};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn bpe_file() -> Option<PathBuf> {
    common::test_asset("open_clip/bpe_simple_vocab_16e6.txt.gz")
}

fn encode(tokenizer: &tokenizers::Tokenizer, texts: &[String]) -> Vec<Vec<u32>> {
    tokenizer
        .encode_batch(texts.to_vec(), true)
        .expect("tokenizing")
        .iter()
        .map(|e| e.get_ids().to_vec())
        .collect()
}

#[test]
fn clip_tokenizer_known_ids_and_file_round_trip() {
    let Some(bpe) = bpe_file() else { return };
    let tokenizer = clip_tokenizer_from_bpe(&bpe).unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), VOCAB_SIZE);
    let ids =
        |t: &tokenizers::Tokenizer, text: &str| t.encode(text, true).unwrap().get_ids().to_vec();
    assert_eq!(
        ids(&tokenizer, "a photo of a cat"),
        [49406, 320, 1125, 539, 320, 2368, 49407]
    );
    assert_eq!(ids(&tokenizer, ""), [START_OF_TEXT_ID, END_OF_TEXT_ID]);

    // Truncation keeps the start token, the first 75 tokens of the text and the end token.
    let long = "the quick brown fox jumps over the lazy dog. ".repeat(12);
    let cut = ids(&tokenizer, &long);
    assert_eq!(cut.len(), CONTEXT_LENGTH);
    assert_eq!(cut[0], START_OF_TEXT_ID);
    assert_eq!(cut[CONTEXT_LENGTH - 1], END_OF_TEXT_ID);
    let mut untruncated = tokenizer.clone();
    untruncated.with_truncation(None).unwrap();
    let full = ids(&untruncated, &long);
    assert!(full.len() > 100);
    assert_eq!(cut[..CONTEXT_LENGTH - 1], full[..CONTEXT_LENGTH - 1]);

    // The written file loads on its own and gives the same ids.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    write_clip_tokenizer_json(&bpe, &json).unwrap();
    let loaded = tokenizers::Tokenizer::from_file(&json).unwrap();
    for text in ["a photo of a cat", "", long.as_str(), "Don't PANIC: 42 °C!"] {
        assert_eq!(ids(&loaded, text), ids(&tokenizer, text), "{text:?}");
    }
    // It has the shape of the tokenizer.json Hugging Face ships with the OpenAI CLIP models.
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["model"]["type"], "BPE");
    assert_eq!(value["model"]["end_of_word_suffix"], "</w>");
    assert_eq!(value["model"]["vocab"]["a</w>"], 320);
    assert_eq!(value["model"]["vocab"]["<|endoftext|>"], 49407);
    assert_eq!(value["normalizer"]["normalizers"][0]["type"], "NFC");
    assert_eq!(value["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
    assert_eq!(
        value["pre_tokenizer"]["pretokenizers"][1]["type"],
        "ByteLevel"
    );
    assert_eq!(value["post_processor"]["type"], "RobertaProcessing");
    assert_eq!(value["post_processor"]["cls"][1], 49406);
    assert_eq!(value["truncation"]["max_length"], 77);
}

/// Strings chosen to exercise each branch of the pipeline.
fn awkward_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "a photo of a cat",
        "A Photo Of A CAT.",
        "Hello, World!!!",
        "it's a dog's life; they'll say we're fine, I'm sure you've seen it, he'd know",
        "IT'S LOUD'N'CLEAR",
        "rock 'n' roll ''quoted'' 'single'",
        "1234567890 3.14159 -42 +7 1e-5 0x1F 2,000,000",
        "$100 & €50 or £3 (approx.) — 50% off?!",
        "e-mail: someone@example.com, http://example.com/a_b?c=d#e",
        "C++ / C# / F# ... --- ___ *** ~~~ ^^^",
        "((nested [brackets] {braces})) <angle>",
        "\ttabs\tand\nnew\nlines   and    spaces  ",
        "   leading and trailing   ",
        "non\u{a0}breaking\u{2003}em space\u{3000}ideographic space",
        "zero\u{200b}width space",
        "café naïve résumé Ångström façade",
        "cafe\u{301} (decomposed accent)",
        "Straße ß İstanbul ǅ ǈ",
        "Привет мир, ПРИВЕТ",
        "Γειά σου κόσμε",
        "مرحبا بالعالم",
        "שלום עולם",
        "नमस्ते दुनिया",
        "日本語のテキストと漢字",
        "中文字符和标点，。！",
        "한국어 텍스트",
        "ไทยภาษา",
        "x² H₂O ½ ⅓ ① Ⅻ ٣ ३",
        "emoji 😀🐱👍🏽 ❤️ 🇫🇷 👨‍👩‍👧 🤷‍♂️",
        "math ∑∫√∞ ≤≥≠ → ← ↔",
        "™ © ® ° ± × ÷ § ¶ •",
        "a\u{301}\u{302}\u{303} stacked marks",
        "\u{1}\u{7}\u{1b} control characters",
        "",
        " ",
        "!",
        "'",
        "'s",
        "a",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Long texts that are cut to 77 tokens, ending in the middle of a multi-token word or of a
    // run of digits.
    v.push("a photo of a very very large dog. ".repeat(20));
    v.push("pneumonoultramicroscopicsilicovolcanoconiosis ".repeat(30));
    v.push(
        (0..200)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    v.push("😀".repeat(100));
    // Texts that the reference's ftfy / HTML step changes.
    v.extend(
        [
            "don’t “quote” me",
            "fish &amp; chips &lt;b&gt; &#39;x&#39; &amp;amp;",
            "ﬁne ﬂour",
            "cafÃ© mojibake",
            "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

/// Naming vocabularies beside the checkout (read in place, never copied).
fn vocabularies() -> Option<Vec<(String, Vec<String>)>> {
    let dir = common::repo_path("../shared/vocab");
    let names = [
        "clip_disect_20k.txt",
        "laion_400_unigram.txt",
        "laion_400_bigram.txt",
        "mscoco_unigram.txt",
    ];
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "skipping the vocabularies: {} is not available (it lives beside the project checkout)",
                path.display()
            );
            return None;
        };
        out.push((
            name.to_string(),
            text.lines().map(|l| l.to_string()).collect(),
        ));
    }
    Some(out)
}

/// The reference's answer for each text (see `tests/oracles/open_clip_tokens.py`).
struct Reference {
    ids: Vec<Vec<u32>>,
    plain_ids: Vec<Vec<u32>>,
    cleaned: Vec<String>,
    plain: Vec<String>,
}

fn reference_tokens(python: &Path, open_clip: &Path, texts: &[String]) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.json");
    let output = dir.path().join("ids.json");
    std::fs::write(&input, serde_json::to_string(texts).unwrap()).unwrap();
    let script = oracle("open_clip_tokens.py");
    run_python(
        python,
        &[
            script.as_os_str(),
            open_clip.as_os_str(),
            input.as_os_str(),
            output.as_os_str(),
        ],
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    let id_lists = |key: &str| -> Vec<Vec<u32>> { serde_json::from_value(v[key].clone()).unwrap() };
    let strings = |key: &str| -> Vec<String> { serde_json::from_value(v[key].clone()).unwrap() };
    let r = Reference {
        ids: id_lists("ids"),
        plain_ids: id_lists("plain_ids"),
        cleaned: strings("cleaned"),
        plain: strings("plain"),
    };
    assert_eq!(r.ids.len(), texts.len());
    r
}

/// How our ids relate to the reference's for one text.
#[derive(Debug, PartialEq)]
enum Verdict {
    Same,
    /// Different, and only because ftfy / HTML unescaping changed the text: without that step
    /// the reference gives our ids.
    CleaningOnly,
    Different,
}

fn judge(ours: &[u32], r: &Reference, i: usize) -> Verdict {
    if ours == r.ids[i].as_slice() {
        Verdict::Same
    } else if r.cleaned[i] != r.plain[i] && ours == r.plain_ids[i].as_slice() {
        Verdict::CleaningOnly
    } else {
        Verdict::Different
    }
}

#[test]
fn clip_tokenizer_agrees_with_open_clip() {
    let (Some(bpe), Some(python), Some(open_clip)) = (
        bpe_file(),
        common::test_python(),
        common::test_asset("open_clip/tokenizer.py"),
    ) else {
        return;
    };
    let open_clip = open_clip.parent().unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    write_clip_tokenizer_json(&bpe, &json).unwrap();
    let tokenizer = tokenizers::Tokenizer::from_file(&json).unwrap();

    // Awkward strings: every one agrees, or differs only through the reference's ftfy / HTML
    // step, or is one of the two differences docs/embed.md names ("Tokenisation").
    let texts = awkward_strings();
    let ours = encode(&tokenizer, &texts);
    let r = reference_tokens(&python, &open_clip, &texts);
    let mut same = 0;
    let mut cleaning = Vec::new();
    let mut other = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match judge(&ours[i], &r, i) {
            Verdict::Same => same += 1,
            Verdict::CleaningOnly => cleaning.push(text.clone()),
            Verdict::Different => other.push((text.clone(), ours[i].clone(), r.ids[i].clone())),
        }
    }
    println!(
        "awkward strings: {same}/{} identical to open_clip; {} differ only through ftfy/HTML: {cleaning:?}",
        texts.len(),
        cleaning.len()
    );
    for (text, o, reference) in &other {
        println!("  differs: {text:?}\n    ours      {o:?}\n    open_clip {reference:?}");
    }
    assert!(other.is_empty(), "unexplained differences: {other:?}");

    // The two differences docs/embed.md names ("Tokenisation"), besides ftfy/HTML.
    let known: Vec<String> = [
        "<|startoftext|> and <|endoftext|> as text",
        "<start_of_text>a cat<end_of_text>",
        "ΟΔΟΣ",
        "οδος",
        "οδοσ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ours = encode(&tokenizer, &known);
    let r = reference_tokens(&python, &open_clip, &known);
    // Special tokens: this pipeline (like Hugging Face's) matches the `<|…|>` spelling, open_clip
    // its `<start_of_text>` / `<end_of_text>` spelling.
    assert_eq!(ours[0], [49406, 49406, 537, 49407, 601, 4160, 49407]);
    assert_eq!(
        r.ids[0].iter().filter(|&&x| x >= START_OF_TEXT_ID).count(),
        2
    );
    assert_eq!(r.ids[1][..2], [START_OF_TEXT_ID, START_OF_TEXT_ID]);
    assert_eq!(
        r.ids[1][r.ids[1].len() - 2..],
        [END_OF_TEXT_ID, END_OF_TEXT_ID]
    );
    assert_ne!(ours[1], r.ids[1]);
    assert_eq!(
        ours[1].iter().filter(|&&x| x == START_OF_TEXT_ID).count(),
        1
    );
    // Final capital sigma: Python lowercases it to ς at the end of a word, `tokenizers` to σ.
    assert_eq!(r.ids[2], r.ids[3]);
    assert_eq!(ours[2], ours[4]);
    assert_ne!(ours[2], r.ids[2]);
    assert_eq!(ours[3], r.ids[3]);
    assert_eq!(ours[4], r.ids[4]);
    println!("known differences confirmed: special-token spelling, final sigma");

    let Some(vocabs) = vocabularies() else { return };
    let mut total = 0;
    let mut total_same = 0;
    let mut total_cleaning = Vec::new();
    for (name, entries) in &vocabs {
        let ours = encode(&tokenizer, entries);
        let r = reference_tokens(&python, &open_clip, entries);
        let mut same = 0;
        let text_changed = (0..entries.len())
            .filter(|&i| r.cleaned[i] != r.plain[i])
            .count();
        for (i, entry) in entries.iter().enumerate() {
            match judge(&ours[i], &r, i) {
                Verdict::Same => same += 1,
                Verdict::CleaningOnly => {
                    total_cleaning.push((name.clone(), entry.clone(), r.cleaned[i].clone()))
                }
                Verdict::Different => panic!(
                    "{name}: {entry:?} gives {:?}, open_clip {:?}",
                    ours[i], r.ids[i]
                ),
            }
        }
        println!(
            "{name}: {same}/{} entries identical to open_clip ({text_changed} entries read differently after ftfy/HTML)",
            entries.len()
        );
        total += entries.len();
        total_same += same;
    }
    println!(
        "vocabularies: {total_same}/{total} identical; {} differ only through ftfy/HTML:",
        total_cleaning.len()
    );
    for (name, entry, cleaned) in &total_cleaning {
        println!("  {name}: {entry:?} (the reference reads {cleaned:?})");
    }
    // Entries that ftfy / HTML unescaping changes are rare in word lists.
    assert!(
        total_cleaning.len() * 1000 < total,
        "{} of {total} entries depend on ftfy/HTML",
        total_cleaning.len()
    );
}

// ---------------------------------------------------------------------------------------------
// candle's CLIP against the NumPy oracle

/// `ClipConfig` from a Hugging Face `config.json` (candle's config types are not serde types).
fn clip_config_from_hf(v: &serde_json::Value) -> ClipConfig {
    let n = |x: &serde_json::Value| x.as_u64().unwrap() as usize;
    let t = &v["text_config"];
    let vi = &v["vision_config"];
    assert_eq!(t["hidden_act"], "quick_gelu");
    assert_eq!(vi["hidden_act"], "quick_gelu");
    ClipConfig {
        text_config: ClipTextConfig {
            vocab_size: n(&t["vocab_size"]),
            embed_dim: n(&t["hidden_size"]),
            activation: Activation::QuickGelu,
            intermediate_size: n(&t["intermediate_size"]),
            max_position_embeddings: n(&t["max_position_embeddings"]),
            pad_with: None,
            num_hidden_layers: n(&t["num_hidden_layers"]),
            num_attention_heads: n(&t["num_attention_heads"]),
            projection_dim: n(&v["projection_dim"]),
        },
        vision_config: ClipVisionConfig {
            embed_dim: n(&vi["hidden_size"]),
            activation: Activation::QuickGelu,
            intermediate_size: n(&vi["intermediate_size"]),
            num_hidden_layers: n(&vi["num_hidden_layers"]),
            num_attention_heads: n(&vi["num_attention_heads"]),
            projection_dim: n(&v["projection_dim"]),
            num_channels: n(&vi["num_channels"]),
            image_size: n(&vi["image_size"]),
            patch_size: n(&vi["patch_size"]),
        },
        logit_scale_init_value: v["logit_scale_init_value"].as_f64().unwrap() as f32,
        image_size: n(&vi["image_size"]),
    }
}

/// Largest |a − b| and largest per-row max|a − b| / max|b|.
fn diffs(ours: &[Vec<f32>], reference: &[Vec<f64>]) -> (f64, f64) {
    assert_eq!(ours.len(), reference.len());
    let mut max_abs = 0f64;
    let mut max_rel = 0f64;
    for (a, b) in ours.iter().zip(reference) {
        assert_eq!(a.len(), b.len());
        let row_abs = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y).abs())
            .fold(0f64, f64::max);
        let scale = b.iter().map(|y| y.abs()).fold(0f64, f64::max);
        max_abs = max_abs.max(row_abs);
        max_rel = max_rel.max(row_abs / scale);
    }
    (max_abs, max_rel)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

/// Pads each id list with the end token to `len` (the text tower pools at the first end token
/// and its mask is causal, so what follows cannot change the features).
fn pad(ids: &[Vec<u32>], len: usize) -> Vec<Vec<u32>> {
    ids.iter()
        .map(|row| {
            let mut r = row.clone();
            r.resize(len, END_OF_TEXT_ID);
            r
        })
        .collect()
}

fn ids_tensor(ids: &[Vec<u32>]) -> Tensor {
    let len = ids[0].len();
    let flat: Vec<u32> = ids.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (ids.len(), len), &Device::Cpu).unwrap()
}

const TOLERANCE: f64 = 1e-4;

/// candle-transformers' CLIP with the weights of `model_dir` (F32 on the CPU).
fn load_clip(model_dir: &Path, config: &ClipConfig) -> ClipModel {
    // SAFETY: the tests write the weights file and do not modify it while it is mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[model_dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    ClipModel::new(vb, config).unwrap()
}

#[test]
fn candle_clip_matches_numpy_oracle() {
    let (Some(bpe), Some(python)) = (bpe_file(), common::test_python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokenizer_json = dir.path().join("tokenizer.json");
    write_clip_tokenizer_json(&bpe, &tokenizer_json).unwrap();
    let model_dir = dir.path().join("tiny-clip");
    let cfg = TinyClipConfig::default();
    write_random_clip(&model_dir, &cfg, 20260101, Some(&tokenizer_json)).unwrap();

    // Load the way a real model is loaded: config.json, model.safetensors, tokenizer.json.
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json")).unwrap())
            .unwrap();
    let config = clip_config_from_hf(&hf);
    let device = Device::Cpu;
    let model = load_clip(&model_dir, &config);
    let tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).unwrap();

    // Images: a batch of random "preprocessed" pixels (unit scale, as after CLIP's normalisation).
    let batch = 3;
    let side = cfg.vision.image_size;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let pixels: Vec<f32> = (0..batch * 3 * side * side)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let pixels_npy = dir.path().join("pixels.npy");
    let pixel_bytes: Vec<u8> = pixels.iter().flat_map(|x| x.to_le_bytes()).collect();
    common::write_npy_array(&pixels_npy, "<f4", &[batch, 3, side, side], &pixel_bytes);
    let pixel_tensor = Tensor::from_vec(pixels, (batch, 3, side, side), &device).unwrap();
    let image_features = rows(&model.get_image_features(&pixel_tensor).unwrap());

    // Texts of different lengths, one cut to 77 tokens.
    let short: Vec<String> = [
        "a photo of a cat",
        "",
        "Two dogs' toys: 3 balls & a frisbee on the grass!",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut mixed = short.clone();
    mixed.push("a photo of a very very large dog. ".repeat(20));
    let short_ids = encode(&tokenizer, &short);
    let mixed_ids = encode(&tokenizer, &mixed);
    let longest = short_ids.iter().map(Vec::len).max().unwrap();
    assert!(longest < CONTEXT_LENGTH);
    assert_eq!(mixed_ids.last().unwrap().len(), CONTEXT_LENGTH);
    let batches = [
        (
            "short texts padded to the longest",
            pad(&short_ids, longest),
        ),
        ("short texts padded to 77", pad(&short_ids, CONTEXT_LENGTH)),
        ("mixed texts padded to 77", pad(&mixed_ids, CONTEXT_LENGTH)),
    ];

    let mut script_args: Vec<std::ffi::OsString> = vec![
        oracle("clip_numpy.py").into(),
        model_dir.clone().into(),
        "--pixels".into(),
        pixels_npy.clone().into(),
        "--image-out".into(),
        dir.path().join("image_out.npy").into(),
    ];
    let run_oracle = |args: &[std::ffi::OsString]| {
        run_python(
            &python,
            &args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        )
    };
    run_oracle(&script_args);
    let (d, image_ref) = read_npy_f64_rows(&dir.path().join("image_out.npy"));
    assert_eq!((image_ref.len(), d), (batch, cfg.projection_dim));
    let (abs, rel) = diffs(&image_features, &image_ref);
    println!("image features, {batch} images {side}x{side}: max |diff| {abs:.3e}, max relative {rel:.3e}");
    assert!(abs <= TOLERANCE, "image features differ by {abs}");

    let mut worst = 0f64;
    for (k, (label, ids)) in batches.iter().enumerate() {
        let ids_npy = dir.path().join(format!("ids{k}.npy"));
        let out_npy = dir.path().join(format!("text{k}.npy"));
        let bytes: Vec<u8> = ids
            .iter()
            .flatten()
            .flat_map(|&x| (x as i64).to_le_bytes())
            .collect();
        common::write_npy_array(&ids_npy, "<i8", &[ids.len(), ids[0].len()], &bytes);
        script_args.truncate(2);
        script_args.extend([
            "--ids".into(),
            ids_npy.into(),
            "--text-out".into(),
            out_npy.clone().into(),
        ]);
        run_oracle(&script_args);
        let (d, reference) = read_npy_f64_rows(&out_npy);
        assert_eq!((reference.len(), d), (ids.len(), cfg.projection_dim));

        let batched = rows(&model.get_text_features(&ids_tensor(ids)).unwrap());
        let (abs, rel) = diffs(&batched, &reference);
        println!(
            "text features, {label} ({} ids each): max |diff| {abs:.3e}, max relative {rel:.3e}",
            ids[0].len()
        );
        assert!(abs <= TOLERANCE, "{label}: text features differ by {abs}");
        worst = worst.max(abs);

        // Each text alone, unpadded, gives the same features as in the padded batch.
        let unpadded = if k == 2 { &mixed_ids } else { &short_ids };
        let alone: Vec<Vec<f32>> = unpadded
            .iter()
            .map(|row| {
                rows(
                    &model
                        .get_text_features(&ids_tensor(std::slice::from_ref(row)))
                        .unwrap(),
                )
                .remove(0)
            })
            .collect();
        let (abs, rel) = diffs(&alone, &reference);
        println!("  each text alone, unpadded: max |diff| {abs:.3e}, max relative {rel:.3e}");
        assert!(abs <= TOLERANCE, "{label}: unpadded texts differ by {abs}");
    }
    println!("text features: worst max |diff| {worst:.3e} (tolerance {TOLERANCE:e})");

    // The comparison bites: another seed gives clearly different features.
    let other_dir = dir.path().join("other");
    write_random_clip(&other_dir, &cfg, 20260102, None).unwrap();
    let other = load_clip(&other_dir, &config);
    let other_text = rows(&other.get_text_features(&ids_tensor(&batches[0].1)).unwrap());
    let (_, reference) = read_npy_f64_rows(&dir.path().join("text0.npy"));
    assert_eq!(reference.len(), other_text.len());
    let (abs, _) = diffs(&other_text, &reference);
    assert!(
        abs > 0.1,
        "a different model should not agree with the oracle ({abs})"
    );
    let other_image = rows(&other.get_image_features(&pixel_tensor).unwrap());
    let (abs, _) = diffs(&other_image, &image_ref);
    assert!(
        abs > 0.1,
        "a different model should not agree with the oracle ({abs})"
    );
}
