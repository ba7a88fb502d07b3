//! `top_examples` end to end: on data the test makes (rows repeated so that activations tie, a
//! wide TopK SAE so that some latents never fire) its output equals a brute-force ranking of the
//! model's sparse code (written by `extract`), does not depend on the thread count, and bad
//! input is refused with the parameter named.

use crate::common;

use common::{output_file, text, write_npy, Env};

/// 60 distinct rows, each written three times (rows i, i + 60, i + 120 are equal).
fn write_repeated_rows(env: &Env) {
    let (distinct, d) = (60, 16);
    let mut values = Vec::new();
    for copy in 0..3 {
        for i in 0..distinct {
            for c in 0..d {
                let _ = copy;
                values.push((((i * 31 + c * 17) % 23) as f32 - 11.0) / 7.0);
            }
        }
    }
    write_npy(&env.path("m.npy"), 3 * distinct, d, &values);
    let texts: String = (0..3 * distinct).map(|i| format!("item {i}\n")).collect();
    std::fs::write(env.path("texts.txt"), texts).unwrap();
}

const EXPERIMENT: &str = r#"
[experiment]
name = "top"

[steps.data]
kind = "import"
path = "m.npy"
texts = "texts.txt"

[steps.sae]
kind = "train"
data = "data"
arch = "topk"
k = 2
n_latents = 96
epochs = 2
batch_size = 32
lr = 0.01

[steps.codes]
kind = "extract"
sae = "sae"
data = "data"

[steps.top]
kind = "top_examples"
sae = "sae"
data = "data"
texts = "data.texts"
n = 4
batch_size = 7
"#;

/// Every latent's (row, value) list from a code matrix: positive values, value descending,
/// row ascending, the first `keep`.
fn brute_force(codes: &msae::data::Matrix, keep: usize) -> Vec<Vec<(u64, f32)>> {
    (0..codes.cols())
        .map(|j| {
            let mut all: Vec<(u64, f32)> = (0..codes.rows())
                .filter(|&i| codes.row(i)[j] > 0.0)
                .map(|i| (i as u64, codes.row(i)[j]))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(keep);
            all
        })
        .collect()
}

#[test]
fn top_examples_equal_a_brute_force_ranking_with_ties_and_silent_latents() {
    let env = Env::new();
    write_repeated_rows(&env);
    let exp = env.write("top.toml", EXPERIMENT);
    let summary = env.run_json_with(&["--threads", "1"], &exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let codes =
        msae::data::Matrix::open(&output_file(&env, "top", "codes", "sparse_codes")).unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output_file(&env, "top", "top", "latents")).unwrap())
            .unwrap();
    assert_eq!(doc["rows"], 180);
    assert_eq!(doc["n_latents"], 96);
    let expected = brute_force(&codes, 4);
    let latents = doc["latents"].as_array().unwrap();
    let (mut ties, mut silent) = (0, 0);
    for (j, l) in latents.iter().enumerate() {
        let got: Vec<(u64, f32)> = l["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["row"].as_u64().unwrap(),
                    e["value"].as_f64().unwrap() as f32,
                )
            })
            .collect();
        assert_eq!(got, expected[j], "latent {j}");
        for e in l["top"].as_array().unwrap() {
            assert_eq!(e["text"], format!("item {}", e["row"]));
        }
        let column: Vec<f32> = (0..180)
            .map(|i| codes.row(i)[j])
            .filter(|&v| v > 0.0)
            .collect();
        let frequency = column.len() as f64 / 180.0;
        assert_eq!(l["frequency"].as_f64().unwrap(), frequency, "latent {j}");
        let max = column.iter().cloned().fold(0.0f32, f32::max);
        assert_eq!(l["max"].as_f64().unwrap() as f32, max, "latent {j}");
        let mean = column.iter().map(|&v| v as f64).sum::<f64>() / column.len().max(1) as f64;
        assert!((l["mean_when_firing"].as_f64().unwrap() - mean).abs() < 1e-12);
        let counted: u64 = l["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(counted as usize, column.len());
        assert!(l["level"].is_null(), "a TopK model has no levels");
        // Every row is written three times, so a latent that fires has equal values at rows
        // i, i + 60, i + 120: the lower rows must come first.
        if got.len() >= 2 && got[0].1 == got[1].1 {
            ties += 1;
            assert!(got[0].0 < got[1].0);
        }
        silent += got.is_empty() as usize;
    }
    assert!(ties > 5, "the data must produce ties ({ties})");
    assert!(silent > 0, "some latents must never fire");
    let table = text(&env.msae(&["table", exp.to_str().unwrap(), "--kind", "top_examples"]));
    assert!(table.contains("never_fire"), "{table}");
}

#[test]
fn the_output_bytes_do_not_depend_on_the_thread_count() {
    let outputs: Vec<Vec<u8>> = ["1", "2"]
        .iter()
        .map(|threads| {
            let env = Env::new();
            write_repeated_rows(&env);
            let exp = env.write("top.toml", EXPERIMENT);
            let summary = env.run_json_with(&["--threads", threads], &exp);
            assert_eq!(summary["failed"], 0, "{summary}");
            std::fs::read(output_file(&env, "top", "top", "latents")).unwrap()
        })
        .collect();
    assert!(
        outputs[0] == outputs[1],
        "1 and 2 threads wrote different bytes"
    );
}

#[test]
fn texts_of_another_length_and_a_matrix_of_another_width_are_refused() {
    let env = Env::new();
    write_repeated_rows(&env);
    // Texts of a two-row matrix given for the 180 rows of `data`.
    std::fs::write(env.path("short.txt"), "one\ntwo\n").unwrap();
    write_npy(&env.path("small.npy"), 2, 16, &[0.5; 32]);
    write_npy(&env.path("wide.npy"), 4, 17, &[0.5; 68]);
    let exp = env.write(
        "bad.toml",
        &(EXPERIMENT
            .replace("name = \"top\"", "name = \"bad\"")
            .replace("texts = \"data.texts\"\n", "texts = \"short.texts\"\n")
            + "\n[steps.short]\nkind = \"import\"\npath = \"small.npy\"\ntexts = \"short.txt\"\n"),
    );
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out);
    assert!(
        shown.contains("`texts`") && shown.contains("has 2 lines but `data` has 180 rows"),
        "{shown}"
    );

    let exp = env.write(
        "wide.toml",
        &(EXPERIMENT.replace("name = \"top\"", "name = \"wide\"")
            + "\n[steps.wide]\nkind = \"import\"\npath = \"wide.npy\"\n\n[steps.top_wide]\nkind = \"top_examples\"\nsae = \"sae\"\ndata = \"wide\"\n"),
    );
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out);
    assert!(
        shown.contains("top_wide") && shown.contains("17 columns but the SAE expects 16"),
        "{shown}"
    );
}
