//! Reconstruction against sparsity: dense and sparse FVU against active latents (L0) for every
//! evaluated SAE, from `extract` metrics when the experiment has them, else from the last epoch
//! of `validate`.

use anyhow::{anyhow, Result};

use super::chart::{render_scatter, Chart, Series};
use super::style::series_styles;
use super::{metric, names_and_coords, Figure, FinishedRecords};

/// (sparse L0, sparse FVU, dense L0, dense FVU) of one evaluated SAE.
type Point = (f64, f64, f64, f64);

fn from_extract(f: &FinishedRecords) -> Result<Vec<(usize, Point)>> {
    f.of_kind("extract")
        .iter()
        .enumerate()
        .map(|(i, (_, r))| {
            let get =
                |m: &str| metric(r, m).ok_or_else(|| anyhow!("{} has no metric `{m}`", r.instance));
            Ok((
                i,
                (
                    get("sparse_active")?,
                    get("sparse_fvu")?,
                    get("active")?,
                    get("fvu")?,
                ),
            ))
        })
        .collect()
}

fn from_validate(f: &FinishedRecords) -> Result<Vec<(usize, Point)>> {
    let mut out = Vec::new();
    for (i, (inst, r)) in f.of_kind("validate").iter().enumerate() {
        // The latent count comes from the trained (or imported) model's record.
        let Some(n) = f.upstream(inst, "sae").and_then(|t| metric(t, "n_latents")) else {
            continue;
        };
        let epochs = f.json(r, "epochs")?;
        let last = epochs
            .as_array()
            .and_then(|e| e.last())
            .ok_or_else(|| anyhow!("{} has no epoch", r.instance))?;
        let get = |m: &str| {
            last.get(m)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| anyhow!("the last epoch of {} has no `{m}`", r.instance))
        };
        out.push((
            i,
            (
                n * (1.0 - get("zero_fraction_sparse")?),
                get("fvu_sparse")?,
                n * (1.0 - get("zero_fraction_dense")?),
                get("fvu_dense")?,
            ),
        ));
    }
    Ok(out)
}

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let (kind, points) = if !f.of_kind("extract").is_empty() {
        ("extract", from_extract(f)?)
    } else {
        ("validate", from_validate(f)?)
    };
    if points.is_empty() {
        return Ok(Vec::new());
    }
    let items = f.of_kind(kind);
    let chosen: Vec<_> = points.iter().map(|(i, _)| items[*i]).collect();
    let (names, coords) = names_and_coords(&chosen);
    let styles = series_styles(&names, &coords);
    let mut series = Vec::new();
    for ((_, p), style) in points.iter().zip(&styles) {
        series.push(Series::new(style.clone(), vec![(p.0, p.1)]));
        let mut dense = Series::new(style.clone(), vec![(p.2, p.3)]);
        dense.hollow = true;
        dense.in_legend = false;
        series.push(dense);
    }
    let chart = Chart {
        title: "Reconstruction against sparsity".into(),
        x_desc: "L0 (active latents per sample, log scale)".into(),
        y_desc: "FVU (fraction of variance unexplained)".into(),
        log_x: true,
        series,
        notes: vec![
            "filled: sparse code".into(),
            "hollow: dense code".into(),
            format!("from `{kind}`"),
        ],
    };
    Ok(vec![Figure {
        id: "pareto".into(),
        kind: kind.into(),
        title: chart.title.clone(),
        svg: render_scatter(&chart)?,
    }])
}
