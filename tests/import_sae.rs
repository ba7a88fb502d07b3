//! Reference `.pth` checkpoints in, SAELens folders out.
//!
//! The fixtures in tests/fixtures/reference_pth/ were written by `make_fixtures.py` with
//! PyTorch in the reference checkpoint layout, together with what an independent float64 NumPy
//! computation gives on a small matrix (expected.json). msae must reproduce those numbers after
//! importing the checkpoints, find them through a Hugging Face cache, and export SAELens folders
//! whose forward pass (computed here by hand from the exported tensors) matches as well.

use crate::common;

use std::path::{Path, PathBuf};

use common::{assert_fails_with, fails_with, output_file, output_json, table_rows, text, Env};

const TOPK: &str = "32_8_TopKReLU_4_False_False_0.0_toy_train_40_8.pth";
const RELU: &str = "32_8_ReLU_01_False_False_0.0_toy_train_40_8.pth";
const MSAE: &str = "32_8_TopKReLU_4_RW_False_False_0.0_toy_train_40_8.pth";
const D: usize = 8;
const N: usize = 32;

fn fixture(name: &str) -> PathBuf {
    common::repo_path("tests/fixtures/reference_pth").join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn toy_data() -> Vec<Vec<f64>> {
    let bytes = std::fs::read(fixture("toy_eval_40_8.npy")).unwrap();
    let flat: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    flat.chunks(D).map(<[f64]>::to_vec).collect()
}

fn experiment() -> String {
    format!(
        r#"
[experiment]
name = "interop"

[steps.data]
kind = "import"
path = "{data}"
labels = "{labels}"

[steps.topk]
kind = "import_sae"
path = "{topk}"

[steps.relu]
kind = "import_sae"
path = "{relu}"

[steps.msae]
kind = "import_sae"
path = "{msae}"

[steps.codes]
kind = "extract"
sae = ["topk", "relu", "msae"]
data = "data"

[steps.score]
kind = "score_topk"
sae = ["topk", "relu", "msae"]
data = "data"
ks = [2, 8]

[steps.same]
kind = "align"
a = "topk"
b = "topk"

[steps.names]
kind = "name"
sae = "msae"
vocab = "data"

[steps.probe]
kind = "linear_probe"
sae = "relu"
train = "data"
train_labels = "data.labels"
eval = "data"
eval_labels = "data.labels"
ks = [2]
"#,
        data = fixture("toy_eval_40_8.npy").display(),
        labels = fixture("toy_eval_labels.txt").display(),
        topk = fixture(TOPK).display(),
        relu = fixture(RELU).display(),
        msae = fixture(MSAE).display(),
    )
}

fn read_npy_f32(path: &Path) -> Vec<f64> {
    common::npy_f32(path).2.iter().map(|&v| v as f64).collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: msae {g}, independent {w}"
        );
    }
}

/// The step id each fixture is imported under.
const IMPORTS: [(&str, &str); 3] = [("topk", TOPK), ("relu", RELU), ("msae", MSAE)];

#[test]
fn imported_reference_checkpoints_score_as_an_independent_computation_says() {
    let env = Env::new();
    let exp = env.write("interop.toml", &experiment());
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let want = expected();

    let imported = table_rows(&env, &exp, "import_sae");
    for (step, file) in IMPORTS {
        let row = imported.iter().find(|r| r["instance"] == step).unwrap();
        let arch = if step == "relu" { "relu" } else { step };
        assert_eq!(row["arch"], arch, "{row}");
        assert_eq!(row["n_latents"], N);
        let s = want[file]["scaling_factor"].as_f64().unwrap();
        assert!((row["scale"].as_f64().unwrap() - s).abs() < 1e-6, "{row}");
        assert!((row["target_norm"].as_f64().unwrap() - (D as f64).sqrt()).abs() < 1e-6);
    }

    // extract: the dense code and the dense reconstruction, row by row in input order.
    for (step, file) in IMPORTS {
        let instance = format!("codes[sae={step}]");
        let codes = read_npy_f32(&output_file(&env, "interop", &instance, "codes"));
        let recon = read_npy_f32(&output_file(&env, "interop", &instance, "recon"));
        let flat = |m: Vec<Vec<f64>>| m.into_iter().flatten().collect::<Vec<_>>();
        assert_close(
            &instance,
            &codes,
            &flat(matrix(&want[file]["dense_code"])),
            1e-5,
        );
        assert_close(
            &instance,
            &recon,
            &flat(matrix(&want[file]["dense_reconstruction"])),
            1e-5,
        );
    }

    // Imported models feed every downstream step: a model aligned with itself matches every
    // latent with cosine 1, and naming and probing run on them.
    let same = &table_rows(&env, &exp, "align")[0];
    assert!(
        (same["mean_matched_cos"].as_f64().unwrap() - 1.0).abs() < 1e-5,
        "{same}"
    );
    assert_eq!(same["n_pairs"], N);
    naming_is_the_cosine_of_decoder_rows_and_the_centred_vocabulary(&env, &exp);
    probe_reports_are_consistent_on_the_imported_relu_model(&env, &exp);

    // score_topk: mean per-sample FVU and cosine at k = 2 and 8.
    let scores = table_rows(&env, &exp, "score_topk");
    for (step, file) in IMPORTS {
        let row = scores
            .iter()
            .find(|r| r["instance"] == format!("score[sae={step}]"))
            .unwrap_or_else(|| panic!("{scores:?}"));
        for k in ["2", "8"] {
            for (col, key) in [("fvu", "fvu"), ("cos", "cs")] {
                let got = row[format!("{col}@{k}")].as_f64().unwrap();
                let w = want[file]["topk"][k][key].as_f64().unwrap();
                assert!(
                    (got - w).abs() < 1e-5 * (1.0 + w.abs()),
                    "{step} {col}@{k}: {got} vs {w}"
                );
            }
        }
    }
}

/// `name` (centred mode) computed by hand in f64: the cosine of every decoder row of the
/// imported model with every vocabulary row minus the vocabulary's column mean, then for each
/// latent the best and runner-up rows.
fn naming_is_the_cosine_of_decoder_rows_and_the_centred_vocabulary(env: &Env, exp: &Path) {
    let model = std::fs::read(output_file(env, "interop", "msae", "model")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&model).unwrap();
    let decoder: Vec<f64> = st
        .tensor("decoder")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    assert_eq!(decoder.len(), N * D);
    let vocab = toy_data();
    let rows = vocab.len();
    let mean: Vec<f64> = (0..D)
        .map(|c| vocab.iter().map(|r| r[c]).sum::<f64>() / rows as f64)
        .collect();
    let unit = |v: Vec<f64>| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f64>>()
    };
    let centred: Vec<Vec<f64>> = vocab
        .iter()
        .map(|r| unit(r.iter().zip(&mean).map(|(x, m)| x - m).collect()))
        .collect();
    let directions: Vec<Vec<f64>> = decoder.chunks(D).map(|r| unit(r.to_vec())).collect();
    let cos = |i: usize, j: usize| -> f64 {
        centred[i]
            .iter()
            .zip(&directions[j])
            .map(|(a, b)| a * b)
            .sum()
    };
    // The stored similarity matrix, [vocabulary rows, latents].
    let similarity = read_npy_f32(&output_file(env, "interop", "names", "similarity"));
    let want: Vec<f64> = (0..rows)
        .flat_map(|i| (0..N).map(move |j| (i, j)))
        .map(|(i, j)| cos(i, j))
        .collect();
    assert_close("similarity", &similarity, &want, 1e-5);
    // Each latent's name is its most similar row, then the runner-up.
    let names = output_json(env, "interop", "names", "names");
    let names = names.as_array().unwrap();
    assert_eq!(names.len(), N);
    let mut best_sum = 0.0;
    for (j, entry) in names.iter().enumerate() {
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by(|&a, &b| cos(b, j).total_cmp(&cos(a, j)));
        assert_eq!(entry["latent"], j);
        assert_eq!(entry["index"], order[0], "latent {j}: {entry}");
        assert_eq!(entry["word"], order[0].to_string(), "latent {j}: {entry}");
        assert_eq!(entry["runner_up_index"], order[1], "latent {j}: {entry}");
        let score = entry["score"].as_f64().unwrap();
        assert!(
            (score - cos(order[0], j)).abs() < 1e-5,
            "latent {j}: {entry}"
        );
        let second = entry["runner_up_score"].as_f64().unwrap();
        assert!(
            (second - cos(order[1], j)).abs() < 1e-5,
            "latent {j}: {entry}"
        );
        best_sum += cos(order[0], j);
    }
    let row = &table_rows(env, exp, "name")[0];
    let mean_best = row["mean_best_score"].as_f64().unwrap();
    assert!((mean_best - best_sum / N as f64).abs() < 1e-5, "{row}");
}

/// The probe of the imported ReLU model, trained and evaluated on the same 40 rows: the
/// training and evaluation reports are the same numbers, the table shows the report's values,
/// and agreement is a whole number of rows with the spread of 0/1 values.
fn probe_reports_are_consistent_on_the_imported_relu_model(env: &Env, exp: &Path) {
    let report = output_json(env, "interop", "probe", "report");
    let row = &table_rows(env, exp, "linear_probe")[0];
    let rows = toy_data().len();
    let dense = &report["dense"];
    assert_eq!(dense["train"], dense["eval"], "{report}");
    assert_eq!(dense["eval"]["rows"], rows);
    for (col, key) in [("kl", "kl_mean"), ("agreement", "agreement_mean")] {
        assert_eq!(row[col], dense["eval"][key], "{row}\n{report}");
    }
    assert_eq!(row["kl@2"], report["topk"]["2"]["eval"]["kl_mean"]);
    assert_eq!(
        row["agreement@2"],
        report["topk"]["2"]["eval"]["agreement_mean"]
    );
    assert_eq!(
        row["macro_f1"], report["probe"]["final_macro_f1"],
        "{report}"
    );
    for part in [&dense["eval"], &report["topk"]["2"]["eval"]] {
        let a = part["agreement_mean"].as_f64().unwrap();
        let agreeing = a * rows as f64;
        assert!((agreeing - agreeing.round()).abs() < 1e-9, "{part}");
        let std = part["agreement_std"].as_f64().unwrap();
        assert!((std - (a * (1.0 - a)).sqrt()).abs() < 1e-9, "{part}");
        let kl = part["kl_mean"].as_f64().unwrap();
        assert!(kl.is_finite() && kl >= 0.0, "{part}");
    }
}

/// A Hugging Face cache holding `file` of `org/toy-saes` at commit `c0ffee`, as the hub's
/// tools lay it out.
fn hub_cache(env: &Env, file: &str) -> PathBuf {
    let home = env.path("hf");
    let saes =
        common::hub_snapshot(&home.join("hub"), "models", "org/toy-saes", "c0ffee").join("saes");
    std::fs::create_dir_all(&saes).unwrap();
    std::fs::copy(fixture(file), saes.join(file)).unwrap();
    home
}

#[test]
fn checkpoints_come_from_the_hugging_face_cache_when_offline() {
    let env = Env::new();
    let home = hub_cache(&env, TOPK);
    let exp = env.write(
        "hub.toml",
        &format!(
            r#"
[experiment]
name = "hub"

[steps.local]
kind = "import_sae"
path = "{local}"

[steps.hub]
kind = "import_sae"
repo = "org/toy-saes"
file = "saes/{TOPK}"
"#,
            local = fixture(TOPK).display()
        ),
    );
    // Runs an experiment against the fake cache, with the network forbidden.
    let run_offline = |exp: &Path| {
        env.offline()
            .env("HF_HOME", &home)
            .env_remove("HF_HUB_CACHE")
            .args(["run", exp.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run_offline(&exp);
    assert!(out.status.success(), "{}", text(&out));
    let rows = table_rows(&env, &exp, "import_sae");
    let hub = rows.iter().find(|r| r["instance"] == "hub").unwrap();
    assert_eq!(hub["source"], "org/toy-saes@c0ffee", "{hub}");
    // The same checkpoint gives the same model, byte for byte, wherever it came from.
    let a = std::fs::read(output_file(&env, "hub", "hub", "model")).unwrap();
    let b = std::fs::read(output_file(&env, "hub", "local", "model")).unwrap();
    assert_eq!(a, b);

    // A file the cache does not hold, offline: a clear error and exit status 1.
    let missing = env.write(
        "missing.toml",
        r#"
[experiment]
name = "missing"

[steps.hub]
kind = "import_sae"
repo = "org/toy-saes"
file = "saes/absent.pth"
"#,
    );
    assert_fails_with(
        &run_offline(&missing),
        &["is not in the hub cache", "HF_HUB_OFFLINE"],
    );
}

#[test]
fn misnamed_or_damaged_checkpoints_are_refused_clearly() {
    let env = Env::new();
    let renamed = env.path("my_sae.pth");
    std::fs::copy(fixture(TOPK), &renamed).unwrap();
    let garbage = env.path("32_8_TopKReLU_4_False_False_0.0_x.pth");
    std::fs::write(&garbage, b"not a zip archive at all").unwrap();
    let wrong_size = env.path("64_8_TopKReLU_4_False_False_0.0_x.pth");
    std::fs::copy(fixture(TOPK), &wrong_size).unwrap();
    let tied = env.path("32_8_TopKReLU_4_True_False_0.0_x.pth");
    std::fs::copy(fixture(TOPK), &tied).unwrap();
    for (path, needle) in [
        (&renamed, "does not follow the reference checkpoint naming"),
        (&garbage, "is not a PyTorch zip checkpoint"),
        (
            &wrong_size,
            "`encoder` has shape [8, 32] but the file name says n = 64, d = 8",
        ),
    ] {
        let exp = env.write(
            "bad.toml",
            &format!(
                "[experiment]\nname = \"bad\"\n[steps.sae]\nkind = \"import_sae\"\npath = \"{}\"\n",
                path.display()
            ),
        );
        fails_with(&env, &["run", exp.to_str().unwrap()], &[needle]);
    }
    let both = env.write(
        "both.toml",
        &format!(
            "[experiment]\nname = \"both\"\n[steps.sae]\nkind = \"import_sae\"\npath = \"{}\"\nrepo = \"a/b\"\nfile = \"x.pth\"\n",
            fixture(TOPK).display()
        ),
    );
    fails_with(
        &env,
        &["run", both.to_str().unwrap()],
        &["either `path` or `repo` + `file`"],
    );
}

/// SAELens' inference forward pass on raw inputs, in float64, from an exported folder.
struct SaeLens {
    cfg: serde_json::Value,
    w_enc: Vec<f64>,
    b_enc: Vec<f64>,
    w_dec: Vec<f64>,
    b_dec: Vec<f64>,
}

impl SaeLens {
    fn load(dir: &Path) -> SaeLens {
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("sae_weights.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let get = |name: &str, shape: &[usize]| -> Vec<f64> {
            let t = st.tensor(name).unwrap();
            assert_eq!(t.shape(), shape, "{name}");
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect()
        };
        SaeLens {
            w_enc: get("W_enc", &[D, N]),
            b_enc: get("b_enc", &[N]),
            w_dec: get("W_dec", &[N, D]),
            b_dec: get("b_dec", &[D]),
            cfg,
        }
    }

    fn encode(&self, x: &[f64]) -> Vec<f64> {
        let mut pre = self.b_enc.clone();
        for (i, xi) in x.iter().enumerate() {
            let centred = xi - self.b_dec[i];
            for (j, p) in pre.iter_mut().enumerate() {
                *p += centred * self.w_enc[i * N + j];
            }
        }
        let relu: Vec<f64> = pre.iter().map(|p| p.max(0.0)).collect();
        match self.cfg["architecture"].as_str().unwrap() {
            "standard" => relu,
            "topk" => keep_topk(&relu, self.cfg["k"].as_u64().unwrap() as usize),
            other => panic!("unexpected architecture {other}"),
        }
    }

    fn decode(&self, z: &[f64]) -> Vec<f64> {
        let mut out = self.b_dec.clone();
        for (j, zj) in z.iter().enumerate() {
            for (i, o) in out.iter_mut().enumerate() {
                *o += zj * self.w_dec[j * D + i];
            }
        }
        out
    }
}

fn keep_topk(z: &[f64], k: usize) -> Vec<f64> {
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
    let mut out = vec![0.0; z.len()];
    for &j in &order[..k] {
        out[j] = z[j];
    }
    out
}

#[test]
fn saelens_exports_compute_what_the_imported_models_compute() {
    let env = Env::new();
    let exp = env.write("interop.toml", &experiment());
    assert_eq!(env.run_json(&exp)["failed"], 0);
    let want = expected();
    let data = toy_data();
    for (step, file, architecture) in [
        ("topk", TOPK, "topk"),
        ("relu", RELU, "standard"),
        // A Matryoshka model is exported as the level msae scores: TopK at its first k (4).
        ("msae", MSAE, "topk"),
    ] {
        let dir = env.path(&format!("export-{step}"));
        let out = env.msae(&[
            "export",
            exp.to_str().unwrap(),
            step,
            "--format",
            "saelens",
            "--to",
            dir.to_str().unwrap(),
            "--model-name",
            "toy",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let sae = SaeLens::load(&dir);
        assert_eq!(sae.cfg["architecture"], architecture);
        assert_eq!(sae.cfg["d_in"], D);
        assert_eq!(sae.cfg["d_sae"], N);
        assert_eq!(sae.cfg["normalize_activations"], "none");
        assert_eq!(sae.cfg["apply_b_dec_to_input"], true);
        assert_eq!(sae.cfg["metadata"]["model_name"], "toy");
        let dense = matrix(&want[file]["dense_code"]);
        let recon = matrix(&want[file]["dense_reconstruction"]);
        for (r, x) in data.iter().enumerate() {
            let z = sae.encode(x);
            if architecture == "topk" {
                // The exported TopK keeps each row's 4 largest positive pre-activations.
                assert_eq!(sae.cfg["k"], 4);
                assert_close("topk code", &z, &keep_topk(&dense[r], 4), 1e-5);
            } else {
                assert_close(&format!("{step} code"), &z, &dense[r], 1e-5);
                assert_close(&format!("{step} recon"), &sae.decode(&z), &recon[r], 1e-5);
            }
        }
    }
    // A raw export copies the stored file; a non-model output cannot become a SAELens folder.
    let raw = env.path("raw");
    let (e, to) = (exp.to_str().unwrap(), raw.to_str().unwrap());
    let out = env.msae(&["export", e, "score[sae=topk]", "--to", to]);
    assert!(out.status.success(), "{}", text(&out));
    let copied = std::fs::read(raw.join("scores.json")).unwrap();
    assert_eq!(
        copied,
        std::fs::read(output_file(&env, "interop", "score[sae=topk]", "scores")).unwrap()
    );
    fails_with(
        &env,
        &[
            "export",
            e,
            "score[sae=topk]",
            "--format",
            "saelens",
            "--to",
            to,
        ],
        &["is not an SAE model"],
    );
    fails_with(
        &env,
        &["export", e, "scroe[sae=topk]", "--to", to],
        &["did you mean `score[sae=topk]`"],
    );
}
