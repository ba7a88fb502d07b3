//! `concepts`: decides which named latents are concepts and counts them per SAE — the paper's
//! "semantic concepts" — by one of three documented rules (`analysis::concepts`): a cosine
//! threshold on the name match, a mutual best match in the `name` step's similarity matrix, or a
//! round trip through the SAE (the name's own embedding, standardised and encoded, has the latent
//! among its strongest activations).
//!
//! The output lists the valid concepts with their name, cosine and firing frequency: from a
//! `top_examples` output when one is given (frequency on that matrix), else the model's own
//! training statistics.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Tensor;
use serde::Serialize;

use crate::analysis::concepts::{among_strongest, best_latent_per_word, by_cosine, mutual};
use crate::data::npy::Matrix;
use crate::kinds::latent_names::{read_names, Named};
use crate::kinds::sae_common::device;
use crate::kinds::train::load_model;
use crate::metrics::MatRef;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::{Metrics, Step, StepContext};

pub struct Concepts;

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "sae", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the named SAE, e.g. \"sae\"", ..ParamSpec::BASE },
    ParamSpec { name: "names", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the `name` step's names of this SAE, e.g. \"names.names\"", ..ParamSpec::BASE },
    ParamSpec { name: "rule", ty: ParamType::Choice(&["cosine", "mutual", "round_trip"]), default: Default::Str("mutual"), gridable: true, doc: "cosine: the name's cosine ≥ min_cosine; mutual: the name's best latent is this latent (needs `similarity`); round_trip: the name's embedding, encoded by the SAE, has this latent among its `top` strongest activations (needs `vocab`)", ..ParamSpec::BASE },
    ParamSpec { name: "similarity", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "the `name` step's similarity matrix, e.g. \"names.similarity\" (rule mutual)", ..ParamSpec::BASE },
    ParamSpec { name: "vocab", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "the vocabulary embeddings the names came from (rule round_trip)", ..ParamSpec::BASE },
    ParamSpec { name: "min_cosine", ty: ParamType::Float, default: Default::Float(0.3), min: Some(-1.0), max: Some(1.0), gridable: true, doc: "rule cosine: the least cosine of a valid name", ..ParamSpec::BASE },
    ParamSpec { name: "top", ty: ParamType::Int, default: Default::Int(5), min: Some(1.0), gridable: true, doc: "rule round_trip: how many of the strongest activations may hold the latent", ..ParamSpec::BASE },
    ParamSpec { name: "frequency", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "a `top_examples` output of this SAE, e.g. \"top.latents\", for each concept's frequency (else the model's training frequency)", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "concepts",
    optional: false,
    doc: "the valid concepts: latent, name, word index, cosine, frequency (JSON)",
}];

#[derive(Serialize)]
struct Concept {
    latent: usize,
    name: String,
    word_index: usize,
    cosine: f64,
    frequency: f64,
}

impl Step for Concepts {
    step_info!(kind: "concepts", version: 1, about: "which named latents are concepts (cosine, mutual best match or round trip), counted per SAE");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let names_in = ctx.input("names")?;
        let names = read_names(&names_in.path, &names_in.from, sae.n)?;
        let rule = ctx.str("rule")?.to_string();
        let valid: Vec<bool> = match rule.as_str() {
            "cosine" => {
                let min = ctx.float("min_cosine")? as f32;
                by_cosine(&names.iter().map(|n| n.score).collect::<Vec<_>>(), min)
            }
            "mutual" => {
                let sim_in = ctx.inputs.get("similarity").ok_or_else(|| {
                    anyhow!(
                        "rule `mutual` needs `similarity`, e.g. similarity = \"names.similarity\""
                    )
                })?;
                let sim = Matrix::open(&sim_in.path)?;
                if sim.cols() != sae.n {
                    bail!(
                        "`similarity` (from {}) has {} columns but the SAE has {} latents",
                        sim_in.from,
                        sim.cols(),
                        sae.n
                    );
                }
                let best = best_latent_per_word(MatRef::new(sim.data(), sim.rows(), sim.cols())?);
                mutual(&names.iter().map(|n| n.index).collect::<Vec<_>>(), &best)
            }
            _ => {
                let vocab_in = ctx.inputs.get("vocab").ok_or_else(|| {
                    anyhow!("rule `round_trip` needs `vocab`, the embeddings the names came from")
                })?;
                let vocab = Matrix::open(&vocab_in.path)?;
                if vocab.cols() != sae.d {
                    bail!(
                        "`vocab` (from {}) has {} columns but the SAE's inputs have {}",
                        vocab_in.from,
                        vocab.cols(),
                        sae.d
                    );
                }
                let top = ctx.usize("top")?;
                round_trip(&sae, &vocab, &names, top, &dev)?
            }
        };
        let frequency = frequencies(ctx, &sae)?;
        let concepts: Vec<Concept> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| valid[*j])
            .map(|(j, n)| Concept {
                latent: j,
                name: n.word.clone(),
                word_index: n.index,
                cosine: n.score as f64,
                frequency: frequency[j],
            })
            .collect();
        std::fs::write(
            ctx.output_path("concepts"),
            serde_json::to_vec_pretty(&concepts)?,
        )?;
        let distinct = concepts
            .iter()
            .map(|c| c.word_index)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let mut metrics = Metrics::new();
        metrics.insert("concepts".into(), concepts.len().into());
        metrics.insert("distinct_names".into(), distinct.into());
        metrics.insert("latents".into(), sae.n.into());
        metrics.insert(
            "share".into(),
            (concepts.len() as f64 / sae.n.max(1) as f64).into(),
        );
        Ok(metrics)
    }
}

/// `round_trip`: encode every named word's embedding (with the model's statistics) and keep the
/// latents found among the `top` strongest activations of their own name.
fn round_trip(
    sae: &crate::sae::Sae,
    vocab: &Matrix,
    names: &[Named],
    top: usize,
    dev: &candle_core::Device,
) -> Result<Vec<bool>> {
    let words: Vec<usize> = {
        let mut w: Vec<usize> = names.iter().map(|n| n.index).collect();
        w.sort_unstable();
        w.dedup();
        w
    };
    if let Some(&w) = words.last().filter(|&&w| w >= vocab.rows()) {
        bail!(
            "a name points at vocabulary row {w} but `vocab` has {} rows; give the vocabulary the names came from",
            vocab.rows()
        );
    }
    let mut rows = Vec::with_capacity(words.len() * vocab.cols());
    for &w in &words {
        rows.extend_from_slice(vocab.row(w));
    }
    let x = Tensor::from_vec(rows, (words.len(), vocab.cols()), dev)?;
    let x = sae.standardization.apply(&x).map_err(|e| anyhow!("{e}"))?;
    let z: Vec<f32> = sae
        .eval_code(&x, true)
        .map_err(|e| anyhow!("{e}"))?
        .flatten_all()?
        .to_vec1()?;
    let code_of = |w: usize| {
        let i = words.binary_search(&w).expect("listed");
        &z[i * sae.n..(i + 1) * sae.n]
    };
    Ok(names
        .iter()
        .enumerate()
        .map(|(j, n)| among_strongest(code_of(n.index), j, top))
        .collect())
}

/// Each latent's firing frequency: from a `top_examples` output when given, else the model's.
fn frequencies(ctx: &StepContext, sae: &crate::sae::Sae) -> Result<Vec<f64>> {
    if let Some(f) = ctx.inputs.get("frequency") {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&f.path)?)
            .with_context(|| format!("`frequency` (from {}) is not JSON", f.from))?;
        let latents = doc["latents"].as_array().ok_or_else(|| {
            anyhow!(
                "`frequency` (from {}) is not a `top_examples` output",
                f.from
            )
        })?;
        if latents.len() != sae.n {
            bail!(
                "`frequency` (from {}) covers {} latents but the SAE has {}",
                f.from,
                latents.len(),
                sae.n
            );
        }
        return Ok(latents
            .iter()
            .map(|l| l["frequency"].as_f64().unwrap_or(0.0))
            .collect());
    }
    let updates = sae.stats.num_updates.max(1) as f64;
    Ok(sae
        .stats
        .counts
        .iter()
        .map(|&c| c as f64 / updates)
        .collect())
}
