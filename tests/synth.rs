//! `synth`'s SynthSAEBench-like model (`firing = "bernoulli"`) end to end: every row is its true
//! codes times the dictionary plus the one bias vector, children fire only with their parents and
//! mutually exclusive siblings never together, the firing rates follow the Zipfian
//! probabilities; its options are refused with the Poisson model.

use crate::common;

use common::{npy_f32, output_file, Env, Synth};
use msae::data::csr::read_csr;

const BENCH: &str = r#"firing = "bernoulli"
zipf = 0.5
max_prob = 0.4
min_prob = 0.05
noise = 0.0
bias = 0.5
correlation_rank = 3
hierarchy_roots = 2
branching = 3
depth = 2
exclusive = 1.0
scale_children = true
magnitude_first = 3.0
magnitude_last = 2.0
magnitude_std_mean = 0.3
magnitude_std_spread = 0.2
"#;

#[test]
fn rows_are_codes_times_the_dictionary_and_the_hierarchy_holds() {
    let env = Env::new();
    let (dim, features, rows) = (12, 40, 3000);
    let exp = env.write(
        "bench.toml",
        &Synth::new(dim, &[features], rows, 10)
            .extra(BENCH)
            .experiment("bench"),
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let (_, _, x) = npy_f32(&output_file(&env, "bench", "data", "train"));
    let (_, _, dict) = npy_f32(&output_file(&env, "bench", "data", "dictionary"));
    let codes = read_csr(&output_file(&env, "bench", "data", "train_codes")).unwrap();
    assert_eq!((codes.rows, codes.cols), (rows, features));

    // Row − Σ a_j d_j is the same vector of norm 0.5 in every row (no noise).
    let mut bias: Option<Vec<f64>> = None;
    let mut fired = vec![0usize; features];
    for r in 0..rows {
        let (idx, val) = codes.row(r);
        let mut rest: Vec<f64> = x[r * dim..(r + 1) * dim]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mut active = vec![false; features];
        for (&j, &a) in idx.iter().zip(val) {
            assert!(a > 0.0, "row {r}: stored activation {a}");
            active[j as usize] = true;
            fired[j as usize] += 1;
            for t in 0..dim {
                rest[t] -= a as f64 * dict[j as usize * dim + t] as f64;
            }
        }
        match &bias {
            None => bias = Some(rest),
            Some(b) => {
                let diff = b
                    .iter()
                    .zip(&rest)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f64::max);
                assert!(diff < 1e-4, "row {r}: the remainder differs by {diff}");
            }
        }
        // The forest, numbered breadth-first: roots 0, 1; children 2–4 of 0, 5–7 of 1; then
        // 8–10 of 2, … 23–25 of 7. Features 26–39 are outside it.
        for f in 2..26 {
            let parent = if f < 8 { (f - 2) / 3 } else { 2 + (f - 8) / 3 };
            assert!(
                !active[f] || active[parent],
                "row {r}: {f} without {parent}"
            );
        }
        for first in (2..26).step_by(3) {
            let on = (first..first + 3).filter(|&c| active[c]).count();
            assert!(on <= 1, "row {r}: {on} exclusive siblings from {first}");
        }
    }
    let norm = bias.unwrap().iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((norm - 0.5).abs() < 1e-5, "bias norm {norm}");

    // Outside the forest, features fire at their Zipfian probabilities (clipped magnitudes
    // aside: a mean of at least 2 and a standard deviation below 1 rarely reach 0).
    let r: Vec<f64> = (0..features).map(|j| ((j + 1) as f64).powf(-0.5)).collect();
    for j in [26, 30, 39] {
        let p = 0.05 + 0.35 * (r[j] - r[features - 1]) / (r[0] - r[features - 1]);
        let freq = fired[j] as f64 / rows as f64;
        let se = (p * (1.0 - p) / rows as f64).sqrt();
        assert!(
            (freq - p).abs() < 5.0 * se + 0.01,
            "feature {j}: {freq} vs {p}"
        );
    }
}

#[test]
fn bernoulli_options_need_the_bernoulli_model() {
    let env = Env::new();
    let exp = env.write(
        "poisson.toml",
        &Synth::new(8, &[6], 50, 10)
            .extra("max_prob = 0.3\n")
            .experiment("poisson"),
    );
    common::fails_with(
        &env,
        &["run", exp.to_str().unwrap()],
        &["`max_prob`", "firing = \"bernoulli\""],
    );
    let exp = env.write(
        "probs.toml",
        &Synth::new(8, &[6], 50, 10)
            .extra("firing = \"bernoulli\"\nmax_prob = 0.1\nmin_prob = 0.2\n")
            .experiment("probs"),
    );
    common::fails_with(
        &env,
        &["run", exp.to_str().unwrap()],
        &["0 < `min_prob` < `max_prob` ≤ 1"],
    );
}
