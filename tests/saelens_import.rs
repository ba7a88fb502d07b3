//! SAELens folders in: every architecture msae reads, with each normalisation setting, written
//! here with random weights; the imported model's codes and reconstructions of 1,000 rows against
//! a float64 NumPy oracle of SAELens' forward pass (tests/oracles/saelens_numpy.py); folders from
//! a Hugging Face cache; the settings msae refuses.

use crate::common;

use std::path::Path;

use common::{assert_fails_with, output_file, table_rows, text, Env, Gauss};

const D: usize = 16;
const N: usize = 64;
const ROWS: usize = 1000;

/// One SAELens folder to write: its `cfg.json` and how its tensors are stored.
struct Case {
    name: &'static str,
    cfg: serde_json::Value,
    /// Store the four main tensors as bfloat16 (SAELens casts them to the config's dtype).
    bf16: bool,
    /// `activation_scaler.json`'s factor, written beside the weights.
    scaler: Option<f64>,
    /// The step's `norm_scaling_factor`.
    factor: Option<f64>,
}

fn cfg(architecture: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "architecture": architecture,
        "d_in": D,
        "d_sae": N,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.5.0", "model_name": "toy", "hook_name": "blocks.0.hook_resid_post"},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn cases() -> Vec<Case> {
    use serde_json::json;
    let case = |name, cfg| Case {
        name,
        cfg,
        bf16: false,
        scaler: None,
        factor: None,
    };
    vec![
        case("standard", cfg("standard", json!({}))),
        case(
            "standard_no_bdec",
            cfg("standard", json!({"apply_b_dec_to_input": false})),
        ),
        case("topk", cfg("topk", json!({"k": 5}))),
        case(
            "topk_rescaled",
            cfg(
                "topk",
                json!({"k": 7, "rescale_acts_by_decoder_norm": true}),
            ),
        ),
        Case {
            bf16: true,
            ..case("jumprelu_bf16", cfg("jumprelu", json!({})))
        },
        case(
            "batchtopk",
            cfg("batchtopk", json!({"k": 6.0, "topk_threshold_lr": 0.01})),
        ),
        case(
            "matryoshka",
            cfg(
                "matryoshka_batchtopk",
                json!({"k": 6, "matryoshka_widths": [8, 24, N], "rescale_acts_by_decoder_norm": false, "apply_b_dec_to_input": false}),
            ),
        ),
        case(
            "expected_no_factor",
            cfg(
                "standard",
                json!({"normalize_activations": "expected_average_only_in"}),
            ),
        ),
        Case {
            scaler: Some(0.37),
            ..case(
                "expected_scaler",
                cfg(
                    "jumprelu",
                    json!({"normalize_activations": "expected_average_only_in"}),
                ),
            )
        },
        Case {
            factor: Some(2.5),
            ..case(
                "expected_factor",
                cfg(
                    "topk",
                    json!({"k": 4, "normalize_activations": "expected_average_only_in"}),
                ),
            )
        },
    ]
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// bfloat16 bytes: the upper half of each float32 (its values are then exactly representable).
fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}

/// Writes `case` into `dir` with random weights drawn from `g`.
fn write_folder(dir: &Path, case: &Case, g: &mut Gauss) {
    std::fs::create_dir_all(dir).unwrap();
    let mut draw = |len: usize, scale: f64| -> Vec<f32> {
        (0..len).map(|_| (g.normal() * scale) as f32).collect()
    };
    let w_enc = draw(D * N, 0.4);
    let b_enc = draw(N, 0.3);
    let w_dec = draw(N * D, 0.3);
    let b_dec = draw(D, 0.5);
    let arch = case.cfg["architecture"].as_str().unwrap();
    // JumpReLU thresholds: a few at or below zero (plain ReLU), the rest spread over the
    // pre-activations' range.
    let threshold: Vec<f32> = (0..N)
        .map(|j| {
            if j % 9 == 0 {
                -0.1 * (j % 2) as f32
            } else {
                0.05 * (j % 13) as f32
            }
        })
        .collect();
    let main: Vec<(&str, Vec<f32>, Vec<usize>)> = vec![
        ("W_enc", w_enc, vec![D, N]),
        ("b_enc", b_enc, vec![N]),
        ("W_dec", w_dec, vec![N, D]),
        ("b_dec", b_dec, vec![D]),
    ];
    let mut raw: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = main
        .into_iter()
        .map(|(name, v, shape)| {
            if case.bf16 {
                (
                    name.to_string(),
                    safetensors::Dtype::BF16,
                    shape,
                    bf16_bytes(&v),
                )
            } else {
                (
                    name.to_string(),
                    safetensors::Dtype::F32,
                    shape,
                    f32_bytes(&v),
                )
            }
        })
        .collect();
    if arch == "jumprelu" {
        raw.push((
            "threshold".into(),
            safetensors::Dtype::F32,
            vec![N],
            f32_bytes(&threshold),
        ));
    }
    if arch.ends_with("batchtopk") {
        // SAELens keeps the training threshold as a float64 scalar buffer.
        raw.push((
            "topk_threshold".into(),
            safetensors::Dtype::F64,
            vec![],
            0.35f64.to_le_bytes().to_vec(),
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(dir.join("sae_weights.safetensors"), bytes).unwrap();
    std::fs::write(
        dir.join("cfg.json"),
        serde_json::to_vec_pretty(&case.cfg).unwrap(),
    )
    .unwrap();
    if let Some(c) = case.scaler {
        std::fs::write(
            dir.join("activation_scaler.json"),
            format!("{{\"scaling_factor\": {c}}}"),
        )
        .unwrap();
    }
}

/// 1,000 raw rows, not centred, with a spread of norms.
fn write_data(env: &Env, g: &mut Gauss) -> std::path::PathBuf {
    let values: Vec<f32> = (0..ROWS * D)
        .map(|i| (0.3 + g.normal() * (1.0 + (i / D % 5) as f64 * 0.3)) as f32)
        .collect();
    let path = env.path("rows.npy");
    common::write_npy(&path, ROWS, D, &values);
    path
}

fn import_steps(cases: &[Case]) -> String {
    let mut toml = String::new();
    for c in cases {
        toml += &format!(
            "\n[steps.{}]\nkind = \"import_sae\"\nfolder = \"saes/{}\"\n",
            c.name, c.name
        );
        if let Some(f) = c.factor {
            toml += &format!("norm_scaling_factor = {f}\n");
        }
    }
    let names: Vec<String> = cases.iter().map(|c| format!("\"{}\"", c.name)).collect();
    toml += &format!(
        "\n[steps.codes]\nkind = \"extract\"\nsae = [{}]\ndata = \"rows\"\nbatch_size = 300\n",
        names.join(", ")
    );
    toml
}

/// `got` (float32, from msae) against `want` (float64, from the oracle), entry by entry.
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs() / (1.0 + w.abs());
        worst = worst.max(err);
        assert!(err <= tol, "{what}[{i}]: msae {g}, oracle {w}");
    }
    eprintln!("{what}: worst relative error {worst:.2e}");
}

/// Runs the oracle on `folder` and returns its codes and reconstructions.
fn oracle(
    python: &Path,
    env: &Env,
    folder: &Path,
    data: &Path,
    factor: Option<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let (codes, recon) = (env.path("oracle_codes.npy"), env.path("oracle_recon.npy"));
    let mut args = vec![
        common::oracle("saelens_numpy.py").into_os_string(),
        folder.as_os_str().to_owned(),
        data.as_os_str().to_owned(),
        codes.as_os_str().to_owned(),
        recon.as_os_str().to_owned(),
    ];
    if let Some(f) = factor {
        args.push(f.to_string().into());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    common::run_python(python, &refs);
    (
        common::read_npy_f64(&codes).2,
        common::read_npy_f64(&recon).2,
    )
}

#[test]
fn every_architecture_and_normalisation_computes_saelens_forward_pass() {
    let env = Env::new();
    let mut g = Gauss(0x5ae1e75);
    let cases = cases();
    for c in &cases {
        write_folder(&env.path(&format!("saes/{}", c.name)), c, &mut g);
    }
    let data = write_data(&env, &mut g);
    let exp = env.write(
        "saelens.toml",
        &(common::experiment_table("saelens", "")
            + &format!(
                "[steps.rows]\nkind = \"import\"\npath = \"{}\"\n",
                data.display()
            )
            + &import_steps(&cases)),
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");

    // What the import reports.
    let rows = table_rows(&env, &exp, "import_sae");
    let row = |name: &str| rows.iter().find(|r| r["instance"] == name).unwrap().clone();
    assert_eq!(row("topk")["arch"], "topk");
    assert_eq!(row("topk")["k"], 5);
    assert_eq!(row("standard")["model_name"], "toy");
    assert_eq!(row("batchtopk")["arch"], "batchtopk");
    assert_eq!(row("batchtopk")["topk_threshold"], 0.35);
    assert_eq!(
        row("matryoshka")["saelens_architecture"],
        "matryoshka_batchtopk"
    );
    assert_eq!(
        row("matryoshka")["matryoshka_widths"],
        serde_json::json!([8, 24, N])
    );
    assert_eq!(row("jumprelu_bf16")["arch"], "jumprelu");
    assert!(row("expected_no_factor")["note"]
        .as_str()
        .unwrap()
        .contains("without a scaling factor"));
    assert_eq!(row("expected_scaler")["norm_scaling_factor"], 0.37);
    assert!((row("expected_factor")["scale"].as_f64().unwrap() - 2.5).abs() < 1e-6);
    // msae keeps log-thresholds: those no float32 logarithm reproduces exactly are counted (they
    // move by an ulp or two; the forward pass below still matches SAELens').
    for name in ["jumprelu_bf16", "expected_scaler"] {
        let inexact = row(name)["thresholds_inexact"].as_u64().unwrap_or(0);
        assert!(inexact < N as u64, "{}", row(name));
    }

    let Some(python) = common::test_python() else {
        return;
    };
    for c in &cases {
        let folder = env.path(&format!("saes/{}", c.name));
        let (codes, recon) = oracle(&python, &env, &folder, &data, c.factor);
        let instance = format!("codes[sae={}]", c.name);
        let got_codes = common::npy_f32(&output_file(&env, "saelens", &instance, "sparse_codes")).2;
        let got_recon = common::npy_f32(&output_file(&env, "saelens", &instance, "sparse_recon")).2;
        // The codes are sparse but not empty: the comparison sees both firing and silent latents.
        let firing = codes.iter().filter(|v| **v > 0.0).count();
        assert!(
            firing > ROWS && firing < ROWS * N / 2 + ROWS * N / 4,
            "{}: {firing} firing",
            c.name
        );
        assert_close(&format!("{} codes", c.name), &got_codes, &codes, 1e-5);
        assert_close(&format!("{} recon", c.name), &got_recon, &recon, 1e-5);
    }
}

#[test]
fn a_saelens_folder_comes_from_the_hugging_face_cache_offline() {
    let env = Env::new();
    let mut g = Gauss(7);
    let case = &cases()[2];
    write_folder(&env.path("local"), case, &mut g);
    let home = env.path("hf");
    let snapshot = common::hub_snapshot(&home.join("hub"), "models", "org/saelens-saes", "beef01");
    let in_repo = snapshot.join("blocks.0.hook_resid_post");
    std::fs::create_dir_all(&in_repo).unwrap();
    for f in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(env.path("local").join(f), in_repo.join(f)).unwrap();
    }
    let exp = env.write(
        "hub.toml",
        r#"
[experiment]
name = "hub"

[steps.local]
kind = "import_sae"
folder = "local"

[steps.hub]
kind = "import_sae"
repo = "org/saelens-saes"
folder = "blocks.0.hook_resid_post"
"#,
    );
    let out = env
        .offline()
        .env("HF_HOME", &home)
        .env_remove("HF_HUB_CACHE")
        .args(["run", exp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows = table_rows(&env, &exp, "import_sae");
    let hub = rows.iter().find(|r| r["instance"] == "hub").unwrap();
    assert_eq!(
        hub["source"],
        "org/saelens-saes@beef01:blocks.0.hook_resid_post"
    );
    let a = std::fs::read(output_file(&env, "hub", "hub", "model")).unwrap();
    let b = std::fs::read(output_file(&env, "hub", "local", "model")).unwrap();
    assert_eq!(
        a, b,
        "the same folder gives the same model wherever it came from"
    );
}

#[test]
fn folders_msae_cannot_read_are_refused_with_the_supported_settings() {
    let env = Env::new();
    let mut g = Gauss(11);
    let bad = [
        (
            "gated",
            cfg("gated", serde_json::json!({})),
            vec![
                "`gated` is not supported",
                "standard, topk, jumprelu, batchtopk, matryoshka_batchtopk",
            ],
        ),
        (
            "layer_norm",
            cfg(
                "standard",
                serde_json::json!({"normalize_activations": "layer_norm"}),
            ),
            vec![
                "layer_norm",
                "cannot express",
                "none, expected_average_only_in",
            ],
        ),
        (
            "rescale",
            cfg(
                "standard",
                serde_json::json!({"normalize_activations": "constant_norm_rescale"}),
            ),
            vec!["constant_norm_rescale", "its own norm"],
        ),
        (
            "bad_k",
            cfg("topk", serde_json::json!({"k": 100})),
            vec!["integer k in 1..=64"],
        ),
    ];
    for (name, c, expected) in bad {
        let case = Case {
            name,
            cfg: c,
            bf16: false,
            scaler: None,
            factor: None,
        };
        write_folder(&env.path(name), &case, &mut g);
        let exp = env.write(
            "bad.toml",
            &format!("[experiment]\nname = \"bad\"\n[steps.sae]\nkind = \"import_sae\"\nfolder = \"{name}\"\n"),
        );
        assert_fails_with(&env.msae(&["run", exp.to_str().unwrap()]), &expected);
    }
    // No architecture at all, and a folder without weights.
    let dir = env.path("bare");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cfg.json"), r#"{"d_in": 16, "d_sae": 64}"#).unwrap();
    let exp = env.write(
        "bare.toml",
        "[experiment]\nname = \"bare\"\n[steps.sae]\nkind = \"import_sae\"\nfolder = \"bare\"\n",
    );
    assert_fails_with(
        &env.msae(&["run", exp.to_str().unwrap()]),
        &["has no sae_weights.safetensors"],
    );
    std::fs::copy(
        env.path("gated/sae_weights.safetensors"),
        dir.join("sae_weights.safetensors"),
    )
    .unwrap();
    assert_fails_with(
        &env.msae(&["run", exp.to_str().unwrap()]),
        &[
            "has no `architecture`",
            "standard, topk, jumprelu, batchtopk, matryoshka_batchtopk",
        ],
    );
    // A folder and a checkpoint at once.
    let both = env.write(
        "both.toml",
        "[experiment]\nname = \"both\"\n[steps.sae]\nkind = \"import_sae\"\nfolder = \"bare\"\npath = \"x.pth\"\n",
    );
    std::fs::write(env.path("x.pth"), b"x").unwrap();
    assert_fails_with(
        &env.msae(&["run", both.to_str().unwrap()]),
        &["give one of them"],
    );
}
