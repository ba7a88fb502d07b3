//! Experiment files and the data they import: the synthetic-data opening that most test
//! experiments share, and labelled Gaussian blobs for the probe and naming steps.

use super::{write_npy, Env};

/// The `[experiment]` table named `name`, with further `settings` lines (`seed = 7\n`), and the
/// blank line before the steps.
pub fn experiment_table(name: &str, settings: &str) -> String {
    format!("[experiment]\nname = \"{name}\"\n{settings}\n")
}

/// A synthetic-data step (`kind = "synth"`): the input most test experiments start from, written
/// once here as TOML so that each test states only its sizes.
#[derive(Clone, Copy)]
pub struct Synth<'a> {
    dim: usize,
    n_features: &'a [usize],
    train: usize,
    test: usize,
    extra: &'a str,
}

impl<'a> Synth<'a> {
    /// `dim`-dimensional data from `n_features` planted features (several values: a grid,
    /// written `[32, 48]`), with `train` and `test` rows; the order of the TOML keys.
    pub const fn new(dim: usize, n_features: &'a [usize], train: usize, test: usize) -> Self {
        Synth {
            dim,
            n_features,
            train,
            test,
            extra: "",
        }
    }

    /// With further lines of the step after the sizes (`active = 3.0\n`).
    pub const fn extra(self, extra: &'a str) -> Self {
        Synth { extra, ..self }
    }

    /// The step as `[steps.NAME]`.
    pub fn step(&self, name: &str) -> String {
        let n_features = match self.n_features {
            [one] => one.to_string(),
            many => {
                let values: Vec<String> = many.iter().map(usize::to_string).collect();
                format!("[{}]", values.join(", "))
            }
        };
        format!(
            "[steps.{name}]\nkind = \"synth\"\ndim = {}\nn_features = {n_features}\ntrain = {}\ntest = {}\n{}",
            self.dim, self.train, self.test, self.extra
        )
    }

    /// An experiment named `name` that starts with this step as `[steps.data]`; the test appends
    /// its own steps.
    pub fn experiment(&self, name: &str) -> String {
        self.experiment_with(name, "")
    }

    /// [`Synth::experiment`] with further lines of the `[experiment]` table (`seed = 7\n`).
    pub fn experiment_with(&self, name: &str, settings: &str) -> String {
        experiment_table(name, settings) + &self.step("data")
    }
}

/// A tiny deterministic Gaussian generator (Box–Muller over a 64-bit LCG), so that test data are
/// the same on every machine.
pub struct Gauss(pub u64);

impl Gauss {
    /// A uniform value in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal value.
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// How a blob coordinate, centre + 0.5 · noise, is rounded to f32. The tests that use the blobs
/// were written with different roundings, which differ in the last bit of a few values; each
/// keeps its own, so its data stay what they were.
#[derive(Clone, Copy)]
pub enum Rounding {
    /// The noise rounded to f32, then the sum in f32 (the analysis steps' data).
    Noise,
    /// The sum in f64, rounded once (the report page's data).
    Sum,
}

/// `rows` points from 4 Gaussian blobs in 16 dimensions (class c centred at 3 on coordinates 2c
/// and 2c + 1, spread 0.5), with labels "a".."d", one a line.
pub fn blobs(g: &mut Gauss, rows: usize, rounding: Rounding) -> (Vec<f32>, String) {
    let d = 16;
    let mut x = Vec::with_capacity(rows * d);
    let mut labels = String::new();
    for r in 0..rows {
        let class = r % 4;
        for j in 0..d {
            let centre = if j / 2 == class { 3.0 } else { 0.0 };
            let noise = g.normal();
            x.push(match rounding {
                Rounding::Noise => centre as f32 + 0.5 * noise as f32,
                Rounding::Sum => (centre + 0.5 * noise) as f32,
            });
        }
        labels.push_str(["a", "b", "c", "d"][class]);
        labels.push('\n');
    }
    (x, labels)
}

/// The import steps `train` and `eval` of the files [`write_blobs`] writes (matrices with labels).
pub const BLOB_IMPORTS: &str = r#"[steps.train]
kind = "import"
path = "train.npy"
labels = "train.labels.txt"

[steps.eval]
kind = "import"
path = "eval.npy"
labels = "eval.labels.txt"
"#;

/// Writes labelled blobs for [`BLOB_IMPORTS`]: 400 training then 200 evaluation rows from
/// `Gauss(seed)`, in `train.npy` and `eval.npy` with `train.labels.txt` and `eval.labels.txt`.
/// Returns the evaluation labels.
pub fn write_blobs(env: &Env, seed: u64, rounding: Rounding) -> String {
    let mut g = Gauss(seed);
    let (train, train_labels) = blobs(&mut g, 400, rounding);
    let (eval, eval_labels) = blobs(&mut g, 200, rounding);
    write_npy(&env.path("train.npy"), 400, 16, &train);
    write_npy(&env.path("eval.npy"), 200, 16, &eval);
    env.write("train.labels.txt", &train_labels);
    env.write("eval.labels.txt", &eval_labels);
    eval_labels
}
