//! Through the binary: the `train` step's result table has `final_loss`, `final_active` and
//! `dead` for every run, however short; the auxiliary dead-latent loss is reached from the
//! experiment file, written into the log, and refused for an architecture without it.

use crate::common;

use common::{fails_with, output_json, table_rows, Env, Synth};

/// One short training (10 steps) twice: with the default windows, longer than the run, and
/// with windows of exactly its 10 steps, which give it one loss record and one dead count. The
/// windows only decide what is logged, so both train the same model.
const SHORT: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 2
n_latents = 64
epochs = 2
batch_size = 128

[[steps.sae.variant]]
log_every = 100
check_dead = 1000

[[steps.sae.variant]]
log_every = 10
check_dead = 10
"#;

#[test]
fn a_run_shorter_than_its_windows_reports_its_loss_activity_and_dead_latents() {
    let env = Env::new();
    let exp = env.write(
        "short.toml",
        &(Synth::new(16, &[24], 640, 64).experiment("short") + SHORT),
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let rows = table_rows(&env, &exp, "train");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |log_every: u64| {
        rows.iter()
            .find(|r| r["log_every"] == log_every)
            .unwrap_or_else(|| panic!("no row with log_every = {log_every}: {rows:?}"))
    };
    let (short, exact) = (row(100), row(10));
    let log = output_json(&env, "short", short["instance"].as_str().unwrap(), "log");
    assert!(log["steps"].as_array().unwrap().is_empty(), "{log}");
    assert!(log["dead"].as_array().unwrap().is_empty(), "{log}");
    // The run without records reports what the run with one record over all its steps logs.
    for metric in ["final_loss", "final_active", "dead"] {
        assert!(exact[metric].is_number(), "{exact}");
        assert_eq!(short[metric], exact[metric], "{metric}: {short} vs {exact}");
    }
    assert_eq!(short["steps"], 10, "{short}");
    // TopK keeps at most k = 2 latents per row; 64 latents over 1280 rows cannot all be dead.
    let active = short["final_active"].as_f64().unwrap();
    assert!(active > 0.0 && active <= 2.0, "{short}");
    assert!(short["dead"].as_u64().unwrap() < 64, "{short}");
}

#[test]
fn the_auxiliary_loss_is_logged_and_refused_for_relu() {
    let env = Env::new();
    let exp = env.write(
        "aux.toml",
        &(Synth::new(16, &[24], 640, 64).experiment("aux")
            + r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 2
n_latents = 64
epochs = 2
batch_size = 128
log_every = 1
aux_k_coef = 0.5
aux_k = 4
aux_dead_steps = 2
"#),
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let log = output_json(&env, "aux", "sae", "log");
    let steps = log["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 10);
    // No latent can be dead before its third step without firing; later some are, and the
    // term is part of the loss.
    for s in &steps[..3] {
        assert_eq!(s["aux"], 0.0, "{s}");
    }
    assert!(
        steps.iter().any(|s| s["aux"].as_f64().unwrap() > 0.0),
        "{log}"
    );
    for s in steps {
        let (loss, rec, aux) = (
            s["loss"].as_f64().unwrap(),
            s["rec"].as_f64().unwrap(),
            s["aux"].as_f64().unwrap(),
        );
        assert!((loss - rec - aux).abs() < 1e-5 * loss.abs().max(1.0), "{s}");
    }

    let bad = env.write(
        "relu.toml",
        &(Synth::new(16, &[24], 640, 64).experiment("relu")
            + r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "relu"
epochs = 1
aux_k_coef = 0.03125
"#),
    );
    fails_with(
        &env,
        &["run", bad.to_str().unwrap()],
        &[
            "aux_k_coef",
            "\"topk\", \"batchtopk\" and \"msae\", not \"relu\"",
        ],
    );
}
