//! The analysis steps end to end through the binary: naming latents against a vocabulary,
//! aligning two dictionaries, and the linear-probe semantic-preservation measurement.

use crate::common;

use std::path::Path;

use common::{
    experiment_table, fails_with, output_file, output_json, table_rows, text, write_blobs,
    write_npy, Env, Rounding, Synth, BLOB_IMPORTS,
};

/// Running `exp` fails cleanly (exit status 1, no panic), and `msae status` then shows `error`.
fn run_fails_and_status_shows(env: &Env, exp: &Path, error: &str) {
    let e = exp.to_str().unwrap();
    let msg = fails_with(env, &["run", e], &[]);
    assert!(!msg.contains("panicked"), "{msg}");
    let status = text(&env.msae(&["status", e]));
    assert!(status.contains(error), "{msg}\n{status}");
}

/// Planted-dictionary data, a TopK SAE, and its latents named against the planted features.
fn naming_experiment() -> String {
    Synth::new(64, &[32], 4096, 256)
        .extra("active = 3.0\nzipf = 0.0\n")
        .experiment("naming")
        + NAMING_STEPS
}

const NAMING_STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 3
n_latents = 64
epochs = 6
batch_size = 64
lr = 0.01
schedule = "constant"

[steps.names]
kind = "name"
sae = "sae"
vocab = "data.dictionary"
planted = true
top = 5
block_rows = 7
"#;

#[test]
fn latents_are_named_after_the_planted_features_they_recovered() {
    let env = Env::new();
    let naming = naming_experiment();
    let exp = env.write("naming.toml", &naming);
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let rows = table_rows(&env, &exp, "name");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let accuracy = rows[0]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "naming accuracy {accuracy}: {rows:?}");
    assert!(rows[0]["mean_best_score"].as_f64().unwrap() > 0.5);
    assert!(rows[0]["distinct_names"].as_u64().unwrap() >= 29);

    // The similarity matrix: one row per vocabulary entry, one column per latent, streamed in
    // blocks of 7 rows; its column argmax is the name.
    let sim =
        msae::data::Matrix::open(&output_file(&env, "naming", "names", "similarity")).unwrap();
    assert_eq!((sim.rows(), sim.cols()), (32, 64));
    let names = output_json(&env, "naming", "names", "names");
    let names = names.as_array().unwrap();
    assert_eq!(names.len(), 64);
    for (j, n) in names.iter().enumerate() {
        let best = (0..32)
            .max_by(|&a, &b| sim.row(a)[j].total_cmp(&sim.row(b)[j]).then(b.cmp(&a)))
            .unwrap();
        assert_eq!(n["index"], best, "latent {j}: {n}");
        // Without a word list a latent is named by the row index.
        assert_eq!(n["word"], best.to_string());
        assert!(n["runner_up_score"].as_f64().unwrap() <= n["score"].as_f64().unwrap());
    }
    let top = output_json(&env, "naming", "names", "top_latents");
    let top = top.as_array().unwrap();
    assert_eq!(top.len(), 5);
    let freqs: Vec<f64> = top
        .iter()
        .map(|t| t["frequency"].as_f64().unwrap())
        .collect();
    assert!(freqs.windows(2).all(|w| w[0] >= w[1]), "{freqs:?}");
    assert!(freqs[0] > 0.0);

    // The same dictionary as an imported vocabulary with a word list: names are the words.
    let dict =
        msae::data::Matrix::open(&output_file(&env, "naming", "data", "dictionary")).unwrap();
    write_npy(&env.path("vocab.npy"), 32, 64, dict.data());
    let words: String = (0..32).map(|i| format!("feature{i}\n")).collect();
    env.write("vocab.txt", &words);
    env.write("short.txt", "a\nb\n");
    write_npy(&env.path("short.npy"), 2, 64, &dict.data()[..128]);
    let with_words = format!(
        "{naming}
[steps.vocab]
kind = \"import\"
path = \"vocab.npy\"
texts = \"vocab.txt\"

[steps.worded]
kind = \"name\"
sae = \"sae\"
vocab = \"vocab\"
words = \"vocab.texts\"
mode = \"reference\"
"
    );
    let exp2 = env.write("naming.toml", &with_words);
    let summary = env.run_json(&exp2);
    assert_eq!(summary["failed"], 0, "{summary}");
    let worded = output_json(&env, "naming", "worded", "names");
    for n in worded.as_array().unwrap() {
        let index = n["index"].as_u64().unwrap();
        assert_eq!(n["word"], format!("feature{index}"));
    }

    // A word list that does not belong to the vocabulary is a clear error, not a panic.
    let mismatched = format!(
        "{with_words}
[steps.short]
kind = \"import\"
path = \"short.npy\"
texts = \"short.txt\"

[steps.bad]
kind = \"name\"
sae = \"sae\"
vocab = \"vocab\"
words = \"short.texts\"
"
    );
    let exp3 = env.write("naming.toml", &mismatched);
    run_fails_and_status_shows(&env, &exp3, "has 2 entries but the vocabulary has 32 rows");
}

/// Two seeds of a TopK and a ReLU SAE, aligned across seeds and each with itself.
fn align_experiment() -> String {
    Synth::new(32, &[24], 2048, 64)
        .extra("active = 2.0\nzipf = 0.0\n")
        .experiment("align")
        + ALIGN_STEPS
}

const ALIGN_STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
n_latents = 32
epochs = 3
batch_size = 64
lr = 0.01
schedule = "constant"
seed = [1, 2]

[[steps.sae.variant]]
arch = "topk"
k = 2

[[steps.sae.variant]]
arch = "relu"

[steps.seeds]
kind = "align"
a = "sae[seed=1]"
b = "sae[seed=2]"
match = ["arch"]

[steps.self]
kind = "align"
a = "sae[seed=1]"
b = "sae[seed=1]"
match = ["arch"]
directions = ["decoder", "encoder"]
block_rows = 5
"#;

#[test]
fn alignment_pairs_seeds_explicitly_and_is_perfect_for_one_model() {
    let env = Env::new();
    let exp = env.write("align.toml", &align_experiment());
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let rows = table_rows(&env, &exp, "align");
    let seeds: Vec<_> = rows
        .iter()
        .filter(|r| r["instance"].as_str().unwrap().starts_with("seeds["))
        .collect();
    // `match = ["arch"]`: topk with topk, relu with relu — 2 pairs, not 4.
    assert_eq!(seeds.len(), 2, "{rows:?}");
    for r in &seeds {
        let mean = r["mean_matched_cos"].as_f64().unwrap();
        assert!(mean > 0.0 && mean < 1.0 - 1e-6, "{r}");
        assert_eq!(r["n_pairs"], 32);
    }
    let selves: Vec<_> = rows
        .iter()
        .filter(|r| r["instance"].as_str().unwrap().starts_with("self["))
        .collect();
    assert_eq!(selves.len(), 4, "{rows:?}");
    for r in &selves {
        let mean = r["mean_matched_cos"].as_f64().unwrap();
        assert!((mean - 1.0).abs() < 1e-5, "{r}");
        assert!((r["median_matched_cos"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    }
    let instance = selves[0]["instance"].as_str().unwrap();
    let assignment = output_json(&env, "align", instance, "assignment");
    for (i, p) in assignment["pairs"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            (p["a"].as_u64(), p["b"].as_u64()),
            (Some(i as u64), Some(i as u64))
        );
    }
    let hist = output_json(&env, "align", instance, "histogram");
    let counts: Vec<u64> = hist["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 20);
    assert_eq!(counts[19], 32, "{hist}");
    assert_eq!(hist["edges"].as_array().unwrap().len(), 21);
}

/// A TopK SAE of labelled blobs and a linear probe of what its reconstructions preserve.
fn probe_experiment() -> String {
    experiment_table("probe", "") + BLOB_IMPORTS + PROBE_STEPS
}

const PROBE_STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "train"
arch = "topk"
k = 4
n_latents = 32
epochs = 30
batch_size = 32
lr = 0.01
schedule = "constant"

[steps.probe]
kind = "linear_probe"
sae = "sae"
train = "train"
train_labels = "train.labels"
eval = "eval"
eval_labels = "eval.labels"
ks = [1, 4, 32]
batch_size = 32
lr = 0.01
"#;

#[test]
fn a_linear_probe_measures_what_the_reconstructions_preserve() {
    let env = Env::new();
    let eval_labels = write_blobs(&env, 7, Rounding::Noise);
    let exp = env.write("probe.toml", &probe_experiment());
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let rows = table_rows(&env, &exp, "linear_probe");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    let f1 = r["macro_f1"].as_f64().unwrap();
    let kl = r["kl"].as_f64().unwrap();
    let agreement = r["agreement"].as_f64().unwrap();
    assert!(f1 > 0.9, "{r}");
    assert!(agreement > 0.5, "{r}");
    assert!(kl.is_finite() && kl > 0.0, "{r}");
    let report = output_json(&env, "probe", "probe", "report");
    assert_eq!(
        report["class_names"],
        serde_json::json!(["a", "b", "c", "d"])
    );
    assert_eq!(report["dense"]["eval"]["rows"], 200);
    assert_eq!(report["topk"]["4"]["train"]["rows"], 400);
    // The table shows the report's evaluation numbers.
    assert_eq!(r["kl"], report["dense"]["eval"]["kl_mean"]);
    assert_eq!(r["agreement"], report["dense"]["eval"]["agreement_mean"]);
    assert_eq!(r["macro_f1"], report["probe"]["final_macro_f1"]);
    for k in [1, 4, 32] {
        let e = &report["topk"][k.to_string()]["eval"];
        assert_eq!(r[format!("kl@{k}")], e["kl_mean"], "{r}");
        assert_eq!(r[format!("agreement@{k}")], e["agreement_mean"], "{r}");
        // The probe's macro-F1 on the reconstructions: in the table and the report, and a
        // share of classes' F1 — at most 1, and above chance (0.25) for these separable blobs
        // once the code keeps every latent.
        let f1_k = r[format!("macro_f1@{k}")].as_f64().unwrap();
        assert_eq!(
            r[format!("macro_f1@{k}")],
            report["topk"][k.to_string()]["eval_macro_f1"],
            "{r}"
        );
        assert!((0.0..=1.0).contains(&f1_k), "{r}");
    }
    assert!(r["macro_f1@32"].as_f64().unwrap() > 0.5, "{r}");
    // Agreement is the fraction of rows whose predicted class is kept: a whole number of the
    // 200 rows, with the population spread of 0/1 values, √(a(1 − a)).
    for set in ["train", "eval"] {
        let rows = if set == "train" { 400.0 } else { 200.0 };
        let mut parts = vec![&report["dense"][set]];
        parts.extend([1, 4, 32].map(|k| &report["topk"][k.to_string()][set]));
        for p in parts {
            let a = p["agreement_mean"].as_f64().unwrap();
            assert!((a * rows - (a * rows).round()).abs() < 1e-9, "{p}");
            let std = p["agreement_std"].as_f64().unwrap();
            assert!((std - (a * (1.0 - a)).sqrt()).abs() < 1e-9, "{p}");
        }
    }
    // Keeping the k largest of all 32 latents is the dense code: the same reconstruction,
    // so exactly the same KL and agreement. Keeping one latent loses more than keeping four.
    assert_eq!(r["kl@32"], r["kl"], "{r}");
    assert_eq!(r["agreement@32"], r["agreement"], "{r}");
    let kl_at = |k: usize| r[format!("kl@{k}")].as_f64().unwrap();
    assert!(kl_at(1) > kl_at(4), "{r}");

    // An evaluation label the probe has no class for is a clear error.
    let bad = eval_labels.replacen("a\n", "e\n", 1);
    env.write("eval.labels.txt", &bad);
    run_fails_and_status_shows(
        &env,
        &exp,
        "evaluation label `e` (row 0) does not occur in the training labels",
    );
}

const LEXNAME: &str = r#"
[experiment]
name = "lexname"

[steps.train]
kind = "import"
path = "TRAIN"
labels = "TRAIN_LABELS"

[steps.eval]
kind = "import"
path = "EVAL"
labels = "EVAL_LABELS"

[steps.sae]
kind = "train"
data = "train"
arch = "topk"
k = 16
n_latents = 384
epochs = 1
batch_size = 1024
lr = 0.001

[steps.probe]
kind = "linear_probe"
sae = "sae"
train = "train"
train_labels = "train.labels"
eval = "eval"
eval_labels = "eval.labels"
max_epochs = 8
"#;

#[test]
fn a_linear_probe_on_real_wordnet_lexnames() {
    let files = [
        "wordnet_lexname_train_14670_384.npy",
        "wordnet_lexname_train_14670.labels.txt",
        "wordnet_lexname_test_3667_384.npy",
        "wordnet_lexname_test_3667.labels.txt",
    ];
    let Some(paths) = files
        .iter()
        .map(|f| common::shared_data(f))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let env = Env::new();
    let exp_text = LEXNAME
        .replace("TRAIN_LABELS", paths[1].to_str().unwrap())
        .replace("EVAL_LABELS", paths[3].to_str().unwrap())
        .replace("TRAIN", paths[0].to_str().unwrap())
        .replace("EVAL", paths[2].to_str().unwrap());
    let exp = env.write("lexname.toml", &exp_text);
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let r = &table_rows(&env, &exp, "linear_probe")[0];
    let f1 = r["macro_f1"].as_f64().unwrap();
    let kl = r["kl"].as_f64().unwrap();
    let agreement = r["agreement"].as_f64().unwrap();
    // Lexicographer classes are far from chance with a linear probe on sentence embeddings.
    assert!(f1 > 0.2, "{r}");
    assert!(kl.is_finite() && kl >= 0.0, "{r}");
    assert!(agreement > 0.3, "{r}");
}
