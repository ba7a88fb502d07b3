//! SAE steps end to end through the binary: training recovers planted features, resumes
//! bit-identically after `kill -9`, and the scoring/extraction outputs have the reference shapes.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{fails_with, output_json, table_rows, with_status, Env, Synth};

/// Planted-dictionary data of two sizes, then a TopK and a Matryoshka SAE on each, scored,
/// matched against the planted features, and one extracted.
fn planted() -> String {
    Synth::new(64, &[32, 48], 4096, 512)
        .extra("active = 3.0\nzipf = 0.0\n")
        .experiment("planted")
        + PLANTED_STEPS
}

const PLANTED_STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
n_latents = 64
epochs = 6
batch_size = 64
lr = 0.01
schedule = "constant"

[[steps.sae.variant]]
arch = "topk"
k = 3

[[steps.sae.variant]]
arch = "msae"
nesting_start = 4

[steps.recovery]
kind = "recovery"
sae = "sae"
truth = "data.dictionary"
match = ["n_features"]

[steps.score]
kind = "score_topk"
sae = "sae[arch=topk]"
data = "data.test"
match = ["n_features"]
ks = [1, 3, 8, 64]

[steps.codes]
kind = "extract"
sae = "sae[arch=msae,n_features=32]"
data = "data[n_features=32].test"
batch_size = 100
"#;

#[test]
fn topk_and_matryoshka_recover_a_planted_dictionary() {
    let env = Env::new();
    let exp = env.write("planted.toml", &planted());
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let rows = table_rows(&env, &exp, "recovery");
    // `match` pairs each SAE with the dictionary of its own data: 4 pairs, not 8.
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in &rows {
        let cos = r["mean_max_abs_cos"].as_f64().unwrap();
        assert!(cos >= 0.9, "{}: mean max |cosine| {cos}", r["instance"]);
    }
    assert!(rows
        .iter()
        .any(|r| r["instance"] == "recovery[arch=msae,n_features=48,nesting_start=4]"));

    // score_topk: the reference's JSON layout, metrics per k that behave as they must.
    let scores = output_json(
        &env,
        "planted",
        "score[arch=topk,k=3,n_features=32]",
        "scores",
    );
    for k in ["1", "3", "8", "64"] {
        let e = &scores[k];
        for key in ["fvu", "mae", "cs", "l0", "cknnas"] {
            assert_eq!(
                e[key].as_array().map(|a| a.len()),
                Some(2),
                "{k}.{key}: {e}"
            );
        }
        assert!(e["number_of_dead_neurons"].is_u64());
        let zero_fraction = e["l0"][0].as_f64().unwrap();
        let kk: f64 = k.parse().unwrap();
        assert!(
            zero_fraction >= 1.0 - kk / 64.0 - 1e-9,
            "{k}: {zero_fraction}"
        );
    }
    let fvu = |k: &str| scores[k]["fvu"][0].as_f64().unwrap();
    assert!(fvu("1") > fvu("3"), "{scores}");
    assert!(
        fvu("3") < 0.1,
        "k = the training k reconstructs well: {scores}"
    );

    // extract: outputs in input order, so FVU recomputed from the files equals the reported one.
    let codes =
        msae::data::Matrix::open(&common::output_file(&env, "planted", "codes", "codes")).unwrap();
    let recon =
        msae::data::Matrix::open(&common::output_file(&env, "planted", "codes", "recon")).unwrap();
    let test = msae::data::Matrix::open(&common::output_file(
        &env,
        "planted",
        "data[n_features=32]",
        "test",
    ))
    .unwrap();
    assert_eq!((codes.rows(), codes.cols()), (512, 64));
    assert_eq!((recon.rows(), recon.cols()), (512, 64));
    let x = msae::metrics::MatRef::new(test.data(), 512, 64).unwrap();
    let xh = msae::metrics::MatRef::new(recon.data(), 512, 64).unwrap();
    let fvu_files: f64 = msae::metrics::fvu_per_sample(x, xh)
        .unwrap()
        .iter()
        .sum::<f64>()
        / 512.0;
    let reported = table_rows(&env, &exp, "extract")[0]["fvu"]
        .as_f64()
        .unwrap();
    assert!(
        (fvu_files - reported).abs() < 1e-9,
        "{fvu_files} vs {reported}"
    );
}

/// A Matryoshka training that checkpoints every 7 steps, and its scores.
fn resume() -> String {
    Synth::new(32, &[64], 6000, 100).experiment("resume") + RESUME_STEPS
}

const RESUME_STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "msae"
n_latents = 128
nesting_start = 8
epochs = 4
batch_size = 100
checkpoint_steps = 7

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
"#;

#[test]
fn training_killed_mid_run_resumes_to_bit_identical_weights() {
    // Uninterrupted reference run.
    let clean = Env::new();
    let exp = clean.write("r.toml", &resume());
    let reference = clean.run_json(&exp);

    // Interrupted run: kill -9 once training has written a checkpoint.
    let env = Env::new();
    let exp = env.write("r.toml", &resume());
    let mut child = env.spawn(
        &["run", exp.to_str().unwrap()],
        Stdio::null(),
        Stdio::piped(),
    );
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let start = Instant::now();
    let partial = env.cache().join("partial");
    let killed = loop {
        let has_checkpoint = std::fs::read_dir(&partial)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().join("checkpoint.safetensors").exists())
            })
            .unwrap_or(false);
        if has_checkpoint {
            child.kill().unwrap();
            break true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert!(
        killed,
        "training finished before a checkpoint was seen: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("ran     sae")),
        "the kill came too late: {lines:?}"
    );

    let resumed = env.run_json(&exp);
    assert_eq!(with_status(&resumed, "cached"), vec!["data"], "{resumed}");
    // Same key for the score step means the same model bytes went into it.
    let key = |s: &serde_json::Value, name: &str| {
        s["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["key"]
            .clone()
    };
    assert_eq!(
        key(&resumed, "score"),
        key(&reference, "score"),
        "resumed weights differ from an uninterrupted run"
    );
    let a = std::fs::read(common::output_file(&env, "resume", "sae", "model")).unwrap();
    let b = std::fs::read(common::output_file(&clean, "resume", "sae", "model")).unwrap();
    assert!(a == b, "model files differ");
    assert!(env.msae(&["cache", "verify"]).status.success());
}

#[test]
fn adding_a_validation_set_never_retrains_and_reports_every_epoch() {
    let data = Synth::new(16, &[32], 1024, 256);
    let base = data.step("data")
        + r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 4
n_latents = 32
epochs = 3
batch_size = 128
"#;
    let env = Env::new();
    let exp = env.write("v.toml", &base);
    assert_eq!(env.run_json(&exp)["run"], 2);
    let with_val = format!("{base}\n[steps.val]\nkind = \"validate\"\nsae = \"sae.snapshots\"\ndata = \"data.test\"\nbatch_size = 100\n");
    env.write("v.toml", &with_val);
    let summary = env.run_json(&exp);
    assert_eq!(with_status(&summary, "ran"), vec!["val"], "{summary}");
    let epochs = output_json(&env, "v", "val", "epochs");
    let epochs = epochs.as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    // 256 rows in batches of 100: three batches, the last partial one counted as one.
    assert_eq!(epochs[0]["batches"], 3);
    // Only Matryoshka models have nesting levels.
    assert!(epochs[0].get("levels").is_none(), "{}", epochs[0]);
    let fvu = |e: usize| epochs[e]["fvu_sparse"].as_f64().unwrap();
    assert!(
        fvu(2) < fvu(0),
        "validation FVU should fall while training: {epochs:?}"
    );
    // The last epoch's snapshot is the final model: its validation equals a fresh evaluation.
    let zero = epochs[2]["zero_fraction_sparse"].as_f64().unwrap();
    assert!(
        (zero - (1.0 - 4.0 / 32.0)).abs() < 1e-9,
        "top-4 of 32 latents: {zero}"
    );

    // Validating a model output instead of snapshots is a clear error.
    env.write("v.toml", &with_val.replace("sae.snapshots", "sae.model"));
    fails_with(
        &env,
        &["run", exp.to_str().unwrap()],
        &["must be a train step's snapshots output"],
    );
}

/// A Matryoshka SAE validated on 250 rows in batches of 100.
fn levels_experiment() -> String {
    Synth::new(16, &[32], 1024, 250).experiment("levels") + LEVELS_STEPS
}

const LEVELS_STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "msae"
n_latents = 48
nesting_start = 4
epochs = 2
batch_size = 128

[steps.val]
kind = "validate"
sae = "sae.snapshots"
data = "data.test"
batch_size = 100
"#;

/// Per-level batch means computed by hand in f64 from the model's weights: standardise with the
/// matrix's own statistics (mean-centred, reference scale √d / mean‖x − μ‖²), compute
/// `P = (x − b_pre)·W_enc + b_lat`, keep each row's k largest entries of P that are positive,
/// decode. Returns, per level, the unweighted means over batches of FVU, cosine, zero fraction
/// and active latents.
fn levels_by_hand(sae: &msae::sae::Sae, x: &[f32], rows: usize, batch: usize) -> Vec<[f64; 4]> {
    let (d, n) = (sae.d, sae.n);
    let vec1 = |t: &candle_core::Tensor| -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    };
    let (b_pre, w_enc, b_lat, w_dec) = (
        vec1(&sae.pre_bias),
        vec1(&sae.encoder),
        vec1(&sae.latent_bias),
        vec1(&sae.decoder),
    );
    let mu: Vec<f64> = (0..d)
        .map(|j| (0..rows).map(|i| x[i * d + j] as f64).sum::<f64>() / rows as f64)
        .collect();
    let mean_sq_norm = (0..rows)
        .map(|i| {
            (0..d)
                .map(|j| (x[i * d + j] as f64 - mu[j]).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / rows as f64;
    let s = (d as f64).sqrt() / mean_sq_norm;
    let mut per_batch: Vec<Vec<[f64; 4]>> = vec![Vec::new(); sae.levels.len()];
    for start in (0..rows).step_by(batch) {
        let end = (start + batch).min(rows);
        let mut sums = vec![[0.0f64; 4]; sae.levels.len()];
        for i in start..end {
            let xs: Vec<f64> = (0..d).map(|j| (x[i * d + j] as f64 - mu[j]) * s).collect();
            let p: Vec<f64> = (0..n)
                .map(|l| {
                    b_lat[l]
                        + (0..d)
                            .map(|j| (xs[j] - b_pre[j]) * w_enc[j * n + l])
                            .sum::<f64>()
                })
                .collect();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            for (li, &k) in sae.levels.iter().enumerate() {
                let mut z = vec![0.0f64; n];
                for &l in &order[..k] {
                    z[l] = p[l].max(0.0);
                }
                let r: Vec<f64> = (0..d)
                    .map(|j| b_pre[j] + (0..n).map(|l| z[l] * w_dec[l * d + j]).sum::<f64>())
                    .collect();
                let centred_ss = |v: &[f64]| {
                    let m = v.iter().sum::<f64>() / d as f64;
                    v.iter().map(|a| (a - m).powi(2)).sum::<f64>()
                };
                let err: Vec<f64> = xs.iter().zip(&r).map(|(a, b)| a - b).collect();
                let fvu = centred_ss(&err) / centred_ss(&xs);
                let dot: f64 = xs.iter().zip(&r).map(|(a, b)| a * b).sum();
                let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
                let cos = dot / (norm(&xs) * norm(&r));
                let active = z.iter().filter(|&&v| v != 0.0).count() as f64;
                for (acc, v) in sums[li]
                    .iter_mut()
                    .zip([fvu, cos, 1.0 - active / n as f64, active])
                {
                    *acc += v;
                }
            }
        }
        for (li, sum) in sums.into_iter().enumerate() {
            per_batch[li].push(sum.map(|v| v / (end - start) as f64));
        }
    }
    per_batch
        .into_iter()
        .map(|b| {
            let mut m = [0.0; 4];
            for v in &b {
                for (a, x) in m.iter_mut().zip(v) {
                    *a += x / b.len() as f64;
                }
            }
            m
        })
        .collect()
}

#[test]
fn matryoshka_validation_reports_every_nesting_level() {
    let env = Env::new();
    let exp = env.write("l.toml", &levels_experiment());
    env.run_json(&exp);
    let epochs = output_json(&env, "levels", "val", "epochs");
    let last = &epochs.as_array().unwrap()[1];
    let levels = last["levels"].as_array().unwrap();
    let ks: Vec<u64> = levels.iter().map(|l| l["k"].as_u64().unwrap()).collect();
    // Doubling from 4 while ≤ 48, then n = 48 appended (docs/reference.md §4.8).
    assert_eq!(ks, vec![4, 8, 16, 32, 48]);

    // The last epoch's snapshot is the final model.
    let sae = msae::sae::Sae::load(
        &common::output_file(&env, "levels", "sae", "model"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let test =
        msae::data::Matrix::open(&common::output_file(&env, "levels", "data", "test")).unwrap();
    let expected = levels_by_hand(&sae, test.data(), 250, 100);
    for (level, want) in levels.iter().zip(&expected) {
        let got = ["fvu", "cos", "zero_fraction", "active"].map(|m| level[m].as_f64().unwrap());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() < 1e-5 * w.abs().max(1.0),
                "k = {}: reported {got:?}, by hand {want:?}",
                level["k"]
            );
        }
        assert!(got[3] <= level["k"].as_f64().unwrap());
    }

    // The first level is the sparse output, the last (k = n) the dense one.
    let (first, dense) = (&levels[0], &levels[levels.len() - 1]);
    for (level, suffix) in [(first, "sparse"), (dense, "dense")] {
        for m in ["fvu", "cos", "l2", "zero_fraction"] {
            let (a, b) = (
                level[m].as_f64().unwrap(),
                last[format!("{m}_{suffix}")].as_f64().unwrap(),
            );
            assert!(
                (a - b).abs() < 1e-12,
                "{m} of level {}: {a} vs {b}",
                level["k"]
            );
        }
    }

    // The table shows the last epoch's levels.
    let rows = table_rows(&env, &exp, "validate");
    for level in levels {
        for m in ["fvu", "cos", "active"] {
            assert_eq!(
                rows[0][format!("level_{m}@{}", level["k"])].as_f64(),
                level[m].as_f64(),
                "{}",
                rows[0]
            );
        }
    }
}
