//! Dictionary alignment: the histogram of matched cosines, one figure per aligned pair.

use anyhow::{anyhow, Result};

use super::chart::{render_histogram, Histogram};
use super::{metric, slug, Figure, FinishedRecords};

fn numbers(v: &serde_json::Value, field: &str) -> Option<Vec<f64>> {
    v.get(field)?
        .as_array()?
        .iter()
        .map(serde_json::Value::as_f64)
        .collect()
}

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for (inst, r) in f.of_kind("align") {
        let h = f.json(r, "histogram")?;
        let (edges, counts) = numbers(&h, "edges")
            .zip(numbers(&h, "counts"))
            .filter(|(e, c)| e.len() == c.len() + 1)
            .ok_or_else(|| anyhow!("`histogram` of {} has no edges and counts", inst.name))?;
        let pair = |p: &str| r.input_from.get(p).cloned().unwrap_or_else(|| p.into());
        let note = format!(
            "{} vs {}: mean {:.3}, median {:.3}, {} pairs",
            pair("a"),
            pair("b"),
            metric(r, "mean_matched_cos").unwrap_or(f64::NAN),
            metric(r, "median_matched_cos").unwrap_or(f64::NAN),
            metric(r, "n_pairs").unwrap_or(f64::NAN)
        );
        let title = format!("Matched cosines, {}", inst.name);
        let svg = render_histogram(&Histogram {
            title: title.clone(),
            x_desc: "cosine of matched latent directions".into(),
            y_desc: "matched pairs (count)".into(),
            edges,
            counts,
            note,
        })?;
        out.push(Figure {
            id: format!("align_{}", slug(&inst.name)),
            kind: "align".into(),
            title,
            svg,
        });
    }
    Ok(out)
}
