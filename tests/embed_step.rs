//! The `embed` step through the binary: real text model against the shipped matrices, a small
//! random CLIP (both towers) against an independent NumPy forward pass with Pillow's pixels,
//! resume after kill -9, skipped items, the hub cache offline, and the paper's experiment files.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    assert_fails_with, npy_f32, oracle, output_file, output_json, output_lines, png_image,
    run_python, text, tiny_clip, Env,
};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_embeddings_match_the_shipped_matrices_row_by_row() {
    let (Some(model), Some(vocab_texts), Some(vocab_npy), Some(gloss_texts), Some(gloss_npy)) = (
        common::test_asset("all-MiniLM-L6-v2"),
        common::shared_data("mscoco_minilm_12833.texts.txt"),
        common::shared_data("mscoco_minilm_12833_384.npy"),
        common::shared_data("wordnet_lexname_test_3667.texts.txt"),
        common::shared_data("wordnet_lexname_test_3667_384.npy"),
    ) else {
        return;
    };
    let env = Env::new();
    let exp = env.write(
        "minilm.toml",
        &format!(
            r#"[experiment]
name = "minilm"

[experiment.defaults.embed]
model = "{}"
source = "text"

[steps.vocab]
kind = "embed"
path = "{}"

[steps.glosses]
kind = "embed"
path = "{}"
limit = 1000
"#,
            model.display(),
            vocab_texts.display(),
            gloss_texts.display()
        ),
    );
    env.run_json(&exp);
    let mut worst = 1.0f64;
    let mut max_diff = 0f32;
    let mut compared = 0;
    for (instance, reference, rows) in
        [("vocab", &vocab_npy, 12_833), ("glosses", &gloss_npy, 1000)]
    {
        let (n, d, ours) = npy_f32(&output_file(&env, "minilm", instance, "matrix"));
        let (_, _, theirs) = npy_f32(reference);
        assert_eq!((n, d), (rows, 384), "{instance}");
        for r in 0..n {
            let c = cosine(&ours[r * d..(r + 1) * d], &theirs[r * d..(r + 1) * d]);
            worst = worst.min(c);
        }
        for (a, b) in ours.iter().zip(&theirs) {
            max_diff = max_diff.max((a - b).abs());
        }
        compared += n;
        // The texts output is the file's entries, one per row (the empty entry included).
        let texts =
            std::fs::read_to_string(output_file(&env, "minilm", instance, "texts")).unwrap();
        assert_eq!(texts.lines().count(), rows);
    }
    eprintln!("all-MiniLM-L6-v2 through msae vs the shipped matrices: {compared} rows, minimum cosine {worst:.8}, max |diff| {max_diff:.1e}");
    assert!(worst >= 0.99999, "minimum cosine {worst}");
}

/// Texts with upper case, accents, punctuation and rare words, so that normalisation and
/// WordPiece splitting are exercised as well as the model.
const MINILM_TEXTS: [&str; 6] = [
    "a photo of a cat.",
    "Café au lait, s'il vous plaît!",
    "The QUICK brown fox jumps over the lazy dog",
    "unbelievably transcontinental embeddings",
    "3.14 is close to pi (roughly)",
    "x",
];

#[test]
fn minilm_embeddings_agree_with_an_independent_numpy_computation() {
    let (Some(model), Some(python)) = (
        common::test_asset("all-MiniLM-L6-v2"),
        common::test_python(),
    ) else {
        return;
    };
    let env = Env::new();
    env.write("texts.txt", &(MINILM_TEXTS.join("\n") + "\n"));
    let exp = env.write(
        "minilm.toml",
        &format!(
            "[experiment]\nname = \"minilm\"\n\n[steps.t]\nkind = \"embed\"\nmodel = \"{}\"\nsource = \"text\"\npath = \"texts.txt\"\n",
            model.display()
        ),
    );
    env.run_json(&exp);
    let (n, d, ours) = npy_f32(&output_file(&env, "minilm", "t", "matrix"));
    assert_eq!((n, d), (MINILM_TEXTS.len(), 384));
    run_python(
        &python,
        &[
            oracle("minilm_numpy.py").as_os_str(),
            model.as_os_str(),
            env.path("texts.txt").as_os_str(),
            env.path("numpy.npy").as_os_str(),
        ],
    );
    let (rows, cols, theirs) = common::read_npy_f64(&env.path("numpy.npy"));
    assert_eq!((rows, cols), (n, d));
    let mut worst = 0f64;
    for (a, b) in ours.iter().zip(&theirs) {
        worst = worst.max((*a as f64 - b).abs());
    }
    eprintln!("all-MiniLM-L6-v2, msae vs float64 NumPy: largest difference {worst:.2e}");
    assert!(worst < 5e-6, "largest difference {worst}");
}

/// An image folder: `n` PNGs in two class folders with captions, one corrupt file, one image
/// without a caption.
fn image_folder(root: &Path, n: u32) {
    for i in 0..n {
        let class = if i % 2 == 0 { "cats" } else { "dogs/small" };
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("img{i:03}");
        std::fs::write(
            dir.join(format!("{name}.png")),
            png_image(40 + i % 7, 30 + i % 5, i, i % 3 == 0),
        )
        .unwrap();
        if i != 5 {
            std::fs::write(
                dir.join(format!("{name}.txt")),
                format!("picture number {i}\nfr.utf8=image {i}\n"),
            )
            .unwrap();
        }
    }
    std::fs::write(root.join("cats/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
}

/// A store with the tiny CLIP and an [`image_folder`] `photos` of `images` pictures, and the
/// experiment that embeds them in parts of `part_size` rows.
fn image_store(images: u32, part_size: usize) -> (Env, PathBuf) {
    let env = Env::new();
    tiny_clip(&env.path("clip"), None);
    image_folder(&env.path("photos"), images);
    let exp = env.write(
        "images.toml",
        &format!(
            r#"[experiment]
name = "images"

[steps.photos]
kind = "embed"
model = "clip"
source = "images"
path = "photos"
batch_size = 4
part_size = {part_size}
"#
        ),
    );
    (env, exp)
}

#[test]
fn an_image_folder_is_embedded_with_labels_captions_and_a_report_of_skipped_items() {
    let (env, exp) = image_store(12, 5);
    env.run_json(&exp);
    let (rows, cols, values) = npy_f32(&output_file(&env, "images", "photos", "matrix"));
    // 12 images + 1 corrupt file; the image without a caption is embedded (image tower only).
    assert_eq!((rows, cols), (12, 48));
    assert!(values.iter().all(|v| v.is_finite()));
    let labels = output_lines(&env, "images", "photos", "labels");
    assert_eq!(labels.len(), 12);
    assert_eq!(labels.iter().filter(|l| **l == "cats").count(), 6);
    assert_eq!(labels.iter().filter(|l| **l == "dogs/small").count(), 6);
    let texts = std::fs::read_to_string(output_file(&env, "images", "photos", "texts")).unwrap();
    assert!(texts.lines().any(|l| l == "picture number 0"), "{texts}");
    assert_eq!(
        texts.lines().filter(|l| l.is_empty()).count(),
        1,
        "the uncaptioned image has an empty text"
    );
    let report = output_json(&env, "images", "photos", "report");
    assert_eq!(report["positions"], 13);
    assert_eq!(report["rows"], 12);
    assert_eq!(report["skipped"], 1);
    let skipped = &report["skipped_items"][0];
    assert_eq!(skipped["key"], "cats/broken.png");
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("cannot decode"),
        "{skipped}"
    );
    // Unchanged inputs: cached. A changed image: embedded again.
    let again = env.run_json(&exp);
    assert_eq!(common::with_status(&again, "cached").len(), 1);
    std::fs::write(
        env.path("photos/cats/img000.png"),
        png_image(33, 33, 99, false),
    )
    .unwrap();
    let third = env.run_json(&exp);
    assert_eq!(
        common::with_status(&third, "ran"),
        vec!["photos".to_string()]
    );
}

#[test]
fn an_embed_killed_mid_run_resumes_at_its_last_part_with_identical_output() {
    let (env, exp) = image_store(160, 8);
    // An uninterrupted run in its own store.
    let clean = Env::new();
    let out = clean
        .command()
        .current_dir(env.dir.path())
        .args(["run", "--json", exp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Every output that is joined from the parts: embeddings, row references, thumbnails.
    let joined = ["matrix", "items", "labels", "thumbnails"];
    let bytes_of = |env: &Env| -> Vec<Vec<u8>> {
        joined
            .iter()
            .map(|o| std::fs::read(output_file(env, "images", "photos", o)).unwrap())
            .collect()
    };
    let reference = bytes_of(&clean);

    let mut child = env.spawn(
        &["run", "-q", exp.to_str().unwrap()],
        Stdio::null(),
        Stdio::null(),
    );
    let partial = env.cache().join("partial");
    let started = Instant::now();
    let finished_parts = |dir: &Path| -> usize {
        common::walk(dir)
            .iter()
            .filter(|p| {
                p.to_string_lossy().ends_with(".json") && p.to_string_lossy().contains("part-")
            })
            .count()
    };
    while finished_parts(&partial) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no part was finished in time"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("the run finished before it could be interrupted; make the data larger");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let parts_before = finished_parts(&partial);
    assert!(parts_before >= 3);

    env.run_json(&exp);
    let resumed = bytes_of(&env);
    for (output, (a, b)) in joined.iter().zip(resumed.iter().zip(&reference)) {
        assert!(
            a == b,
            "the resumed embed's `{output}` differs from the uninterrupted one's"
        );
    }
    assert_eq!(
        common::lines_of(&output_file(&env, "images", "photos", "items")).len(),
        160
    );
    let report = output_json(&env, "images", "photos", "report");
    let resumed_parts = report["throughput"]["resumed_parts"].as_u64().unwrap();
    assert!(
        resumed_parts >= 3,
        "resumed after {resumed_parts} parts: {report}"
    );
    assert_eq!(report["rows"], 160);
    eprintln!("killed after {parts_before} finished parts; the rerun resumed after {resumed_parts} and gave identical bytes ({})", joined.join(", "));
}

#[test]
fn a_hub_model_missing_offline_names_where_msae_looked() {
    let env = Env::new();
    std::fs::write(env.path("words.txt"), "cat\ndog\n").unwrap();
    let exp = env.write(
        "missing.toml",
        r#"[experiment]
name = "missing"
[steps.words]
kind = "embed"
model = "someone/no-such-model"
source = "text"
path = "words.txt"
"#,
    );
    let out = env
        .offline_hub(&env.path("hub"))
        .args(["run", exp.to_str().unwrap()])
        .output()
        .unwrap();
    // The message names the model, the hub cache where msae looked, and the offline switch.
    assert_fails_with(
        &out,
        &[
            "someone/no-such-model",
            "was not found",
            &env.path("hub").display().to_string(),
            "HF_HUB_OFFLINE",
        ],
    );
}

#[test]
fn a_small_clip_from_the_hub_cache_agrees_with_numpy_on_both_towers() {
    let (Some(python), Some(bpe)) = (
        common::test_python(),
        common::test_asset("open_clip/bpe_simple_vocab_16e6.txt.gz"),
    ) else {
        return;
    };
    let env = Env::new();
    let tokenizer = env.path("tokenizer.json");
    msae::embed::clip_bpe::write_clip_tokenizer_json(&bpe, &tokenizer).unwrap();
    tiny_clip(&env.path("model"), Some(&tokenizer));
    let hub = env.path("hub");
    common::hub_cache_layout(&hub, "tests/tiny-clip", "0123abcd", &env.path("model"));
    // Real photos where available (RGBA, odd sizes), else generated ones.
    let photos = env.path("photos");
    match common::debian_data(
        "/usr/share/tuxpaint/stamps/animals/birds",
        "tuxpaint-stamps-default",
    ) {
        Some(dir) => {
            std::fs::create_dir_all(photos.join("birds")).unwrap();
            let mut pngs: Vec<PathBuf> = common::walk(&dir)
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "png"))
                .collect();
            pngs.sort();
            for p in pngs.iter().take(6) {
                std::fs::copy(p, photos.join("birds").join(p.file_name().unwrap())).unwrap();
            }
        }
        None => image_folder(&photos, 6),
    }
    let captions = [
        "a photo of a cat.",
        "A Bird, sitting on a branch!",
        "",
        "two dogs and 3 cats playing in the snow near a red house",
    ];
    std::fs::write(env.path("captions.txt"), captions.join("\n")).unwrap();
    let exp = env.write(
        "clip.toml",
        r#"[experiment]
name = "clip"
[experiment.defaults.embed]
model = "tests/tiny-clip"
[steps.images]
kind = "embed"
source = "images"
path = "photos"
tower = "image"
[steps.texts]
kind = "embed"
source = "text"
path = "captions.txt"
"#,
    );
    let out = env
        .offline_hub(&hub)
        .args(["run", "--json", exp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let status = env
        .offline_hub(&hub)
        .args(["table", exp.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert!(
        text(&status).contains("tests/tiny-clip@0123abcd"),
        "the resolved commit is recorded: {}",
        text(&status)
    );

    // The oracle: Pillow's pixels and tensors, then a float64 NumPy CLIP.
    let mut files: Vec<PathBuf> = common::walk(&photos)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    let items: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            serde_json::json!({"file": f, "background": [255, 255, 255], "size": 224, "crop": true,
                "order": "horizontal-first",
                "tensor": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}})
        })
        .collect();
    let manifest = env.path("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap(),
    )
    .unwrap();
    let oracle_dir = env.path("oracle");
    std::fs::create_dir_all(&oracle_dir).unwrap();
    run_python(
        &python,
        &[
            oracle("pillow_preprocess.py").as_os_str(),
            "pixels".as_ref(),
            manifest.as_os_str(),
            oracle_dir.as_os_str(),
        ],
    );
    let tensors = std::fs::read(oracle_dir.join("tensors.bin")).unwrap();
    let pixels = env.path("pixels.npy");
    common::write_npy_array(&pixels, "<f4", &[files.len(), 3, 224, 224], &tensors);
    let tok = tokenizers::Tokenizer::from_file(&tokenizer).unwrap();
    let encoded: Vec<Vec<u32>> = captions
        .iter()
        .map(|c| tok.encode(*c, true).unwrap().get_ids().to_vec())
        .collect();
    let len = encoded.iter().map(Vec::len).max().unwrap();
    let ids: Vec<u8> = encoded
        .iter()
        .flat_map(|e| (0..len).map(move |i| *e.get(i).unwrap_or(&49407) as i64))
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let ids_path = env.path("ids.npy");
    common::write_npy_array(&ids_path, "<i8", &[captions.len(), len], &ids);
    let (image_out, text_out) = (env.path("image_oracle.npy"), env.path("text_oracle.npy"));
    run_python(
        &python,
        &[
            oracle("clip_numpy.py").as_os_str(),
            env.path("model").as_os_str(),
            "--pixels".as_ref(),
            pixels.as_os_str(),
            "--image-out".as_ref(),
            image_out.as_os_str(),
            "--ids".as_ref(),
            ids_path.as_os_str(),
            "--text-out".as_ref(),
            text_out.as_os_str(),
        ],
    );
    for (instance, oracle) in [("images", &image_out), ("texts", &text_out)] {
        let (rows, cols, ours) = npy_f32(&output_file(&env, "clip", instance, "matrix"));
        let (_, theirs) = common::read_npy_f64_rows(oracle);
        assert_eq!(rows, theirs.len(), "{instance}");
        let mut max_abs = 0f64;
        let mut max_ref = 0f64;
        for (r, row) in theirs.iter().enumerate() {
            for (c, t) in row.iter().enumerate() {
                max_abs = max_abs.max((ours[r * cols + c] as f64 - t).abs());
                max_ref = max_ref.max(t.abs());
            }
        }
        eprintln!("{instance}: {rows} rows × {cols}, max |msae − NumPy float64| = {max_abs:.3e} (largest value {max_ref:.2})");
        assert!(max_abs <= 1e-4, "{instance}: {max_abs}");
    }
}

#[test]
fn the_paper_experiments_plan_every_instance() {
    let env = Env::new();
    for file in ["vit_l14.toml", "vit_b16.toml"] {
        let path = common::repo_path("experiments/paper").join(file);
        let out = env
            .offline_hub(&env.path("empty-hub"))
            .args(["plan", "--json", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", text(&out));
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let count = |step: &str| entries.iter().filter(|e| e["step"] == step).count();
        // 8 embeds; 36 SAEs (12 configurations × 3 expansions) + 3 second seeds; per SAE two
        // validations, two top-k scores, four namings and a probe; 3 alignments.
        assert_eq!(entries.len(), 374, "{file}");
        assert_eq!(count("sae"), 36);
        assert_eq!(count("validate"), 72);
        assert_eq!(count("name_disect"), 36);
        assert_eq!(count("align_msae"), 2);
        // Offline without the model, every embed says where it looked; the rest wait for them.
        let embeds: Vec<&serde_json::Value> =
            entries.iter().filter(|e| e["status"] == "error").collect();
        assert_eq!(embeds.len(), 8, "{file}");
        assert!(
            embeds[0]["reasons"][0]["message"]
                .as_str()
                .unwrap()
                .contains("openai/clip-vit-"),
            "{:?}",
            embeds[0]
        );
    }
    // The applications: concept search on ImageNet validation, the CelebA bias analysis.
    let applications = [
        // file, instances, embeds (the failing ones offline), instances of the last step
        ("concept_search_vit_l14.toml", 6, 3, "search"),
        ("celeba_bias_vit_l14.toml", 10, 5, "bias_probe"),
    ];
    for (file, instances, embeds, last) in applications {
        let path = common::repo_path("experiments/paper").join(file);
        let out = env
            .offline_hub(&env.path("empty-hub"))
            .args(["plan", "--json", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", text(&out));
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(entries.len(), instances, "{file}: {entries:?}");
        let failing: Vec<&serde_json::Value> =
            entries.iter().filter(|e| e["status"] == "error").collect();
        assert_eq!(failing.len(), embeds, "{file}: {entries:?}");
        assert!(
            failing.iter().all(|e| e["reasons"][0]["message"]
                .as_str()
                .unwrap()
                .contains("openai/clip-vit-large-patch14")),
            "{file}: {failing:?}"
        );
        assert_eq!(
            entries.iter().filter(|e| e["step"] == last).count(),
            1,
            "{file}"
        );
    }
}
