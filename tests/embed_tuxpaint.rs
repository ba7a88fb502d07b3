//! The shipped experiment `experiments/tuxpaint.toml` end to end through the binary, offline, on
//! the real Tux Paint stamps: images with the small random CLIP, captions with the real
//! all-MiniLM-L6-v2, SAEs, top-k scores, names and a linear probe on the categories. Expected
//! counts are worked out here from the stamps folder itself, not copied from a run.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{json_of, output_json, output_lines, table_rows, tiny_clip, with_status, Env};
use msae::embed::clip_bpe::write_clip_tokenizer_json;

const STAMPS: &str = "/usr/share/tuxpaint/stamps";

/// Captioned pictures (a PNG with a `.txt` beside it) and the category folder of each.
fn captioned_stamps(root: &Path) -> BTreeMap<PathBuf, String> {
    common::walk(root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png") && p.with_extension("txt").is_file())
        .map(|p| {
            let category = p
                .parent()
                .unwrap()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (p, category)
        })
        .collect()
}

fn metric(row: &serde_json::Value, name: &str) -> f64 {
    row[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric {name} in {row}"))
}

#[test]
fn the_tuxpaint_experiment_runs_offline_from_pictures_to_probe() {
    let (Some(stamps), Some(minilm), Some(bpe)) = (
        common::debian_data(STAMPS, "tuxpaint-stamps-default"),
        common::test_asset("all-MiniLM-L6-v2"),
        common::test_asset("open_clip/bpe_simple_vocab_16e6.txt.gz"),
    ) else {
        return;
    };
    let env = Env::new();
    let shipped = common::repo_path("experiments/tuxpaint.toml");
    let toml = std::fs::read_to_string(&shipped).unwrap();
    let exp = env.write("tuxpaint.toml", &toml);
    // What scripts/tuxpaint-setup.sh makes beside the experiment file.
    let models = env.path("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(&minilm, models.join("all-MiniLM-L6-v2")).unwrap();
    let tokenizer = env.path("tokenizer.json");
    write_clip_tokenizer_json(&bpe, &tokenizer).unwrap();
    let clip = models.join("test-clip");
    tiny_clip(&clip, Some(&tokenizer));

    let summary = json_of(
        &env.offline()
            .args(["run", "--json", exp.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let ran = with_status(&summary, "ran");
    assert_eq!(ran.len(), 20, "every instance runs: {summary}");

    // Every captioned picture becomes one row, on exactly one side of the split.
    let expected = captioned_stamps(&stamps);
    let pictures = common::walk(&stamps)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    let embeds = table_rows(&env, &exp, "embed");
    let rows_of = |prefix: &str| -> usize {
        embeds
            .iter()
            .filter(|r| r["instance"].as_str().unwrap().starts_with(prefix))
            .map(|r| metric(r, "rows") as usize)
            .sum()
    };
    assert_eq!(rows_of("stamps["), expected.len());
    assert_eq!(rows_of("captions["), expected.len());
    let skipped: usize = embeds
        .iter()
        .filter(|r| r["instance"].as_str().unwrap().starts_with("stamps["))
        .map(|r| metric(r, "skipped") as usize)
        .sum();
    assert_eq!(
        skipped,
        pictures - expected.len(),
        "pictures without a caption"
    );

    // Labels are the category folders; the two sides together hold every captioned category.
    let labels = |instance: &str| output_lines(&env, "tuxpaint", instance, "labels");
    let (train_labels, eval_labels) = (
        labels("stamps[split=train]"),
        labels("stamps[split=holdout]"),
    );
    let all: BTreeSet<String> = train_labels.iter().chain(&eval_labels).cloned().collect();
    let want: BTreeSet<String> = expected.values().cloned().collect();
    assert_eq!(all, want);
    assert_eq!(
        labels("captions[split=train]"),
        train_labels,
        "both encoders see the same rows in the same order"
    );
    // Each row names its picture (the path in the stamps folder) and has one thumbnail; the two
    // sides together name every captioned picture once.
    let mut named = BTreeSet::new();
    for side in ["stamps[split=train]", "stamps[split=holdout]"] {
        let items = output_lines(&env, "tuxpaint", side, "items");
        let rows = labels(side).len();
        assert_eq!(items.len(), rows, "{side}");
        let archive =
            std::fs::read(common::output_file(&env, "tuxpaint", side, "thumbnails")).unwrap();
        let members: Vec<String> = tar::Archive::new(archive.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        let want: Vec<String> = (0..rows).map(|r| format!("{r}.jpg")).collect();
        assert_eq!(members, want, "{side}: one thumbnail per row");
        named.extend(items.into_iter().map(|i| stamps.join(i)));
    }
    assert_eq!(
        named,
        expected.keys().cloned().collect::<BTreeSet<PathBuf>>()
    );
    let seen: BTreeSet<&String> = train_labels.iter().collect();
    let unseen = eval_labels.iter().filter(|l| !seen.contains(l)).count();

    // The probe on MiniLM's caption embeddings finds the categories far above chance (1/121);
    // held-out rows of categories absent from training are counted, not silently used.
    let probes = table_rows(&env, &exp, "linear_probe");
    assert_eq!(probes.len(), 4);
    for row in &probes {
        assert_eq!(metric(row, "eval_dropped") as usize, unseen, "{row}");
        let agreement = metric(row, "agreement");
        assert!((0.0..=1.0).contains(&agreement), "{row}");
        if row["instance"]
            .as_str()
            .unwrap()
            .starts_with("caption_probe")
        {
            assert!(metric(row, "macro_f1") > 0.2, "{row}");
        }
    }

    // Names are captions of the training pictures.
    let captions: BTreeSet<String> =
        output_lines(&env, "tuxpaint", "captions[split=train]", "texts")
            .into_iter()
            .collect();
    let names = output_json(&env, "tuxpaint", "caption_names[arch=topk,k=16]", "names");
    let names = names.as_array().unwrap();
    assert_eq!(names.len(), 384 * 4, "one name per latent");
    assert!(names
        .iter()
        .all(|n| captions.contains(n["word"].as_str().unwrap())));

    // Scores on the held-out rows: one row per SAE (two image, two caption SAEs), each k a
    // column (empty where k exceeds that SAE's latents), with FVUs that are finite and
    // non-negative.
    let scores = table_rows(&env, &exp, "score_topk");
    let mut scored: Vec<&str> = scores
        .iter()
        .map(|r| r["instance"].as_str().unwrap().split('[').next().unwrap())
        .collect();
    scored.sort_unstable();
    assert_eq!(
        scored,
        [
            "caption_scores",
            "caption_scores",
            "image_scores",
            "image_scores"
        ],
        "{scores:?}"
    );
    for row in &scores {
        let fvus: Vec<f64> = row
            .as_object()
            .unwrap()
            .iter()
            .filter(|(col, v)| col.starts_with("fvu@") && !v.is_null())
            .map(|(col, v)| v.as_f64().unwrap_or_else(|| panic!("{col}: {v} in {row}")))
            .collect();
        assert!(!fvus.is_empty(), "{row}");
        assert!(fvus.iter().all(|f| f.is_finite() && *f >= 0.0), "{row}");
    }

    // With the same CLIP found in a Hugging Face cache under a hub id, the file runs unchanged
    // but for the model name — and the same weights give the same keys, so nothing reruns.
    let hub = env.path("hub");
    common::hub_cache_layout(&hub, "openai/clip-vit-base-patch32", "5a7b0c1d", &clip);
    let renamed = toml.replace(
        "model = \"models/test-clip\"",
        "model = \"openai/clip-vit-base-patch32\"",
    );
    assert_ne!(renamed, toml, "the experiment names the test CLIP once");
    let exp2 = env.write("tuxpaint.toml", &renamed);
    let summary = json_of(
        &env.offline_hub(&hub)
            .args(["run", "--json", exp2.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert_eq!(with_status(&summary, "cached").len(), 20, "{summary}");
}
