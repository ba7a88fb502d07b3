//! What the `embed` step promises, each shown through the binary against an expectation the
//! test computes itself, with models and data the test writes (no downloads):
//! * `normalize = true` gives the raw rows divided by their L2 norm, on both towers;
//! * several prompt templates give normalise(mean over templates of normalise(row)), where the
//!   rows come from single-template runs;
//! * WebDataset and parquet shards give, row for row, the embeddings of the same images in a
//!   folder, with aligned texts and labels and the undecodable item reported;
//! * a parquet `group_column` (booleans, as CelebA's attributes are stored) becomes a `groups`
//!   output aligned with the rows and labels, and leaves the other outputs as they were;
//! * a Hugging Face dataset repository is read from the hub cache offline (`HF_HUB_CACHE` and
//!   `HF_HOME` layouts), and one that is not cached gets an error naming where msae looked;
//! * the content of the model's weights and tokenizer is part of the key, its folder name is not;
//! * a SigLIP model (both towers) agrees with candle-transformers' SigLIP called directly.

use crate::common;

use std::path::Path;

use common::{
    assert_fails_with, dataset_hub_layout, npy_f32, output_json, output_lines, pictures, text,
    tiny_clip_byte_level, write_folder, write_tar_shard, Env, Picture,
};
#[cfg(feature = "parquet")]
use common::{write_parquet_shard, write_text_parquet};

fn rows_of(v: &[f32], d: usize) -> Vec<&[f32]> {
    v.chunks(d).collect()
}

fn norm(row: &[f32]) -> f64 {
    row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn normalised(row: &[f32]) -> Vec<f64> {
    let n = norm(row);
    row.iter().map(|x| *x as f64 / n).collect()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// The `report` output of an embed instance.
fn report(env: &Env, exp: &str, instance: &str) -> serde_json::Value {
    output_json(env, exp, instance, "report")
}

#[test]
fn normalize_divides_each_row_by_its_norm_on_both_towers() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    write_folder(&env.path("photos"), &pictures(7));
    let exp = env.write(
        "norm.toml",
        r#"[experiment]
name = "norm"
[experiment.defaults.embed]
model = "clip"
source = "images"
path = "photos"
tower = "both"
batch_size = 3
[steps.raw]
kind = "embed"
[steps.unit]
kind = "embed"
normalize = true
"#,
    );
    env.run_json(&exp);
    for output in ["matrix", "text_matrix"] {
        let (n, d, raw) = npy_f32(&common::output_file(&env, "norm", "raw", output));
        let (n2, d2, unit) = npy_f32(&common::output_file(&env, "norm", "unit", output));
        assert_eq!((n, d), (7, 48), "{output}");
        assert_eq!((n2, d2), (n, d), "{output}");
        let norms: Vec<f64> = rows_of(&raw, d).iter().map(|r| norm(r)).collect();
        // The raw rows are far from unit length, so a run that ignored `normalize` would fail.
        let closest = norms
            .iter()
            .map(|x| (x - 1.0).abs())
            .fold(f64::MAX, f64::min);
        assert!(closest > 0.05, "{output}: a raw norm is near 1: {norms:?}");
        let mut worst = 0f64;
        for (r, u) in rows_of(&raw, d).iter().zip(rows_of(&unit, d)) {
            worst = worst.max(max_abs_diff(u, &normalised(r)));
            assert!((norm(u) - 1.0).abs() < 1e-6, "{output}: norm {}", norm(u));
        }
        let (lo, hi) = norms
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
        eprintln!(
            "{output}: raw norms {lo:.3}..{hi:.3}; max |normalised − raw/‖raw‖| = {worst:.2e}"
        );
        assert!(worst < 1e-6, "{output}: {worst}");
    }
    assert_eq!(report(&env, "norm", "unit")["normalize"], true);
}

#[test]
fn several_templates_average_the_normalised_single_template_rows() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let words = ["cat", "red fox", "Émile's house", "a tree in the snow", "x"];
    env.write("words.txt", &(words.join("\n") + "\n"));
    let templates = [
        "a photo of a {}.",
        "{}",
        "a drawing of {} in the dark, {} again",
    ];
    // The first template filled in by hand, embedded without templates.
    let filled: Vec<String> = words
        .iter()
        .map(|w| templates[0].replace("{}", w))
        .collect();
    env.write("filled.txt", &(filled.join("\n") + "\n"));
    let list = |ts: &[&str]| {
        let quoted: Vec<String> = ts.iter().map(|t| format!("{t:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut toml = String::from(
        "[experiment]\nname = \"tpl\"\n[experiment.defaults.embed]\nmodel = \"clip\"\nsource = \"text\"\npath = \"words.txt\"\nbatch_size = 4\n",
    );
    for (k, t) in templates.iter().enumerate() {
        toml += &format!(
            "[steps.single{k}]\nkind = \"embed\"\ntemplates = {}\n",
            list(&[t])
        );
    }
    toml += &format!(
        "[steps.averaged]\nkind = \"embed\"\ntemplates = {}\n",
        list(&templates)
    );
    toml += "[steps.filled]\nkind = \"embed\"\npath = \"filled.txt\"\n[steps.verbatim]\nkind = \"embed\"\n";
    let exp = env.write("tpl.toml", &toml);
    env.run_json(&exp);
    let get = |inst: &str| {
        let (n, d, v) = npy_f32(&common::output_file(&env, "tpl", inst, "matrix"));
        assert_eq!((n, d), (words.len(), 48), "{inst}");
        v
    };
    let d = 48;
    let singles: Vec<Vec<f32>> = (0..templates.len())
        .map(|k| get(&format!("single{k}")))
        .collect();

    // One template: the entry put into it, not averaged or normalised.
    let filled = get("filled");
    let first: Vec<f64> = singles[0].iter().map(|x| *x as f64).collect();
    let one = max_abs_diff(&filled, &first);
    assert!(one < 1e-5, "single template vs filled-in text: {one}");
    assert!(
        max_abs_diff(&get("verbatim"), &first) > 1e-2,
        "the template changes the rows"
    );

    let averaged = get("averaged");
    let mut worst = 0f64;
    // How far two wrong averages are from the expected rows: of the raw rows, and of the
    // normalised rows without normalising the mean.
    let (mut raw_margin, mut unnormalised_margin) = (0f64, 0f64);
    for i in 0..words.len() {
        let mut mean = vec![0f64; d];
        let mut mean_raw = vec![0f64; d];
        for s in &singles {
            let row = &s[i * d..(i + 1) * d];
            for (m, x) in mean.iter_mut().zip(normalised(row)) {
                *m += x / templates.len() as f64;
            }
            for (m, x) in mean_raw.iter_mut().zip(row) {
                *m += *x as f64 / templates.len() as f64;
            }
        }
        let n = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        let expected: Vec<f64> = mean.iter().map(|x| x / n).collect();
        let got = &averaged[i * d..(i + 1) * d];
        worst = worst.max(max_abs_diff(got, &expected));
        let raw: Vec<f32> = mean_raw.iter().map(|x| *x as f32).collect();
        let raw_normalised: Vec<f32> = normalised(&raw).iter().map(|x| *x as f32).collect();
        raw_margin = raw_margin.max(max_abs_diff(&raw_normalised, &expected));
        let unnormalised: Vec<f32> = mean.iter().map(|x| *x as f32).collect();
        unnormalised_margin = unnormalised_margin.max(max_abs_diff(&unnormalised, &expected));
    }
    eprintln!("templates: max |averaged − normalise(mean normalise(single))| = {worst:.2e}; an average of raw rows would be {raw_margin:.2e} off, an unnormalised mean {unnormalised_margin:.2e}; one template vs the filled-in text {one:.2e}");
    assert!(worst < 1e-6, "{worst}");
    assert!(
        raw_margin > 1e-4 && unnormalised_margin > 1e-4,
        "the test would not tell the wrong averages apart: {raw_margin}, {unnormalised_margin}"
    );
    // The texts output holds the entries, not the prompts.
    assert_eq!(output_lines(&env, "tpl", "averaged", "texts"), words);
}

/// Checks a shard embed against the folder embed of the same pictures: row count, the broken
/// item skipped and reported under `broken_key`, and every row's image and text embeddings,
/// caption and label equal to the folder's row with that caption. Returns the largest
/// difference of the embeddings.
fn same_rows_as_the_folder(
    env: &Env,
    exp: &str,
    instance: &str,
    pics: &[Picture],
    broken_key: &str,
) -> f64 {
    let folder_texts = output_lines(env, exp, "folder", "texts");
    let folder_labels = output_lines(env, exp, "folder", "labels");
    let texts = output_lines(env, exp, instance, "texts");
    let labels = output_lines(env, exp, instance, "labels");
    assert_eq!(texts.len(), pics.len(), "{instance}");
    assert_eq!(labels.len(), pics.len(), "{instance}");
    let rep = report(env, exp, instance);
    assert_eq!(rep["positions"], pics.len() + 1, "{instance}: {rep}");
    assert_eq!(rep["rows"], pics.len(), "{instance}");
    assert_eq!(rep["skipped"], 1, "{instance}");
    let skipped = &rep["skipped_items"][0];
    assert_eq!(skipped["key"], broken_key, "{instance}: {skipped}");
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("cannot decode"),
        "{instance}: {skipped}"
    );
    assert_eq!(rep["skip_reasons"]["cannot decode the image"], 1, "{rep}");
    let mut worst = 0f64;
    for output in ["matrix", "text_matrix"] {
        let (n, d, ours) = npy_f32(&common::output_file(env, exp, instance, output));
        let (fn_, fd, folder) = npy_f32(&common::output_file(env, exp, "folder", output));
        assert_eq!((n, d), (pics.len(), 48), "{instance} {output}");
        assert_eq!((fn_, fd), (n, d));
        for (r, caption) in texts.iter().enumerate() {
            let pic = pics
                .iter()
                .find(|p| &p.caption == caption)
                .unwrap_or_else(|| panic!("{instance}: unknown caption {caption:?}"));
            assert_eq!(labels[r], pic.label, "{instance}: row {r}");
            let f = folder_texts.iter().position(|t| t == caption).unwrap();
            assert_eq!(folder_labels[f], pic.label);
            let a: Vec<f64> = ours[r * d..(r + 1) * d].iter().map(|x| *x as f64).collect();
            worst = worst.max(max_abs_diff(&folder[f * d..(f + 1) * d], &a));
        }
    }
    worst
}

/// The tiny CLIP, and 9 pictures in the image folder `photos` to compare shards with.
fn photos_store() -> (Env, Vec<Picture>) {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let pics = pictures(9);
    write_folder(&env.path("photos"), &pics);
    (env, pics)
}

/// Embeds the step `shards` (`[steps.shards]`) beside the folder of `pics` in experiment `name`,
/// checks it with [`same_rows_as_the_folder`] and that its rows follow `pics` in order (shard
/// order, then member order); returns the largest difference.
fn shards_match_the_folder(
    env: &Env,
    name: &str,
    shards: &str,
    pics: &[Picture],
    broken_key: &str,
) -> f64 {
    let exp = format!(
        r#"[experiment]
name = "{name}"
[experiment.defaults.embed]
model = "clip"
tower = "both"
batch_size = 3
[steps.folder]
kind = "embed"
source = "images"
path = "photos"
{shards}"#
    );
    env.run_json(&env.write(&format!("{name}.toml"), &exp));
    let worst = same_rows_as_the_folder(env, name, "shards", pics, broken_key);
    let texts = output_lines(env, name, "shards", "texts");
    let in_order: Vec<&String> = pics.iter().map(|p| &p.caption).collect();
    assert_eq!(texts.iter().collect::<Vec<_>>(), in_order);
    worst
}

#[test]
fn webdataset_shards_embed_the_same_rows_as_an_image_folder() {
    let (env, pics) = photos_store();
    write_tar_shard(&env.path("shards/train-000.tar"), &pics[..4], None);
    write_tar_shard(
        &env.path("shards/train-001.tar.gz"),
        &pics[4..],
        Some("sample099"),
    );
    let worst = shards_match_the_folder(
        &env,
        "wds",
        "[steps.shards]\nkind = \"embed\"\nsource = \"webdataset\"\npath = \"shards/train-*\"\n",
        &pics,
        "train-001.tar.gz:sample099",
    );
    eprintln!(
        "WebDataset (.tar + .tar.gz, 9 samples + 1 broken) vs image folder: max |diff| {worst:.2e}"
    );
    assert!(worst <= 1e-6, "{worst}");
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_shards_embed_the_same_rows_as_an_image_folder() {
    let (env, pics) = photos_store();
    write_parquet_shard(
        &env.path("data/train-00000-of-00002.parquet"),
        &[&pics[..3], &pics[3..5]],
        false,
    );
    write_parquet_shard(
        &env.path("data/train-00001-of-00002.parquet"),
        &[&pics[5..]],
        true,
    );
    let worst = shards_match_the_folder(
        &env,
        "pq",
        "[steps.shards]\nkind = \"embed\"\nsource = \"parquet\"\npath = \"data/*.parquet\"\ntext_column = \"caption\"\nlabel_column = \"label\"\n",
        &pics,
        "train-00001-of-00002.parquet:4",
    );
    eprintln!("parquet (2 shards, 3 row groups, 9 rows + 1 broken) vs image folder: max |diff| {worst:.2e}");
    assert!(worst <= 1e-6, "{worst}");
}

#[cfg(feature = "parquet")]
#[test]
fn the_text_tower_reads_no_images_from_parquet_shards() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let captions = ["a red fox", "two cats", "", "an old tree by the river"];
    let rows: Vec<(&str, &str)> = captions.iter().map(|c| (*c, "nature")).collect();
    std::fs::create_dir_all(env.path("data")).unwrap();
    write_text_parquet(&env.path("data/captions.parquet"), &rows);
    env.write("captions.txt", &(captions.join("\n") + "\n"));
    let pics = pictures(4);
    write_parquet_shard(&env.path("photos/train.parquet"), &[&pics], true);
    let exp = env.write(
        "textpq.toml",
        r#"[experiment]
name = "textpq"
[experiment.defaults.embed]
model = "clip"
[steps.lines]
kind = "embed"
source = "text"
path = "captions.txt"
[steps.captions]
kind = "embed"
source = "parquet"
path = "data/captions.parquet"
tower = "text"
text_column = "caption"
label_column = "label"
[steps.photo_captions]
kind = "embed"
source = "parquet"
path = "photos/train.parquet"
tower = "text"
text_column = "caption"
"#,
    );
    env.run_json(&exp);
    // A dataset without an image column: its captions give the rows of the same lines.
    let bytes = |inst: &str| std::fs::read(common::output_file(&env, "textpq", inst, "matrix"));
    assert!(bytes("captions").unwrap() == bytes("lines").unwrap());
    assert_eq!(
        output_lines(&env, "textpq", "captions", "labels"),
        ["nature"; 4]
    );
    // With images present, the text tower does not decode them: the row whose image is broken
    // is kept.
    let rep = report(&env, "textpq", "photo_captions");
    assert_eq!(
        (rep["rows"].as_u64(), rep["skipped"].as_u64()),
        (Some(5), Some(0)),
        "{rep}"
    );
    let mut expected: Vec<String> = pics.iter().map(|p| p.caption.clone()).collect();
    expected.push("a broken picture".into());
    assert_eq!(
        output_lines(&env, "textpq", "photo_captions", "texts"),
        expected
    );
}

#[cfg(feature = "parquet")]
#[test]
fn a_dataset_repository_in_the_hub_cache_is_read_offline() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let pics = pictures(6);
    let (pq0, pq1, wds) = (
        env.path("local/data/train-00000-of-00002.parquet"),
        env.path("local/data/train-00001-of-00002.parquet"),
        env.path("local/wds/part-0.tar"),
    );
    write_parquet_shard(&pq0, &[&pics[..4]], false);
    write_parquet_shard(&pq1, &[&pics[4..]], true);
    write_tar_shard(&wds, &pics, None);
    let commit = "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c";
    let files = [
        ("data/train-00000-of-00002.parquet", pq0),
        ("data/train-00001-of-00002.parquet", pq1),
        ("wds/part-0.tar", wds),
        ("README.md", env.write("readme.md", "# tiny photos\n")),
    ];
    dataset_hub_layout(&env.path("hub"), "tests/tiny-photos", commit, &files);
    dataset_hub_layout(&env.path("home/hub"), "tests/tiny-photos", commit, &files);
    let exp = env.write(
        "hubdata.toml",
        r#"[experiment]
name = "hubdata"
[experiment.defaults.embed]
model = "clip"
tower = "both"
[steps.local]
kind = "embed"
source = "parquet"
path = "local/data/*.parquet"
text_column = "caption"
label_column = "label"
[steps.hub]
kind = "embed"
source = "parquet"
dataset = "tests/tiny-photos"
files = "data/train-*.parquet"
text_column = "caption"
label_column = "label"
[steps.hub_wds]
kind = "embed"
source = "webdataset"
dataset = "tests/tiny-photos"
revision = "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c"
files = "wds/*.tar"
"#,
    );
    // Once through HF_HUB_CACHE, once through HF_HOME/hub, each with a store of its own.
    for (variable, folder) in [
        ("HF_HUB_CACHE", env.path("hub")),
        ("HF_HOME", env.path("home")),
    ] {
        let reader = Env::new();
        let out = reader
            .offline()
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HOME")
            .env(variable, &folder)
            .args(["run", "--json", exp.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{variable}: {}", text(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["run"], 3, "{variable}: {summary}");
        let bytes = |inst: &str, o: &str| {
            std::fs::read(common::output_file(&reader, "hubdata", inst, o)).unwrap()
        };
        for output in ["matrix", "text_matrix", "texts", "labels"] {
            assert!(
                bytes("hub", output) == bytes("local", output),
                "{variable}: `{output}` from the hub cache differs from the local shards"
            );
        }
        let rep = report(&reader, "hubdata", "hub");
        assert_eq!(rep["rows"], 6, "{rep}");
        // A repository's files are known by their path in it.
        assert_eq!(
            rep["skipped_items"][0]["key"],
            "data/train-00001-of-00002.parquet:2"
        );
        assert_eq!(
            rep["source"]["data"],
            format!("tests/tiny-photos@{commit}/data/train-*.parquet")
        );
        let (n, _, _) = npy_f32(&common::output_file(
            &reader, "hubdata", "hub_wds", "matrix",
        ));
        assert_eq!(n, 6, "{variable}");
        assert_eq!(
            output_lines(&reader, "hubdata", "hub_wds", "labels"),
            output_lines(&reader, "hubdata", "local", "labels")
        );
        eprintln!(
            "{variable}: 6 rows from the cached dataset repository, identical to the local shards"
        );
    }
}

#[test]
fn a_dataset_repository_missing_offline_names_where_msae_looked() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let hub = env.path("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let exp = env.write(
        "absent.toml",
        r#"[experiment]
name = "absent"
[steps.shards]
kind = "embed"
model = "clip"
source = "webdataset"
dataset = "someone/not-cached"
files = "*.tar"
"#,
    );
    let run = || {
        env.offline_hub(&hub)
            .env_remove("HF_HOME")
            .args(["run", exp.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let snapshot = hub.join("datasets--someone--not-cached/snapshots/main");
    assert_fails_with(
        &run(),
        &[
            "someone/not-cached",
            "HF_HUB_OFFLINE",
            &hub.display().to_string(),
            &snapshot.display().to_string(),
        ],
    );
    // A cached repository without matching files says so.
    let readme = env.write("readme.md", "# no shards here\n");
    dataset_hub_layout(
        &hub,
        "someone/not-cached",
        "0000000000000000000000000000000000000001",
        &[("README.md", readme)],
    );
    assert_fails_with(&run(), &["matches `*.tar`"]);
}

/// `msae plan --json` as (instance, status, reasons).
fn plan(env: &Env, exp: &Path) -> Vec<(String, String, Vec<serde_json::Value>)> {
    let entries = env.msae_json(&["plan", "--json", exp.to_str().unwrap()]);
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
                e["reasons"].as_array().cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// Changes one byte of `path` in place (same size), at `at` from the end.
fn change_one_byte(path: &Path, at: usize, to: u8) -> u8 {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - 1 - at;
    let old = bytes[i];
    assert_ne!(old, to);
    bytes[i] = to;
    std::fs::write(path, bytes).unwrap();
    old
}

#[test]
fn the_model_files_content_is_keyed_and_its_folder_name_is_not() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    write_folder(&env.path("photos"), &pictures(3));
    env.write("words.txt", "cat\ndog\n");
    let exp_text = |model: &str| {
        format!(
            r#"[experiment]
name = "keys"
[experiment.defaults.embed]
model = "{model}"
[steps.words]
kind = "embed"
source = "text"
path = "words.txt"
[steps.pics]
kind = "embed"
source = "images"
path = "photos"
"#
        )
    };
    let exp = env.write("keys.toml", &exp_text("clip"));
    assert_eq!(env.run_json(&exp)["run"], 2);
    let statuses = |exp: &Path| -> Vec<(String, String)> {
        plan(&env, exp)
            .into_iter()
            .map(|(n, s, _)| (n, s))
            .collect()
    };
    let all = |s: &str| {
        vec![
            ("words".to_string(), s.to_string()),
            ("pics".to_string(), s.to_string()),
        ]
    };
    assert_eq!(statuses(&exp), all("cached"));

    // The same files in another folder: the same key.
    let copy = env.path("clip-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(env.path("clip").join(name), copy.join(name)).unwrap();
    }
    env.write("keys.toml", &exp_text("clip-copy"));
    assert_eq!(statuses(&exp), all("cached"));

    // One byte of the weights (the lowest byte of the last float): both embeds run again, for
    // the model's content.
    let weights = copy.join("model.safetensors");
    let last = std::fs::read(&weights).unwrap().last().copied().unwrap();
    let old = change_one_byte(&weights, 0, last ^ 1);
    for (name, status, reasons) in plan(&env, &exp) {
        assert_eq!(status, "changed", "{name}: {reasons:?}");
        assert_eq!(reasons.len(), 1, "{name}: {reasons:?}");
        assert_eq!(reasons[0]["type"], "file", "{name}: {reasons:?}");
        assert_eq!(reasons[0]["name"], "model", "{name}: {reasons:?}");
        assert_ne!(reasons[0]["old"]["hash"], reasons[0]["new"]["hash"]);
    }
    let why = text(&env.msae(&["why", exp.to_str().unwrap(), "words"]));
    assert!(why.contains("file model: content changed"), "{why}");
    // Back to the old byte: cached again (content, not modification time, decides).
    change_one_byte(&weights, 0, old);
    assert_eq!(statuses(&exp), all("cached"));

    // One byte of tokenizer.json: an inert one (the truncation length, which msae replaces by
    // the model's context), so the rows stay the same, but the key changes all the same.
    let tokenizer = copy.join("tokenizer.json");
    let json = std::fs::read_to_string(&tokenizer).unwrap();
    let at = json
        .find("\"max_length\":77")
        .expect("truncation in tokenizer.json")
        + 14;
    let from_end = json.len() - 1 - at;
    change_one_byte(&tokenizer, from_end, b'8');
    assert!(std::fs::read_to_string(&tokenizer)
        .unwrap()
        .contains("\"max_length\":78"));
    let changed = plan(&env, &exp);
    let (_, status, reasons) = changed.iter().find(|e| e.0 == "words").unwrap();
    assert_eq!(status, "changed", "{changed:?}");
    assert_eq!(reasons[0]["type"], "file", "{changed:?}");
    assert_eq!(reasons[0]["name"], "model", "{changed:?}");
    let before = std::fs::read(common::output_file(&env, "keys", "words", "matrix")).unwrap();
    let summary = env.run_json(&exp);
    assert!(
        common::with_status(&summary, "ran").contains(&"words".to_string()),
        "{summary}"
    );
    let after = std::fs::read(common::output_file(&env, "keys", "words", "matrix")).unwrap();
    assert!(
        before == after,
        "an inert tokenizer change changed the rows"
    );
    eprintln!("one byte of model.safetensors or tokenizer.json makes the embed run again; a copied model folder keeps the cache");
}

#[test]
fn a_small_siglip_embeds_both_towers_as_candles_siglip_does() {
    use candle_core::{DType, Device, Module, Tensor};
    use candle_transformers::models::siglip;
    use msae::embed::random_siglip::{write_random_siglip, TinySiglipConfig};

    let env = Env::new();
    let cfg = TinySiglipConfig::default();
    write_random_siglip(&env.path("siglip"), &cfg, 11).unwrap();
    let pics = pictures(5);
    write_folder(&env.path("photos"), &pics);
    let exp = env.write(
        "siglip.toml",
        r#"[experiment]
name = "siglip"
[steps.both]
kind = "embed"
model = "siglip"
source = "images"
path = "photos"
tower = "both"
batch_size = 2
"#,
    );
    env.run_json(&exp);
    let (n, d, image) = npy_f32(&common::output_file(&env, "siglip", "both", "matrix"));
    let (tn, td, texts) = npy_f32(&common::output_file(&env, "siglip", "both", "text_matrix"));
    assert_eq!((n, d), (5, cfg.vision.hidden));
    assert_eq!((tn, td), (5, cfg.text.hidden));
    let rep = report(&env, "siglip", "both");
    assert_eq!(rep["family"], "siglip", "{rep}");
    assert_eq!(rep["preprocessing"]["size"], 64, "{rep}");

    // Deterministic: a second run in a store of its own writes the same bytes.
    let again = Env::new();
    again.run_json(&exp);
    for output in ["matrix", "text_matrix"] {
        let a = std::fs::read(common::output_file(&env, "siglip", "both", output)).unwrap();
        let b = std::fs::read(common::output_file(&again, "siglip", "both", output)).unwrap();
        assert!(a == b, "two runs differ in `{output}`");
    }

    // candle-transformers' SigLIP towers, called directly on the same inputs one at a time:
    // pixels straight to 64 × 64 with mean = std = 0.5 over a white background, texts padded to
    // the full context with the pad id.
    let model_dir = env.path("siglip");
    let config: siglip::Config =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json")).unwrap())
            .unwrap();
    let device = Device::Cpu;
    // SAFETY: the weights were written above and are not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[model_dir.join("model.safetensors")],
            DType::F32,
            &device,
        )
    }
    .unwrap();
    let vision =
        siglip::VisionModel::new(&config.vision_config, true, vb.pp("vision_model")).unwrap();
    let text_model = siglip::TextModel::new(&config.text_config, vb.pp("text_model")).unwrap();
    let tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).unwrap();
    let pre = msae::embed::image::Preprocess::siglip(64)
        .with_background(msae::embed::image::Background::Color([255, 255, 255]));
    let captions = output_lines(&env, "siglip", "both", "texts");
    let (mut image_worst, mut text_worst) = (0f64, 0f64);
    for (r, caption) in captions.iter().enumerate() {
        let pic = pics.iter().find(|p| &p.caption == caption).unwrap();
        let pixels = pre.image_tensor(&pic.png).unwrap();
        let x = Tensor::from_vec(pixels, (1, 3, 64, 64), &device).unwrap();
        let direct: Vec<f32> = vision
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let direct: Vec<f64> = direct.iter().map(|v| *v as f64).collect();
        image_worst = image_worst.max(max_abs_diff(&image[r * d..(r + 1) * d], &direct));

        let mut ids = tokenizer
            .encode(caption.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        assert!(ids.len() < 64);
        ids.resize(64, cfg.text.pad_token_id);
        let ids = Tensor::from_vec(ids, (1, 64), &device).unwrap();
        let direct: Vec<f32> = text_model
            .forward(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let direct: Vec<f64> = direct.iter().map(|v| *v as f64).collect();
        text_worst = text_worst.max(max_abs_diff(&texts[r * td..(r + 1) * td], &direct));
    }
    // The rows are not all alike (the comparison has something to compare).
    assert!(
        max_abs_diff(
            &image[..d],
            &image[d..2 * d]
                .iter()
                .map(|v| *v as f64)
                .collect::<Vec<_>>()
        ) > 1e-3
    );
    eprintln!("SigLIP through msae vs candle-transformers directly: image tower max |diff| {image_worst:.2e}, text tower {text_worst:.2e}");
    assert!(image_worst <= 1e-5, "{image_worst}");
    assert!(text_worst <= 1e-5, "{text_worst}");
}

/// A CelebA-like shard: `image` (struct of bytes and path), booleans `Smiling` and `Male` as the
/// datasets library stores a bool attribute; `male[i] = None` leaves row i's `Male` null. The
/// row after the pictures holds bytes that are no image.
#[cfg(feature = "parquet")]
fn write_faces(path: &Path, pics: &[Picture], smiling: &[bool], male: &[Option<bool>]) {
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;
    let schema = parse_message_type(
        "message faces {
            optional group image { optional binary bytes; optional binary path (STRING); }
            optional boolean Smiling;
            optional boolean Male;
        }",
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut images: Vec<ByteArray> = pics
        .iter()
        .map(|p| ByteArray::from(p.png.clone()))
        .collect();
    images.push(ByteArray::from("not an image"));
    let n = images.len();
    let paths: Vec<ByteArray> = (0..n)
        .map(|i| ByteArray::from(format!("{i}.jpg").as_str()))
        .collect();
    for values in [&images, &paths] {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(values, Some(&vec![2; n]), None)
            .unwrap();
        col.close().unwrap();
    }
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<BoolType>()
        .write_batch(smiling, Some(&vec![1; n]), None)
        .unwrap();
    col.close().unwrap();
    let present: Vec<bool> = male.iter().flatten().copied().collect();
    let defs: Vec<i16> = male.iter().map(|m| i16::from(m.is_some())).collect();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<BoolType>()
        .write_batch(&present, Some(&defs), None)
        .unwrap();
    col.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
}

#[cfg(feature = "parquet")]
#[test]
fn a_group_column_becomes_a_groups_output_aligned_with_the_rows() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let pics = pictures(4);
    // Four pictures and, last, a row that cannot be decoded (it is skipped with its values).
    let smiling = [true, false, false, true, true];
    let male = [Some(false), Some(true), None, Some(true), Some(false)];
    std::fs::create_dir_all(env.path("faces")).unwrap();
    write_faces(&env.path("faces/test.parquet"), &pics, &smiling, &male);
    let exp = env.write(
        "faces.toml",
        r#"[experiment]
name = "faces"
[experiment.defaults.embed]
model = "clip"
source = "parquet"
path = "faces/test.parquet"
label_column = "Smiling"
[steps.grouped]
kind = "embed"
group_column = "Male"
[steps.plain]
kind = "embed"
"#,
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let rep = report(&env, "faces", "grouped");
    assert_eq!(
        (rep["rows"].as_u64(), rep["skipped"].as_u64()),
        (Some(4), Some(1)),
        "{rep}"
    );
    assert_eq!(
        output_lines(&env, "faces", "grouped", "labels"),
        ["true", "false", "false", "true"]
    );
    // A row without a value has an empty line, so that lines stay rows.
    assert_eq!(
        output_lines(&env, "faces", "grouped", "groups"),
        ["false", "true", "", "true"]
    );
    // Without `group_column` there is no `groups` output, and everything else is the same.
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let plain = store.index.latest("faces", "plain").unwrap().unwrap();
    let grouped = store.index.latest("faces", "grouped").unwrap().unwrap();
    assert!(
        !plain.outputs.contains_key("groups"),
        "{:?}",
        plain.outputs.keys()
    );
    for output in ["matrix", "labels", "items", "thumbnails"] {
        assert_eq!(
            plain.outputs[output].hash, grouped.outputs[output].hash,
            "{output}"
        );
    }
}

#[test]
fn a_group_column_outside_parquet_is_refused_with_the_parameter_named() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    write_folder(&env.path("photos"), &pictures(2));
    let exp = env.write(
        "folder.toml",
        r#"[experiment]
name = "folder"
[steps.photos]
kind = "embed"
model = "clip"
source = "images"
path = "photos"
group_column = "Male"
"#,
    );
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    assert_fails_with(
        &out,
        &[
            "photos",
            "`group_column` reads a column of parquet shards",
            "source = \"images\"",
        ],
    );
}
