//! `synth`: embedding-like data with a planted sparse dictionary, so that later steps can measure
//! how well an SAE recovers known features.
//!
//! Model: `n_features` random unit directions in `dim` dimensions. Each sample activates
//! `max(1, Poisson(active))` distinct features, chosen with power-law probabilities
//! `p_j ∝ (j+1)^-zipf` (feature 0 is the most frequent), each with a coefficient drawn uniformly
//! from [0.5, 1.5]; isotropic Gaussian noise of expected norm `noise` is added.
//! Rows are generated in fixed chunks, each from its own seeded stream, so the bytes depend only
//! on the parameters, never on the thread count.

use std::path::Path;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{weighted::WeightedAliasIndex, Distribution, Normal, Poisson};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

use crate::data::npy::{write_matrix, NpyWriter};
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
            if self.noise_std > 0.0 {
                for x in row.iter_mut() {
                    *x += normal.sample(&mut rng) as f32;
                }
            }
            out.indptr.push(chosen.len() as i64);
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
    let rows = split.indptr.len() - 1;
    let indptr: Vec<u8> = split.indptr.iter().flat_map(|v| v.to_le_bytes()).collect();
    let indices: Vec<u8> = split.indices.iter().flat_map(|v| v.to_le_bytes()).collect();
    let values: Vec<u8> = split.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let nnz = split.values.len();
    let tensors = vec![
        (
            "indptr",
            TensorView::new(Dtype::I64, vec![rows + 1], &indptr)?,
        ),
        ("indices", TensorView::new(Dtype::I32, vec![nnz], &indices)?),
        ("values", TensorView::new(Dtype::F32, vec![nnz], &values)?),
    ];
    // One metadata entry only: safetensors writes its metadata map in hash order, and output
    // bytes must be identical across runs for content addressing and early cut-off.
    let meta = std::collections::HashMap::from([(
        "csr_shape".to_string(),
        format!("{rows},{n_features}"),
    )]);
    safetensors::serialize_to_file(tensors, Some(meta), path)?;
    Ok(())
}

impl Step for Synth {
    step_info!(kind: "synth", version: 1, about: "synthetic embeddings with a planted sparse dictionary (known ground truth)");

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
