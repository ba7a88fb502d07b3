//! `recovery` end to end: on planted data, from a `synth` step (true firing as CSR codes) and from
//! imported matrices the test writes (true directions and dense true activations), every metric
//! and every per-latent count equals an independent float64 NumPy/SciPy computation
//! (`tests/oracles/recovery_scipy.py`: SciPy's `linear_sum_assignment` for the MCC), which reads
//! the model's decoder itself and the SAE's codes and reconstructions from an `extract` step of
//! the same rows; inputs that do not fit together are refused with the parameter named.

use crate::common;

use common::{output_file, output_json, table_rows, write_npy, Env, Gauss, Synth};
use serde_json::Value;

const BATCH: usize = 250;

/// Planted directions (of unequal norms), rows with 1–3 active features each and their dense
/// true activations, for the import scenario: `truth.npy` [20, 12], `rows.npy` [1500, 12],
/// `acts.npy` [1500, 20] (every fourth active feature stored as an explicit 0: not firing).
fn write_planted(env: &Env) {
    let (f, d, rows) = (20, 12, 1500);
    let mut g = Gauss(77);
    let truth: Vec<f32> = (0..f * d)
        .map(|k| ((1 + k / d % 3) as f64 * g.normal()) as f32)
        .collect();
    let mut data = vec![0f32; rows * d];
    let mut acts = vec![0f32; rows * f];
    let mut stored = 0;
    for r in 0..rows {
        let active = 1 + (g.uniform() * 3.0) as usize;
        for _ in 0..active {
            let j = (g.uniform() * f as f64) as usize % f;
            stored += 1;
            let c = if stored % 4 == 0 {
                0.0
            } else {
                0.5 + g.uniform() as f32
            };
            acts[r * f + j] = c;
        }
        for j in 0..f {
            for t in 0..d {
                data[r * d + t] += acts[r * f + j] * truth[j * d + t];
            }
        }
        for x in &mut data[r * d..(r + 1) * d] {
            *x += 0.01 * g.normal() as f32;
        }
    }
    write_npy(&env.path("truth.npy"), f, d, &truth);
    write_npy(&env.path("rows.npy"), rows, d, &data);
    write_npy(&env.path("acts.npy"), rows, f, &acts);
}

fn experiment() -> String {
    Synth::new(16, &[24], 4096, 600)
        .extra("active = 3.0\nzipf = 0.5\n")
        .experiment("rec")
        + &format!(
            r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 3
n_latents = 32
epochs = 5
batch_size = 64
lr = 0.01
schedule = "constant"

[steps.codes]
kind = "extract"
sae = "sae"
data = "data.test"
batch_size = {BATCH}

[steps.rec]
kind = "recovery"
sae = "sae"
truth = "data.dictionary"
data = "data.test"
firing = "data.test_codes"
batch_size = {BATCH}

[steps.rec_directions]
kind = "recovery"
sae = "sae"
truth = "data.dictionary"

[steps.truth]
kind = "import"
path = "truth.npy"

[steps.rows]
kind = "import"
path = "rows.npy"

[steps.acts]
kind = "import"
path = "acts.npy"

[steps.isae]
kind = "train"
data = "rows"
arch = "topk"
k = 2
n_latents = 24
epochs = 8
batch_size = 50
lr = 0.01
schedule = "constant"

[steps.icodes]
kind = "extract"
sae = "isae"
data = "rows"
batch_size = {BATCH}

[steps.irec]
kind = "recovery"
sae = "isae"
truth = "truth"
data = "rows"
firing = "acts"
batch_size = {BATCH}
"#
        )
}

/// Asserts agreement to 1e-9 and returns the difference.
fn close(got: &Value, want: &Value, what: &str) -> f64 {
    let (a, b) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!((a - b).abs() <= 1e-9, "{what}: msae {a} vs SciPy {b}");
    (a - b).abs()
}

/// An (instance, output) pair naming a file of the store.
type Output<'a> = (&'a str, &'a str);

/// Runs the oracle on one recovery instance and compares everything it reports.
fn check_against_oracle(
    env: &Env,
    python: &std::path::Path,
    (rec, sae, codes): (&str, &str, &str),
    (truth, data, firing): (Output, Output, Output),
) -> Value {
    let file = |(instance, output): (&str, &str)| output_file(env, "rec", instance, output);
    let out = env.path(&format!("{rec}.oracle.json"));
    common::run_python(
        python,
        &[
            common::oracle("recovery_scipy.py").as_os_str(),
            file((sae, "model")).as_os_str(),
            file(truth).as_os_str(),
            out.as_os_str(),
            file(data).as_os_str(),
            file((codes, "sparse_codes")).as_os_str(),
            file((codes, "sparse_recon")).as_os_str(),
            file(firing).as_os_str(),
        ],
    );
    let want: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    // Far from a tie, float rounding cannot change any argmax, so the matchings must agree.
    let gap = want["min_argmax_gap"].as_f64().unwrap();
    assert!(gap > 1e-6, "{rec}: the data have a near tie ({gap})");

    let rows = table_rows(env, &env.path("rec.toml"), "recovery");
    let row = rows
        .iter()
        .find(|r| r["instance"] == rec)
        .unwrap_or_else(|| panic!("{rows:?}"));
    let mut largest = 0f64;
    for metric in [
        "mcc",
        "uniqueness",
        "mean_max_abs_cos",
        "recovered_abs",
        "sae_l0",
        "dead_latents",
        "shrinkage",
        "explained_variance",
        "true_l0",
        "precision",
        "recall",
        "f1",
        "accuracy",
    ] {
        largest = largest.max(close(
            &row[metric],
            &want[metric],
            &format!("{rec} {metric}"),
        ));
    }

    let matches = output_json(env, "rec", rec, "matches");
    let latents = output_json(env, "rec", rec, "latents");
    let pairs: Vec<(u64, u64)> = want["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
        .collect();
    for &(latent, feature) in &pairs {
        assert_eq!(
            matches[feature as usize]["assigned_latent"], latent,
            "{rec}: feature {feature}"
        );
    }
    for (j, m) in matches.as_array().unwrap().iter().enumerate() {
        assert_eq!(
            m["best_latent"], want["best_latent"][j],
            "{rec}: feature {j}"
        );
    }
    for (i, l) in latents.as_array().unwrap().iter().enumerate() {
        assert_eq!(
            l["best_feature"], want["best_feature"][i],
            "{rec}: latent {i}"
        );
        let c = &want["counts"][i];
        for (k, name) in ["tp", "fp", "fn", "tn"].iter().enumerate() {
            assert_eq!(l[*name], c[k], "{rec}: latent {i} {name}");
        }
        let f1 = close(
            &l["f1"],
            &want["latent_f1"][i],
            &format!("{rec} latent {i} F1"),
        );
        largest = largest.max(f1);
    }
    eprintln!(
        "{rec}: MCC {:.4}, uniqueness {:.4}, precision {:.4}, recall {:.4}, F1 {:.4}, explained variance {:.4}; largest difference from SciPy {largest:.1e} (smallest argmax gap {gap:.2e})",
        row["mcc"].as_f64().unwrap(),
        row["uniqueness"].as_f64().unwrap(),
        row["precision"].as_f64().unwrap(),
        row["recall"].as_f64().unwrap(),
        row["f1"].as_f64().unwrap(),
        row["explained_variance"].as_f64().unwrap(),
    );
    row.clone()
}

#[test]
fn every_metric_equals_a_scipy_oracle_on_planted_data() {
    let Some(python) = common::test_python_with("numpy, scipy") else {
        return;
    };
    let env = Env::new();
    write_planted(&env);
    let exp = env.write("rec.toml", &experiment());
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");

    let synth = check_against_oracle(
        &env,
        &python,
        ("rec", "sae", "codes"),
        (
            ("data", "dictionary"),
            ("data", "test"),
            ("data", "test_codes"),
        ),
    );
    let imported = check_against_oracle(
        &env,
        &python,
        ("irec", "isae", "icodes"),
        (("truth", "matrix"), ("rows", "matrix"), ("acts", "matrix")),
    );
    // The SAEs learnt the planted features, so the numbers compared are not degenerate.
    for row in [&synth, &imported] {
        assert!(row["mcc"].as_f64().unwrap() > 0.8, "{row}");
        assert!(row["f1"].as_f64().unwrap() > 0.3, "{row}");
    }

    // Without `data`, only the metrics of the directions, the same as with it.
    let rows = table_rows(&env, &exp, "recovery");
    let plain = rows
        .iter()
        .find(|r| r["instance"] == "rec_directions")
        .unwrap();
    for metric in ["mcc", "uniqueness", "mean_max_abs_cos", "recovered_abs"] {
        assert_eq!(plain[metric], synth[metric], "{metric}");
    }
    for metric in ["sae_l0", "f1", "precision"] {
        assert!(plain.get(metric).is_none_or(Value::is_null), "{plain}");
    }
}

#[test]
fn inputs_that_do_not_fit_together_are_refused() {
    let env = Env::new();
    let base = Synth::new(8, &[6], 300, 40).experiment("bad")
        + r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 2
n_latents = 8
epochs = 1
batch_size = 50

[steps.rec]
kind = "recovery"
sae = "sae"
truth = "data.dictionary"
"#;
    write_npy(&env.path("wide.npy"), 6, 9, &[0.5; 54]);
    let cases = [
        (
            "firing = \"data.test_codes\"\n",
            &["`firing` needs `data`"][..],
        ),
        (
            "data = \"data.test\"\nfiring = \"data.train_codes\"\n",
            &[
                "`firing` (from data) holds 300 rows of 6 features",
                "`data` (from data) has 40 rows and `truth` 6 features",
            ][..],
        ),
        (
            "[steps.wide]\nkind = \"import\"\npath = \"wide.npy\"\n",
            &["`truth` (from wide) has 9 columns but the SAE's inputs have 8"][..],
        ),
    ];
    for (k, (extra, expected)) in cases.iter().enumerate() {
        let mut text = format!("{base}{extra}");
        if extra.contains("wide") {
            text = text.replace("truth = \"data.dictionary\"", "truth = \"wide\"");
        }
        let exp = env.write(&format!("bad{k}.toml"), &text);
        let out = env.msae(&["run", exp.to_str().unwrap()]);
        common::assert_fails_with(&out, expected);
    }
}
