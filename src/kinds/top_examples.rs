//! `top_examples`: what each latent responds to — the rows of a matrix that activate it most,
//! with its firing frequency, mean and maximum activation, activation histogram and (for
//! Matryoshka models) the first nesting level that keeps it.
//!
//! The matrix is read in blocks with positioned reads and encoded without decoding (only the
//! encoder product and the activation), and the blocks stream into a fixed-size accumulator
//! (`analysis::top_examples`), so memory is one block plus a small heap per latent. The
//! accumulator is checkpointed, so an interrupted run over a large matrix resumes where it
//! stopped. Output bytes do not depend on the thread count.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::analysis::top_examples::{
    LatentSummary, TopExamples, HISTOGRAM_BINS, HISTOGRAM_LOG2_MIN,
};
use crate::data::reader::RowReader;
use crate::kinds::import::read_lines;
use crate::kinds::sae_eval::{Evaluation, EVAL_PARAMS};
use crate::sae::config::Arch;
use crate::sae::model::write_atomic;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct TopExamplesKind;

static PARAMS: &[ParamSpec] = &[
    EVAL_PARAMS[0],
    ParamSpec { name: "data", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the matrix whose rows are the examples, e.g. \"data.test\"", ..ParamSpec::BASE },
    ParamSpec { name: "texts", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "one text per row of `data` (e.g. \"data.texts\"), shown with each example", ..ParamSpec::BASE },
    ParamSpec { name: "n", ty: ParamType::Int, default: Default::Int(16), min: Some(1.0), max: Some(10000.0), gridable: true, doc: "examples kept per latent", ..ParamSpec::BASE },
    ParamSpec { name: "code", ty: ParamType::Choice(&["sparse", "dense"]), default: Default::Str("sparse"), gridable: true, doc: "which activation ranks the rows: the model's sparse code, or the dense code of the top-k family (before its selection)", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, default: Default::Int(1024), min: Some(1.0), doc: "rows per block (the block's codes are the memory held; reference BatchTopK inference uses the block as its batch)", ..ParamSpec::BASE },
    EVAL_PARAMS[4],
    EVAL_PARAMS[5],
    ParamSpec { name: "checkpoint_seconds", ty: ParamType::Int, role: Role::Exec, default: Default::Int(120), min: Some(1.0), doc: "save the running state this often, to resume an interrupted run", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "latents",
    optional: false,
    doc: "per latent: frequency, mean when firing, max, level, log2 histogram, top rows (JSON)",
}];

/// The output document.
#[derive(Serialize)]
struct Document<'a> {
    rows: u64,
    n_latents: usize,
    per_latent: usize,
    code: &'a str,
    /// Matryoshka nesting levels (prefix sizes), when the model has them.
    levels: Option<&'a [usize]>,
    histogram: HistogramAxis,
    latents: Vec<LatentOut<'a>>,
}

#[derive(Serialize)]
struct HistogramAxis {
    bins: usize,
    /// Bin b holds activations in [2^(log2_min + b/2), 2^(log2_min + (b+1)/2)).
    log2_min: i32,
    log2_step: f64,
}

#[derive(Serialize)]
struct LatentOut<'a> {
    latent: usize,
    frequency: f64,
    mean_when_firing: f64,
    max: f32,
    /// Index of the first Matryoshka level that keeps this latent.
    level: Option<usize>,
    histogram: &'a [u64],
    top: Vec<Example<'a>>,
}

#[derive(Serialize)]
struct Example<'a> {
    row: u64,
    value: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

/// What a checkpoint holds: the accumulator and the settings it was made with.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    n_latents: usize,
    per_latent: usize,
    batch: usize,
    state: serde_json::Value,
}

const CHECKPOINT: &str = "top_examples.json";

impl Step for TopExamplesKind {
    step_info!(kind: "top_examples", version: 1, about: "the rows that activate each latent most, with its frequency, mean, max, histogram and Matryoshka level");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let Evaluation {
            device,
            sae,
            data,
            std,
        } = Evaluation::open(ctx)?;
        let per_latent = ctx.usize("n")?;
        let batch = ctx.usize("batch_size")?;
        let dense = ctx.str("code")? == "dense";
        let rows = data.rows();
        let texts = match ctx.inputs.get("texts") {
            Some(t) => {
                let lines = read_lines(&t.path)?;
                if lines.len() != rows {
                    bail!(
                        "`texts` ({}, from {}) has {} lines but `data` has {rows} rows; they must match one to one",
                        t.path.display(),
                        t.from,
                        lines.len()
                    );
                }
                Some(lines)
            }
            None => None,
        };
        let save_every = ctx
            .params
            .get("checkpoint_seconds")
            .and_then(Value::as_int)
            .unwrap_or(120) as u64;
        let checkpoint = ctx.partial_dir.join(CHECKPOINT);
        let mut acc = resume(&checkpoint, sae.n, per_latent, batch)?
            .unwrap_or_else(|| TopExamples::new(sae.n, per_latent));
        let reader = RowReader::new(&data)?;
        let bar = ctx
            .progress
            .bar(rows as u64, &format!("top_examples {}", ctx.instance));
        let mut block = Vec::new();
        let mut scratch = crate::sae::model::SparseRowsScratch::default();
        let mut last_save = Instant::now();
        let started_at = acc.rows_seen() as usize;
        for start in (started_at..rows).step_by(batch) {
            let end = (start + batch).min(rows);
            block.resize((end - start) * data.cols(), 0.0);
            reader.read_range(start, end, &mut block)?;
            let x = Tensor::from_slice(&block, (end - start, data.cols()), &device)?;
            let x = std.apply(&x).map_err(|e| anyhow::anyhow!("{e}"))?;
            let err = |e: crate::sae::SaeError| anyhow::anyhow!("{e}");
            // A per-row top-k code goes in as its entries; any other as dense rows.
            let sparse = if dense {
                None
            } else {
                sae.sparse_rows_with(&x, &mut scratch).map_err(err)?
            };
            match sparse {
                Some(rows) => acc.push_sparse(&rows.offsets, &rows.latents, &rows.values),
                None => {
                    let z: Vec<f32> = if dense {
                        sae.eval_code(&x, true)
                            .and_then(|z| Ok(z.flatten_all()?.to_vec1()?))
                    } else {
                        sae.sparse_code_host(&x)
                    }
                    .map_err(err)?;
                    acc.push(&z)
                }
            }
            .with_context(|| format!("rows {start}..{end} of `data`"))?;
            bar.set_position(end as u64);
            if last_save.elapsed().as_secs() >= save_every && end < rows {
                save(&checkpoint, &acc, batch)?;
                last_save = Instant::now();
            }
            if ctx.stop.is_raised() && end < rows {
                save(&checkpoint, &acc, batch)?;
                bail!("stopped after {end} of {rows} rows; a rerun resumes there");
            }
        }
        bar.finish_and_clear();
        let summaries = acc.summaries();
        let levels = (sae.config.arch == Arch::Msae).then_some(sae.levels.as_slice());
        let doc = Document {
            rows: acc.rows_seen(),
            n_latents: sae.n,
            per_latent,
            code: if dense { "dense" } else { "sparse" },
            levels,
            histogram: HistogramAxis {
                bins: HISTOGRAM_BINS,
                log2_min: HISTOGRAM_LOG2_MIN,
                log2_step: 0.5,
            },
            latents: summaries
                .iter()
                .map(|s| latent_out(s, levels, texts.as_deref()))
                .collect(),
        };
        std::fs::write(ctx.output_path("latents"), serde_json::to_vec(&doc)?)?;
        let never = summaries.iter().filter(|s| s.frequency == 0.0).count();
        let mean_frequency =
            summaries.iter().map(|s| s.frequency).sum::<f64>() / summaries.len().max(1) as f64;
        let mut metrics = Metrics::new();
        metrics.insert("rows".into(), rows.into());
        metrics.insert("latents".into(), sae.n.into());
        metrics.insert("never_fire".into(), never.into());
        metrics.insert("mean_frequency".into(), mean_frequency.into());
        Ok(metrics)
    }
}

fn latent_out<'a>(
    s: &'a LatentSummary,
    levels: Option<&[usize]>,
    texts: Option<&'a [String]>,
) -> LatentOut<'a> {
    LatentOut {
        latent: s.latent,
        frequency: s.frequency,
        mean_when_firing: s.mean_when_firing,
        max: s.max,
        level: levels.and_then(|l| l.iter().position(|&size| s.latent < size)),
        histogram: &s.histogram,
        top: s
            .top
            .iter()
            .map(|&(row, value)| Example {
                row,
                value,
                text: texts.map(|t| t[row as usize].as_str()),
            })
            .collect(),
    }
}

fn save(path: &Path, acc: &TopExamples, batch: usize) -> Result<()> {
    let (n_latents, per_latent) = acc.shape();
    let c = Checkpoint {
        n_latents,
        per_latent,
        batch,
        state: serde_json::to_value(acc)?,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(write_atomic(path, &serde_json::to_vec(&c)?)?)
}

/// The saved accumulator of an interrupted run of this very key, if any and if it fits.
fn resume(path: &Path, n: usize, per_latent: usize, batch: usize) -> Result<Option<TopExamples>> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(None);
    };
    let Ok(c) = serde_json::from_slice::<Checkpoint>(&bytes) else {
        // A damaged checkpoint costs only the work it held.
        return Ok(None);
    };
    if (c.n_latents, c.per_latent, c.batch) != (n, per_latent, batch) {
        return Ok(None);
    }
    Ok(serde_json::from_value(c.state).ok())
}
