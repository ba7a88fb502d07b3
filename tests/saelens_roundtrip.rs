//! msae models out to SAELens folders and back in: every architecture comes back as the model it
//! was (configuration, standardisation, levels, thresholds), with its weights equal up to the
//! float32 rounding of the standardisation fold, and scores the same; a Matryoshka model is
//! exported as the level msae scores (or the level asked for), checked against the NumPy oracle
//! of SAELens' forward pass.

use crate::common;

use std::path::Path;

use common::{fails_with, output_file, table_rows, text, Env, Synth};

/// One training step per architecture, with small sizes.
const ARCHS: [(&str, &str); 5] = [
    ("relu", "arch = \"relu\"\nl1 = 0.003\n"),
    ("topk", "arch = \"topk\"\nk = 6\n"),
    ("batchtopk", "arch = \"batchtopk\"\nk = 6\n"),
    ("jumprelu", "arch = \"jumprelu\"\n"),
    ("msae", "arch = \"msae\"\nnesting_start = 4\n"),
];

fn trained(imports: bool) -> String {
    let mut toml = Synth::new(16, &[48], 2000, 500).experiment_with("rt", "seed = 3\n");
    let names: Vec<String> = ARCHS.iter().map(|(a, _)| format!("\"sae_{a}\"")).collect();
    for (arch, settings) in ARCHS {
        toml += &format!(
            "\n[steps.sae_{arch}]\nkind = \"train\"\ndata = \"data.train\"\nexpansion = 4\nepochs = 2\nbatch_size = 128\nlr = 0.004\n{settings}"
        );
    }
    let evals = |prefix: &str, saes: &[String]| {
        format!(
            "\n[steps.{prefix}codes]\nkind = \"extract\"\nsae = [{list}]\ndata = \"data.test\"\n\n[steps.{prefix}score]\nkind = \"score_topk\"\nsae = [{list}]\ndata = \"data.test\"\nks = [4, 8]\n",
            list = saes.join(", ")
        )
    };
    toml += &evals("", &names);
    if imports {
        let imported: Vec<String> = ARCHS.iter().map(|(a, _)| format!("\"imp_{a}\"")).collect();
        for (arch, _) in ARCHS {
            toml +=
                &format!("\n[steps.imp_{arch}]\nkind = \"import_sae\"\nfolder = \"saes/{arch}\"\n");
        }
        toml += &evals("imp_", &imported);
    }
    toml
}

/// The model file's tensors and metadata.
struct Model {
    meta: serde_json::Value,
    tensors: std::collections::HashMap<String, Vec<f32>>,
}

fn model(path: &Path) -> Model {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = serde_json::from_str(&header.metadata().as_ref().unwrap()["msae"]).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect();
    Model { meta, tensors }
}

fn export(env: &Env, exp: &Path, instance: &str, to: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "export",
        exp.to_str().unwrap(),
        instance,
        "--format",
        "saelens",
        "--to",
        to,
    ];
    args.extend(extra);
    let out = env.msae(&args);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (*x as f64, *y as f64);
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn every_architecture_comes_back_as_the_model_it_was() {
    let env = Env::new();
    let exp = env.write("rt.toml", &trained(false));
    assert_eq!(env.run_json(&exp)["failed"], 0);
    for (arch, _) in ARCHS {
        let to = env.path(&format!("saes/{arch}"));
        export(
            &env,
            &exp,
            &format!("sae_{arch}"),
            to.to_str().unwrap(),
            &[],
        );
    }
    // The same experiment with the exported folders imported: the trained instances are cached.
    std::fs::write(&exp, trained(true)).unwrap();
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["cached"], 1 + ARCHS.len() * 3, "{summary}");

    let imported = table_rows(&env, &exp, "import_sae");
    for (arch, _) in ARCHS {
        let row = imported
            .iter()
            .find(|r| r["instance"] == format!("imp_{arch}"))
            .unwrap();
        assert_eq!(
            row["restored"], "the msae model it was exported from",
            "{row}"
        );
        assert_eq!(row["arch"], arch, "{row}");

        let a = model(&output_file(&env, "rt", &format!("sae_{arch}"), "model"));
        let b = model(&output_file(&env, "rt", &format!("imp_{arch}"), "model"));
        // Everything but the folded weights comes back bit for bit.
        for key in [
            "config",
            "d",
            "n",
            "scale",
            "target_norm",
            "batchtopk_threshold",
            "levels",
            "level_weights",
        ] {
            assert_eq!(a.meta[key], b.meta[key], "{arch}: {key}");
        }
        assert_eq!(a.tensors["mean_center"], b.tensors["mean_center"], "{arch}");
        assert_eq!(a.tensors["latent_bias"], b.tensors["latent_bias"], "{arch}");
        if arch == "jumprelu" {
            // Possibly another log-threshold, but the same threshold: exp(log θ) is what fires.
            let exp_of = |m: &Model| {
                m.tensors["log_threshold"]
                    .iter()
                    .map(|l| l.exp())
                    .collect::<Vec<f32>>()
            };
            assert_eq!(exp_of(&a), exp_of(&b), "{arch}: thresholds");
        }
        // The fold multiplies by s and divides by s in float32, which for s not a power of two
        // maps neighbouring values onto one: the weights come back within an ulp or two of the
        // folded value, not bit for bit.
        let s = a.meta["scale"].as_f64().unwrap();
        assert!(
            s.log2().fract() != 0.0,
            "s = {s} is a power of two, which folds exactly"
        );
        for name in ["encoder", "decoder"] {
            let (x, y) = (&a.tensors[name], &b.tensors[name]);
            let differ = x.iter().zip(y).filter(|(p, q)| p != q).count();
            for (p, q) in x.iter().zip(y) {
                assert!(
                    ((p - q) / p.abs().max(1e-30)).abs() <= 3.0 * f32::EPSILON,
                    "{arch} {name}: {p} vs {q}"
                );
            }
            eprintln!(
                "{arch} {name}: {differ} of {} values differ by the fold's rounding",
                x.len()
            );
        }
        let scale = a.tensors["pre_bias"]
            .iter()
            .chain(&a.tensors["mean_center"])
            .fold(0f32, |m, v| m.max(v.abs()));
        for (p, q) in a.tensors["pre_bias"].iter().zip(&b.tensors["pre_bias"]) {
            assert!(
                (p - q).abs() <= 4.0 * f32::EPSILON * scale * s as f32,
                "{arch} pre_bias: {p} vs {q}"
            );
        }

        // The same codes and reconstructions to 1e-6, dense and sparse.
        for output in ["codes", "recon", "sparse_codes", "sparse_recon"] {
            let x = common::npy_f32(&output_file(
                &env,
                "rt",
                &format!("codes[sae=sae_{arch}]"),
                output,
            ))
            .2;
            let y = common::npy_f32(&output_file(
                &env,
                "rt",
                &format!("imp_codes[sae=imp_{arch}]"),
                output,
            ))
            .2;
            assert_close(&format!("{arch} {output}"), &x, &y, 1e-6);
        }
    }
    // The same metrics, from extract and from score_topk.
    for kind in ["extract", "score_topk"] {
        let rows = table_rows(&env, &exp, kind);
        for (arch, _) in ARCHS {
            let find = |sae: &str| {
                rows.iter()
                    .find(|r| {
                        r["instance"]
                            .as_str()
                            .unwrap()
                            .ends_with(&format!("[sae={sae}]"))
                    })
                    .unwrap()
                    .clone()
            };
            let (a, b) = (find(&format!("sae_{arch}")), find(&format!("imp_{arch}")));
            let mut compared = 0;
            for (key, va) in a.as_object().unwrap() {
                let (Some(x), Some(y)) = (va.as_f64(), b[key].as_f64()) else {
                    continue;
                };
                assert!(
                    (x - y).abs() <= 1e-6 * (1.0 + x.abs()),
                    "{kind} {arch} {key}: {x} vs {y}"
                );
                compared += 1;
            }
            assert!(compared >= 4, "{kind} {arch}: {a}");
        }
    }
}

#[test]
fn a_matryoshka_model_is_exported_as_the_level_msae_scores() {
    let env = Env::new();
    let exp = env.write("rt.toml", &trained(false));
    assert_eq!(env.run_json(&exp)["failed"], 0);
    let e = exp.to_str().unwrap();
    let dir = |name: &str| env.path(name).to_str().unwrap().to_string();
    let cfg = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(env.path(name).join("cfg.json")).unwrap()).unwrap()
    };
    // n = 64 latents: nesting levels 4, 8, 16, 32, 64.
    let said = export(&env, &exp, "sae_msae", &dir("first"), &[]);
    assert!(said.contains("Matryoshka level 0 of 5 (nesting levels [4, 8, 16, 32, 64], k = 4) as a SAELens `topk` SAE with k = 4"), "{said}");
    assert_eq!(cfg("first")["architecture"], "topk");
    assert_eq!(cfg("first")["k"], 4);
    let said = export(&env, &exp, "sae_msae", &dir("second"), &["--level", "1"]);
    assert!(said.contains("level 1") && said.contains("k = 8"), "{said}");
    assert_eq!(cfg("second")["k"], 8);
    export(&env, &exp, "sae_msae", &dir("last"), &["--level", "4"]);
    assert_eq!(cfg("last")["architecture"], "standard");
    fails_with(
        &env,
        &[
            "export",
            e,
            "sae_msae",
            "--format",
            "saelens",
            "--to",
            &dir("x"),
            "--level",
            "5",
        ],
        &["level 5 does not exist", "5 levels (0 to 4)"],
    );
    fails_with(
        &env,
        &[
            "export",
            e,
            "sae_topk",
            "--format",
            "saelens",
            "--to",
            &dir("x"),
            "--level",
            "0",
        ],
        &["only a Matryoshka model has levels"],
    );

    // SAELens' forward pass on the default export is the code msae scores: level 0's TopK.
    let Some(python) = common::test_python() else {
        return;
    };
    let data = output_file(&env, "rt", "data", "test");
    let (codes, recon) = (env.path("o_codes.npy"), env.path("o_recon.npy"));
    let args = [
        common::oracle("saelens_numpy.py").into_os_string(),
        env.path("first").into_os_string(),
        data.into_os_string(),
        codes.clone().into_os_string(),
        recon.clone().into_os_string(),
    ];
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    common::run_python(&python, &refs);
    let want_codes = common::read_npy_f64(&codes).2;
    let want_recon = common::read_npy_f64(&recon).2;
    let got_codes = common::npy_f32(&output_file(
        &env,
        "rt",
        "codes[sae=sae_msae]",
        "sparse_codes",
    ))
    .2;
    let got_recon = common::npy_f32(&output_file(
        &env,
        "rt",
        "codes[sae=sae_msae]",
        "sparse_recon",
    ))
    .2;
    assert_eq!(got_codes.len(), want_codes.len());
    let per_row = |c: &[f64]| {
        c.chunks(64)
            .map(|r| r.iter().filter(|v| **v > 0.0).count())
            .max()
            .unwrap()
    };
    assert_eq!(per_row(&want_codes), 4, "the export keeps 4 latents a row");
    for (what, got, want) in [
        ("codes", &got_codes, &want_codes),
        ("recon", &got_recon, &want_recon),
    ] {
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}[{i}]: msae {g}, SAELens {w}"
            );
        }
    }
}
