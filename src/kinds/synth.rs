//! `synth`: embedding-like data with a planted sparse dictionary, so that later steps can measure
//! how well an SAE recovers known features.
//!
//! Model: `n_features` random unit directions in `dim` dimensions. Each sample activates
//! `max(1, Poisson(active))` distinct features, chosen with power-law probabilities
//! `p_j ∝ (j+1)^-zipf` (feature 0 is the most frequent), each with a coefficient drawn uniformly
//! from [0.5, 1.5]; isotropic Gaussian noise of expected norm `noise` is added.
//! Rows are generated in fixed chunks, each from its own seeded stream, so the bytes depend only
//! on the parameters, never on the thread count.
//!
//! With `firing = "bernoulli"` the features follow the SynthSAEBench-like model of
//! [`super::synth_bench`] instead (Zipfian firing probabilities, optional low-rank correlation,
//! a hierarchy with mutually exclusive children, per-feature magnitudes); `bias` adds one fixed
//! random vector of that norm to every row. Those parameters are absent by default, so the keys
//! and bytes of the Poisson model are as they were.

use std::path::Path;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{weighted::WeightedAliasIndex, Distribution, Normal, Poisson};
use rayon::prelude::*;

use crate::data::csr::write_csr;
use crate::data::npy::{write_matrix, NpyWriter};
use crate::kinds::synth_bench::{BenchConfig, BenchModel, HierarchyConfig};
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::{Metrics, Step, StepContext};

pub struct Synth;

const CHUNK: usize = 1024;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "dim",
        ty: ParamType::Int,
        default: Default::Int(64),
        gridable: true,
        min: Some(2.0),
        max: Some(65536.0),
        doc: "embedding dimension",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "n_features",
        ty: ParamType::Int,
        default: Default::Int(256),
        gridable: true,
        min: Some(1.0),
        max: Some(1_048_576.0),
        doc: "number of planted dictionary directions",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "train",
        ty: ParamType::Int,
        default: Default::Int(20000),
        gridable: true,
        min: Some(1.0),
        doc: "rows of the training matrix",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "test",
        ty: ParamType::Int,
        default: Default::Int(2000),
        gridable: true,
        min: Some(1.0),
        doc: "rows of the test matrix",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "active",
        ty: ParamType::Float,
        default: Default::Float(4.0),
        gridable: true,
        min: Some(0.01),
        doc: "mean number of active features per sample",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "zipf",
        ty: ParamType::Float,
        default: Default::Float(1.0),
        gridable: true,
        min: Some(0.0),
        max: Some(10.0),
        doc: "power-law exponent of feature frequencies (0 = uniform)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "noise",
        ty: ParamType::Float,
        default: Default::Float(0.01),
        gridable: true,
        min: Some(0.0),
        doc: "expected L2 norm of the added Gaussian noise",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "seed",
        ty: ParamType::Int,
        default: Default::ExperimentSeed,
        gridable: true,
        min: Some(0.0),
        doc: "random seed (defaults to the experiment's seed)",
        role: Role::Keyed,
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "firing",
        ty: ParamType::Choice(&["poisson", "bernoulli"]),
        default: Default::Absent,
        gridable: true,
        doc: "poisson (default): max(1, Poisson(active)) features per row; bernoulli: every feature fires with its own Zipfian probability (SynthSAEBench-like; the options below)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "max_prob",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        max: Some(1.0),
        doc: "bernoulli: firing probability of feature 0 (default 0.4)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "min_prob",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        max: Some(1.0),
        doc: "bernoulli: firing probability of the last feature (default 5e-4)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "correlation_rank",
        ty: ParamType::Int,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        doc: "bernoulli: rank of the Gaussian copula correlating the firing (default 0: independent)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "correlation_scale",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        doc: "bernoulli: standard deviation of the copula's factor entries (default 0.1)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "hierarchy_roots",
        ty: ParamType::Int,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        doc: "bernoulli: trees of the feature hierarchy over the first features (default 0: none)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "branching",
        ty: ParamType::Int,
        default: Default::Absent,
        gridable: true,
        min: Some(1.0),
        doc: "bernoulli: children of every hierarchy node above `depth` (default 4)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "depth",
        ty: ParamType::Int,
        default: Default::Absent,
        gridable: true,
        min: Some(1.0),
        doc: "bernoulli: levels of children below the roots (default 3)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "exclusive",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        max: Some(1.0),
        doc: "bernoulli: share of the parents whose children are mutually exclusive (default 1)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "compensate",
        ty: ParamType::Bool,
        default: Default::Absent,
        doc: "bernoulli: raise the probabilities of hierarchy children so that they fire about as often as p_j (default false)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "scale_children",
        ty: ParamType::Bool,
        default: Default::Absent,
        doc: "bernoulli: multiply a child's activation by its parent's over the parent's mean magnitude (default false)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "magnitude_first",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        doc: "bernoulli: mean activation of feature 0, linear to `magnitude_last` (default 1)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "magnitude_last",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        doc: "bernoulli: mean activation of the last feature (default 1)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "magnitude_std_mean",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        doc: "bernoulli: each feature's activation std is |magnitude_std_mean + magnitude_std_spread·N(0,1)| (default 0)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "magnitude_std_spread",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        doc: "bernoulli: see `magnitude_std_mean` (default 0)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "bias",
        ty: ParamType::Float,
        default: Default::Absent,
        gridable: true,
        min: Some(0.0),
        doc: "norm of one fixed random vector added to every row (default 0)",
        ..ParamSpec::BASE
    },
];

/// The parameters only `firing = "bernoulli"` reads.
const BERNOULLI_ONLY: [&str; 14] = [
    "max_prob",
    "min_prob",
    "correlation_rank",
    "correlation_scale",
    "hierarchy_roots",
    "branching",
    "depth",
    "exclusive",
    "compensate",
    "scale_children",
    "magnitude_first",
    "magnitude_last",
    "magnitude_std_mean",
    "magnitude_std_spread",
];

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "train",
        optional: false,
        doc: "training matrix [train, dim] (.npy)",
    },
    OutputSpec {
        name: "test",
        optional: false,
        doc: "test matrix [test, dim] (.npy)",
    },
    OutputSpec {
        name: "dictionary",
        optional: false,
        doc: "planted unit directions [n_features, dim] (.npy)",
    },
    OutputSpec {
        name: "train_codes",
        optional: false,
        doc: "true sparse codes of the training rows (CSR in safetensors: indptr, indices, values)",
    },
    OutputSpec {
        name: "test_codes",
        optional: false,
        doc: "true sparse codes of the test rows (CSR in safetensors)",
    },
];

/// Settings shared by both splits.
struct Model {
    dim: usize,
    dictionary: Vec<f32>,
    pick: WeightedAliasIndex<f64>,
    n_features: usize,
    active: f64,
    noise_std: f64,
    seed: u64,
    /// The SynthSAEBench-like model, with `firing = "bernoulli"`.
    bench: Option<BenchModel>,
    /// Added to every row, with `bias` > 0.
    bias: Option<Vec<f32>>,
}

/// One generated split: dense rows plus their codes in CSR form.
struct Split {
    rows: Vec<f32>,
    indptr: Vec<i64>,
    indices: Vec<i32>,
    values: Vec<f32>,
}

impl Model {
    fn rng(&self, split: u64, chunk: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(split * (1 << 40) + chunk + 1);
        rng
    }

    /// Generates rows `chunk*CHUNK ..` of a split.
    fn chunk(&self, split: u64, chunk: usize, n: usize) -> Split {
        let mut rng = self.rng(split, chunk as u64);
        let poisson = Poisson::new(self.active).expect("active > 0 is validated");
        let normal = Normal::new(0.0, self.noise_std.max(f64::MIN_POSITIVE)).expect("finite std");
        let mut out = Split {
            rows: vec![0.0; n * self.dim],
            indptr: Vec::with_capacity(n),
            indices: Vec::new(),
            values: Vec::new(),
        };
        if let Some(bench) = &self.bench {
            return self.bench_chunk(bench, &mut rng, &normal, out, n);
        }
        let mut chosen: Vec<usize> = Vec::new();
        for r in 0..n {
            let want = (poisson.sample(&mut rng) as usize).clamp(1, self.n_features);
            chosen.clear();
            // Rejection keeps features distinct; bounded so a tiny dictionary cannot spin.
            let mut tries = 0;
            while chosen.len() < want && tries < 64 * want {
                let j = self.pick.sample(&mut rng);
                if !chosen.contains(&j) {
                    chosen.push(j);
                }
                tries += 1;
            }
            chosen.sort_unstable();
            let row = &mut out.rows[r * self.dim..(r + 1) * self.dim];
            for &j in &chosen {
                let c: f32 = rng.random_range(0.5..1.5);
                let dir = &self.dictionary[j * self.dim..(j + 1) * self.dim];
                for (x, d) in row.iter_mut().zip(dir) {
                    *x += c * d;
                }
                out.indices.push(j as i32);
                out.values.push(c);
            }
            if let Some(b) = &self.bias {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
            if self.noise_std > 0.0 {
                for x in row.iter_mut() {
                    *x += normal.sample(&mut rng) as f32;
                }
            }
            out.indptr.push(chosen.len() as i64);
        }
        out
    }

    /// `chunk` for the SynthSAEBench-like model: each row's activations from `bench`, its
    /// firing features (activation > 0) as the codes, the row `Σ a_j d_j` plus bias and noise.
    fn bench_chunk(
        &self,
        bench: &BenchModel,
        rng: &mut ChaCha8Rng,
        normal: &Normal<f64>,
        mut out: Split,
        n: usize,
    ) -> Split {
        let mut a = vec![0f32; self.n_features];
        let mut shared = Vec::new();
        for r in 0..n {
            bench.sample(rng, &mut a, &mut shared);
            let row = &mut out.rows[r * self.dim..(r + 1) * self.dim];
            let mut count = 0;
            for (j, &c) in a.iter().enumerate() {
                if c > 0.0 {
                    let dir = &self.dictionary[j * self.dim..(j + 1) * self.dim];
                    for (x, d) in row.iter_mut().zip(dir) {
                        *x += c * d;
                    }
                    out.indices.push(j as i32);
                    out.values.push(c);
                    count += 1;
                }
            }
            if let Some(b) = &self.bias {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
            if self.noise_std > 0.0 {
                for x in row.iter_mut() {
                    *x += normal.sample(rng) as f32;
                }
            }
            out.indptr.push(count);
        }
        out
    }

    fn split(&self, split: u64, rows: usize) -> Split {
        let chunks: Vec<Split> = (0..rows.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| self.chunk(split, c, CHUNK.min(rows - c * CHUNK)))
            .collect();
        let mut all = Split {
            rows: Vec::with_capacity(rows * self.dim),
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        };
        for c in chunks {
            all.rows.extend_from_slice(&c.rows);
            for count in c.indptr {
                let last = *all.indptr.last().expect("starts with 0");
                all.indptr.push(last + count);
            }
            all.indices.extend_from_slice(&c.indices);
            all.values.extend_from_slice(&c.values);
        }
        all
    }
}

fn write_codes(path: &Path, split: &Split, n_features: usize) -> Result<()> {
    write_csr(
        path,
        &split.indptr,
        &split.indices,
        &split.values,
        n_features,
    )
}

/// A separate stream of the step's seed for each fixed part drawn after the dictionary, so that
/// adding an option never changes the dictionary or the Poisson rows.
fn side_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((1 << 62) + stream);
    rng
}

/// The SynthSAEBench-like model when `firing = "bernoulli"`; its options are refused otherwise.
fn bench_model(
    ctx: &StepContext,
    n_features: usize,
    zipf: f64,
    seed: u64,
) -> Result<Option<BenchModel>> {
    let p = &ctx.params;
    if p.get("firing").and_then(|v| v.as_str()) != Some("bernoulli") {
        if let Some(name) = BERNOULLI_ONLY.iter().find(|n| p.contains_key(**n)) {
            bail!("`{name}` belongs to the SynthSAEBench-like model; set `firing = \"bernoulli\"` to use it");
        }
        return Ok(None);
    }
    let float =
        |name: &str, default: f64| p.get(name).and_then(|v| v.as_float()).unwrap_or(default);
    let int =
        |name: &str, default: i64| p.get(name).and_then(|v| v.as_int()).unwrap_or(default) as usize;
    let flag = |name: &str| p.get(name).and_then(|v| v.as_bool()).unwrap_or(false);
    let roots = int("hierarchy_roots", 0);
    let cfg = BenchConfig {
        n_features,
        zipf,
        max_prob: float("max_prob", 0.4),
        min_prob: float("min_prob", 5e-4),
        correlation_rank: int("correlation_rank", 0),
        correlation_scale: float("correlation_scale", 0.1),
        hierarchy: (roots > 0).then(|| HierarchyConfig {
            roots,
            branching: int("branching", 4),
            depth: int("depth", 3),
            exclusive: float("exclusive", 1.0),
            compensate: flag("compensate"),
            scale_children: flag("scale_children"),
        }),
        magnitude_first: float("magnitude_first", 1.0),
        magnitude_last: float("magnitude_last", 1.0),
        magnitude_std_mean: float("magnitude_std_mean", 0.0),
        magnitude_std_spread: float("magnitude_std_spread", 0.0),
    };
    Ok(Some(BenchModel::new(&cfg, &mut side_rng(seed, 1))?))
}

/// A random direction of norm `bias`, when `bias` > 0.
fn bias_vector(ctx: &StepContext, dim: usize, seed: u64) -> Result<Option<Vec<f32>>> {
    let norm = ctx
        .params
        .get("bias")
        .and_then(|v| v.as_float())
        .unwrap_or(0.0);
    if norm <= 0.0 {
        return Ok(None);
    }
    let mut rng = side_rng(seed, 2);
    let gauss = Normal::new(0.0f64, 1.0).expect("unit normal");
    loop {
        let v: Vec<f64> = (0..dim).map(|_| gauss.sample(&mut rng)).collect();
        let len = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if len > 1e-6 {
            return Ok(Some(v.iter().map(|x| (x / len * norm) as f32).collect()));
        }
    }
}

impl Step for Synth {
    step_info!(kind: "synth", version: 2, about: "synthetic embeddings with a planted sparse dictionary (known ground truth)");

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dim = ctx.usize("dim")?;
        let n_features = ctx.usize("n_features")?;
        let zipf = ctx.float("zipf")?;
        let seed = ctx.int("seed")? as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let gauss = Normal::new(0.0f32, 1.0).expect("unit normal");
        let mut dictionary = vec![0f32; n_features * dim];
        for row in dictionary.chunks_mut(dim) {
            loop {
                for x in row.iter_mut() {
                    *x = gauss.sample(&mut rng);
                }
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 1e-6 {
                    row.iter_mut().for_each(|x| *x /= norm);
                    break;
                }
            }
        }
        let weights: Vec<f64> = (0..n_features)
            .map(|j| ((j + 1) as f64).powf(-zipf))
            .collect();
        let model = Model {
            dim,
            pick: WeightedAliasIndex::new(weights)?,
            dictionary,
            n_features,
            active: ctx.float("active")?,
            noise_std: ctx.float("noise")? / (dim as f64).sqrt(),
            seed,
            bench: bench_model(ctx, n_features, zipf, seed)?,
            bias: bias_vector(ctx, dim, seed)?,
        };
        let bar = ctx.progress.bar(2, "synth: generating");
        let mut metrics = Metrics::new();
        for (split_id, name) in [(0u64, "train"), (1, "test")] {
            let rows = ctx.usize(name)?;
            let split = model.split(split_id, rows);
            let mut w = NpyWriter::create(&ctx.output_path(name), rows, dim)?;
            w.write_rows(&split.rows)?;
            w.finish()?;
            write_codes(
                &ctx.output_path(&format!("{name}_codes")),
                &split,
                n_features,
            )?;
            if name == "train" {
                let mean_active = split.values.len() as f64 / rows as f64;
                let mean_norm = split
                    .rows
                    .chunks(dim)
                    .map(|r| r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt())
                    .sum::<f64>()
                    / rows as f64;
                metrics.insert("mean_active".into(), mean_active.into());
                metrics.insert("mean_norm".into(), mean_norm.into());
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        write_matrix(
            &ctx.output_path("dictionary"),
            n_features,
            dim,
            &model.dictionary,
        )?;
        Ok(metrics)
    }
}
