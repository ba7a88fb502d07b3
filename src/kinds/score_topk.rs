//! `score_topk`: reconstruction quality when only the k largest entries of the dense code are
//! kept, for k = 16, 32, … up to n (docs/reference.md §8.2). The JSON output has the
//! reference's shape:
//! `{"16": {"fvu": [mean, std], "mae": …, "cs": …, "l0": …, "cknnas": …, "number_of_dead_neurons": n}, …}`.

use anyhow::Result;

use crate::kinds::sae_eval::{
    for_each_topk_reconstruction, standardized_batch, Evaluation, PairMetrics, EVAL_PARAMS,
};
use crate::metrics::topk_list;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct ScoreTopk;

static PARAMS: &[ParamSpec] = &[
    EVAL_PARAMS[0],
    EVAL_PARAMS[1],
    ParamSpec {
        name: "ks",
        ty: ParamType::IntList,
        default: Default::Absent,
        min: Some(1.0),
        doc: "the k values (default 16, 32, … doubling, then n)",
        ..ParamSpec::BASE
    },
    EVAL_PARAMS[2],
    EVAL_PARAMS[3],
    EVAL_PARAMS[4],
    EVAL_PARAMS[5],
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "scores",
    optional: false,
    doc: "metrics per k (JSON, the reference's layout)",
}];

impl Step for ScoreTopk {
    step_info!(kind: "score_topk", version: 2, about: "FVU, cosine, sparsity and dead latents when keeping the top k of the dense code, for growing k");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let Evaluation {
            device: dev,
            sae,
            data: m,
            std,
        } = Evaluation::open(ctx)?;
        let ks: Vec<usize> = match ctx.params.get("ks") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(Value::as_int)
                .map(|k| (k as usize).min(sae.n))
                .collect(),
            _ => topk_list(sae.n),
        };
        let batch = ctx.usize("batch_size")?;
        let with_cknna = ctx
            .params
            .get("cknna")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut per_k: Vec<PairMetrics> = ks
            .iter()
            .map(|_| PairMetrics::new(sae.n, with_cknna.then_some(batch)))
            .collect();
        let bar = ctx
            .progress
            .bar(m.rows() as u64, &format!("score {}", ctx.instance));
        for start in (0..m.rows()).step_by(batch) {
            let end = (start + batch).min(m.rows());
            let rows = end - start;
            let x = standardized_batch(&m, start, end, &std, &dev)?;
            let raw = m.rows_slice(start, end);
            for_each_topk_reconstruction(&sae, &x, &std, &ks, |i, z, x_hat| {
                per_k[i].push(raw, x_hat, z, rows)
            })?;
            bar.set_position(end as u64);
        }
        bar.finish_and_clear();
        let mut json = serde_json::Map::new();
        let mut metrics = Metrics::new();
        for (k, acc) in ks.iter().zip(&per_k) {
            let s = acc.summary();
            metrics.insert(format!("fvu@{k}"), s.fvu[0].into());
            metrics.insert(format!("cos@{k}"), s.cs[0].into());
            metrics.insert(format!("dead@{k}"), s.number_of_dead_neurons.into());
            let mut entry = serde_json::to_value(&s)?;
            if let Some(obj) = entry.as_object_mut() {
                obj.remove("active");
            }
            json.insert(k.to_string(), entry);
        }
        std::fs::write(ctx.output_path("scores"), serde_json::to_vec_pretty(&json)?)?;
        Ok(metrics)
    }
}
