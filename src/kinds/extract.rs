//! `extract`: an SAE's codes and reconstructions of a matrix, in input order (the reference
//! shuffles its output rows by mistake; msae never does), plus the metrics of
//! docs/reference.md §8.1.
//! Outputs stream to `.npy` files batch by batch, so memory stays bounded.

use anyhow::{anyhow, Result};
use serde_json::json;

use crate::data::npy::NpyWriter;
use crate::kinds::sae_eval::{
    standardized_batch, unstandardize, Evaluation, PairMetrics, EVAL_PARAMS,
};
use crate::step::spec::{OutputSpec, ParamSpec};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct Extract;

static PARAMS: &[ParamSpec] = &EVAL_PARAMS;

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "codes",
        optional: false,
        doc: "dense code [N, n] (.npy)",
    },
    OutputSpec {
        name: "recon",
        optional: false,
        doc: "dense reconstruction in the original space [N, d] (.npy)",
    },
    OutputSpec {
        name: "sparse_codes",
        optional: false,
        doc: "sparse code [N, n] (.npy)",
    },
    OutputSpec {
        name: "sparse_recon",
        optional: false,
        doc: "sparse reconstruction in the original space [N, d] (.npy)",
    },
    OutputSpec {
        name: "metrics",
        optional: false,
        doc: "dense and sparse metrics, mean and population std (JSON)",
    },
];

impl Step for Extract {
    step_info!(kind: "extract", version: 2, about: "dense and sparse codes and reconstructions of a matrix, in input order, with their metrics");

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
        let batch = ctx.usize("batch_size")?;
        let with_cknna = ctx
            .params
            .get("cknna")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let (rows, d, n) = (m.rows(), sae.d, sae.n);
        let mut codes = NpyWriter::create(&ctx.output_path("codes"), rows, n)?;
        let mut recon = NpyWriter::create(&ctx.output_path("recon"), rows, d)?;
        let mut sparse_codes = NpyWriter::create(&ctx.output_path("sparse_codes"), rows, n)?;
        let mut sparse_recon = NpyWriter::create(&ctx.output_path("sparse_recon"), rows, d)?;
        let mut dense_m = PairMetrics::new(n, with_cknna.then_some(batch));
        let mut sparse_m = PairMetrics::new(n, with_cknna.then_some(batch));
        let bar = ctx
            .progress
            .bar(rows as u64, &format!("extract {}", ctx.instance));
        for start in (0..rows).step_by(batch) {
            let end = (start + batch).min(rows);
            let x = standardized_batch(&m, start, end, &std, &dev)?;
            let out = sae.forward_eval(&x).map_err(|e| anyhow!("{e}"))?;
            let raw = m.rows_slice(start, end);
            let z: Vec<f32> = out.dense_code.flatten_all()?.to_vec1()?;
            let xh = unstandardize(&out.dense_recon, &std)?;
            let zs: Vec<f32> = out.sparse_code.flatten_all()?.to_vec1()?;
            let xs = unstandardize(&out.sparse_recon, &std)?;
            dense_m.push(raw, &xh, &z, end - start)?;
            sparse_m.push(raw, &xs, &zs, end - start)?;
            codes.write_rows(&z)?;
            recon.write_rows(&xh)?;
            sparse_codes.write_rows(&zs)?;
            sparse_recon.write_rows(&xs)?;
            bar.set_position(end as u64);
        }
        bar.finish_and_clear();
        codes.finish()?;
        recon.finish()?;
        sparse_codes.finish()?;
        sparse_recon.finish()?;
        let (dense, sparse) = (dense_m.summary(), sparse_m.summary());
        std::fs::write(
            ctx.output_path("metrics"),
            serde_json::to_vec_pretty(&json!({ "dense": dense, "sparse": sparse }))?,
        )?;
        let mut metrics = Metrics::new();
        metrics.insert("fvu".into(), dense.fvu[0].into());
        metrics.insert("cos".into(), dense.cs[0].into());
        metrics.insert("active".into(), dense.active[0].into());
        metrics.insert("dead".into(), dense.number_of_dead_neurons.into());
        metrics.insert("sparse_fvu".into(), sparse.fvu[0].into());
        metrics.insert("sparse_cos".into(), sparse.cs[0].into());
        metrics.insert("sparse_active".into(), sparse.active[0].into());
        Ok(metrics)
    }
}
