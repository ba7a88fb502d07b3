//! Devices: `--device` is checked against the machine, every result records the device,
//! precision and msae version that produced it (shown by `status` and `table`, not keyed), and
//! two devices agree within a stated tolerance.
//!
//! The comparison against a GPU runs where `MSAE_TEST_DEVICE` names one (e.g. `cuda:0`) and this
//! build can open it; elsewhere it prints a notice and compares two CPU runs with different
//! thread counts, which must agree exactly.

use crate::common;

use common::{fails_with, table_rows, text, Env, Synth};

/// Relative tolerance within which final training metrics of two devices agree: both compute in
/// f32, and the products sum in different orders, so rounding differs and training may amplify
/// it slightly; a larger gap is a bug, not rounding.
const DEVICE_AGREEMENT_REL: f64 = 1e-3;

/// Synthetic data, a TopK and a BatchTopK SAE, and their top-k scores.
fn dev_experiment() -> String {
    Synth::new(32, &[48], 2048, 256)
        .extra("active = 3.0\n")
        .experiment("dev")
        + SAE_STEPS
}

const SAE_STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
n_latents = 64
epochs = 2
batch_size = 128
lr = 0.005
schedule = "constant"

[[steps.sae.variant]]
arch = "topk"
k = 4

[[steps.sae.variant]]
arch = "batchtopk"
k = 4

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
ks = [1, 4]
"#;

fn run_on(env: &Env, exp: &std::path::Path, device: &str, threads: &str) {
    env.run_json_with(&["--device", device, "--threads", threads], exp);
}

/// Every numeric metric of every `score_topk` row, by instance and column.
fn metrics(env: &Env, exp: &std::path::Path) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for row in table_rows(env, exp, "score_topk") {
        let name = row["instance"].as_str().unwrap().to_string();
        for (col, v) in row.as_object().unwrap() {
            if let Some(x) = v.as_f64() {
                out.push((name.clone(), col.clone(), x));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

#[test]
fn devices_agree_within_the_stated_tolerance() {
    let exp_text = &dev_experiment();
    let cpu = Env::new();
    let exp = cpu.write("dev.toml", exp_text);
    run_on(&cpu, &exp, "cpu", "1");
    let other_device = std::env::var("MSAE_TEST_DEVICE").ok();
    let (other, device, tolerance) = match other_device.as_deref() {
        Some(d) if d != "cpu" => (Env::new(), d.to_string(), DEVICE_AGREEMENT_REL),
        _ => {
            eprintln!(
                "notice: MSAE_TEST_DEVICE names no GPU: comparing two CPU runs (exact) instead of CPU against a GPU"
            );
            (Env::new(), "cpu".to_string(), 0.0)
        }
    };
    let exp_other = other.write("dev.toml", exp_text);
    run_on(&other, &exp_other, &device, "2");
    let a = metrics(&cpu, &exp);
    let b = metrics(&other, &exp_other);
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for ((name, col, x), (name_b, col_b, y)) in a.iter().zip(&b) {
        assert_eq!((name, col), (name_b, col_b));
        let scale = x.abs().max(y.abs()).max(1e-6);
        assert!(
            (x - y).abs() <= tolerance * scale,
            "{name} {col}: {x} on cpu, {y} on {device} (tolerance {tolerance})"
        );
    }
    // The device, precision and version are shown, and the table says which device made each row.
    let rows = table_rows(&other, &exp_other, "train");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["device"], format!("{device} f32"), "{row}");
        assert_eq!(row["msae"], env!("CARGO_PKG_VERSION"), "{row}");
    }
}

#[test]
fn device_is_recorded_shown_and_not_keyed() {
    let env = Env::new();
    let exp = env.write("dev.toml", &dev_experiment());
    run_on(&env, &exp, "cpu", "1");
    let status = env.msae(&["status", exp.to_str().unwrap()]);
    let shown = text(&status);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        shown.contains(&format!("on cpu f32, msae {version}")),
        "{shown}"
    );
    let json = env.msae_json(&["status", "--json", exp.to_str().unwrap()]);
    let first = &json["instances"][0];
    assert_eq!(first["produced_on"], "cpu f32", "{json}");
    assert_eq!(first["msae_version"], version, "{json}");
    // `auto` on a machine without a GPU is the CPU, and the device is not part of any key:
    // everything is cached.
    let summary = env.run_json_with(&["--device", "auto"], &exp);
    assert_eq!(summary["run"], 0, "{summary}");
}

#[test]
fn cuda_without_a_gpu_fails_with_a_message() {
    if candle_core::Device::new_cuda(0).is_ok() {
        eprintln!("notice: this machine has a GPU: the no-GPU message is not exercised here");
        return;
    }
    let env = Env::new();
    let exp = env.write("dev.toml", &dev_experiment());
    for device in ["cuda", "cuda:1"] {
        let msg = fails_with(
            &env,
            &["run", "--device", device, exp.to_str().unwrap()],
            &["--device cpu"],
        );
        assert!(
            msg.contains("without CUDA support") || msg.contains("no usable GPU"),
            "{msg}"
        );
    }
    // Nothing ran and nothing was stored.
    let status = text(&env.msae(&["status", exp.to_str().unwrap()]));
    assert!(!status.contains("done"), "{status}");
}
