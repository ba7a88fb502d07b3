//! `name`: names every latent of an SAE by the vocabulary entry whose embedding is most similar
//! to the latent's decoder direction (docs/reference.md §8.3, Discover-then-Name style).
//!
//! The similarity matrix `[N_vocab, n]` is streamed block by block into a `.npy` output while the
//! best and runner-up entry of every latent is tracked, so memory stays at one block. With
//! `planted = true` the vocabulary is taken to be the planted dictionary of synthetic data (row i
//! = true feature i), and the share of latents named after the feature a greedy one-to-one
//! matching assigns them is reported as `accuracy`.

use anyhow::{anyhow, bail, Result};

use crate::analysis::naming::{
    greedy_truth, name_latents, naming_accuracy, top_latents_by_frequency, Dictionary, Mode,
    NamingOptions, DEFAULT_BLOCK_ROWS,
};
use crate::data::npy::Matrix;
use crate::kinds::import::read_lines;
use crate::kinds::sae_common::device;
use crate::kinds::train::load_model;
use crate::metrics::MatRef;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct Name;

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "sae", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the trained SAE, e.g. \"sae\" (a train step's model)", ..ParamSpec::BASE },
    ParamSpec { name: "vocab", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "vocabulary embeddings [N_vocab, d], e.g. \"vocab\" (an import's matrix) or \"data.dictionary\"", ..ParamSpec::BASE },
    ParamSpec { name: "words", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "one word per vocabulary row, e.g. \"vocab.texts\" (without it, a latent's name is the row index)", ..ParamSpec::BASE },
    ParamSpec { name: "mode", ty: ParamType::Choice(&["centered", "reference"]), default: Default::Str("centered"), gridable: true, doc: "centered: decoder directions vs mean-centred vocabulary; reference: W_dec/s + μ vs raw vocabulary", ..ParamSpec::BASE },
    ParamSpec { name: "use_bias", ty: ParamType::Bool, default: Default::Bool(false), doc: "add the pre-encoder bias to every decoder row (the reference never does)", ..ParamSpec::BASE },
    ParamSpec { name: "top", ty: ParamType::Int, default: Default::Int(20), min: Some(0.0), doc: "latents listed in the most-frequent table", ..ParamSpec::BASE },
    ParamSpec { name: "planted", ty: ParamType::Bool, default: Default::Bool(false), doc: "the vocabulary is the planted dictionary of synthetic data: report naming accuracy against a greedy matching", ..ParamSpec::BASE },
    ParamSpec { name: "block_rows", ty: ParamType::Int, role: Role::Exec, default: Default::Int(DEFAULT_BLOCK_ROWS as i64), min: Some(1.0), doc: "vocabulary rows per similarity block (memory: block_rows × n scores)", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "names",
        optional: false,
        doc: "per latent: best word, score, runner-up word and score (JSON)",
    },
    OutputSpec {
        name: "similarity",
        optional: false,
        doc: "cosine similarity of every vocabulary row with every latent [N_vocab, n] (.npy)",
    },
    OutputSpec {
        name: "top_latents",
        optional: false,
        doc: "the most frequently active latents with their names (JSON)",
    },
];

fn flag(ctx: &StepContext, name: &str) -> bool {
    ctx.params
        .get(name)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

impl Step for Name {
    step_info!(kind: "name", version: 2, about: "name every latent by its most similar vocabulary entry; similarity matrix and most frequent latents");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let vocab = Matrix::open(&ctx.input("vocab")?.path)?;
        if vocab.cols() != sae.d {
            bail!(
                "the vocabulary has {} columns but the SAE's inputs have {}; the vocabulary must come from the same embedding model",
                vocab.cols(),
                sae.d
            );
        }
        if vocab.rows() == 0 {
            bail!("the vocabulary has no rows");
        }
        let words: Vec<String> = match ctx.inputs.get("words") {
            Some(w) => {
                let words = read_lines(&w.path)?;
                if words.len() != vocab.rows() {
                    bail!(
                        "`words` ({}) has {} entries but the vocabulary has {} rows; they must match one to one",
                        w.from,
                        words.len(),
                        vocab.rows()
                    );
                }
                words
            }
            None => (0..vocab.rows()).map(|i| i.to_string()).collect(),
        };
        let opts = NamingOptions {
            mode: match ctx.str("mode")? {
                "reference" => Mode::Reference,
                _ => Mode::Centered,
            },
            use_bias: flag(ctx, "use_bias"),
            block_rows: ctx.usize("block_rows")?,
        };
        let decoder: Vec<f32> = sae.decoder.flatten_all()?.to_vec1()?;
        let b_pre: Vec<f32> = sae.pre_bias.flatten_all()?.to_vec1()?;
        let dec = MatRef::new(&decoder, sae.n, sae.d)?;
        let dict = Dictionary {
            decoder: dec,
            b_pre: Some(&b_pre),
            mean: &sae.standardization.mean,
            scale: sae.standardization.scale as f64,
        };
        let vocab_ref = MatRef::new(vocab.data(), vocab.rows(), vocab.cols())?;
        let names = name_latents(
            &dict,
            vocab_ref,
            &opts,
            Some(&ctx.output_path("similarity")),
        )
        .map_err(|e| anyhow!("{e}"))?;

        let word = |i: Option<usize>| i.map(|i| words[i].clone());
        let table: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(j, n)| {
                serde_json::json!({
                    "latent": j,
                    "word": words[n.best],
                    "index": n.best,
                    "score": n.best_score,
                    "runner_up_word": word(n.runner_up),
                    "runner_up_index": n.runner_up,
                    "runner_up_score": n.runner_up_score,
                })
            })
            .collect();
        std::fs::write(ctx.output_path("names"), serde_json::to_vec_pretty(&table)?)?;

        let updates = sae.stats.num_updates.max(1) as f64;
        let frequencies: Vec<f64> = sae
            .stats
            .counts
            .iter()
            .map(|&c| c as f64 / updates)
            .collect();
        let top = top_latents_by_frequency(&frequencies, &names, &words, ctx.usize("top")?)
            .map_err(|e| anyhow!("{e}"))?;
        std::fs::write(
            ctx.output_path("top_latents"),
            serde_json::to_vec_pretty(&top)?,
        )?;

        let mut metrics = Metrics::new();
        let mean_best = names.iter().map(|n| n.best_score as f64).sum::<f64>() / names.len() as f64;
        let distinct = names
            .iter()
            .map(|n| n.best)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        metrics.insert("mean_best_score".into(), mean_best.into());
        metrics.insert("distinct_names".into(), distinct.into());
        if flag(ctx, "planted") {
            let truth = greedy_truth(dec, vocab_ref).map_err(|e| anyhow!("{e}"))?;
            // Latents without a true feature (more latents than features) are left out: only
            // latents the matching pairs with a feature can be named correctly.
            let (best, truth): (Vec<usize>, Vec<usize>) = names
                .iter()
                .zip(&truth)
                .filter_map(|(n, t)| t.map(|t| (n.best, t)))
                .unzip();
            metrics.insert("accuracy".into(), naming_accuracy(&best, &truth).into());
        }
        Ok(metrics)
    }
}
