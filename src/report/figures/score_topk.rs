//! Top-k scores: FVU and cosine against k (log scale), one line per scored SAE.

use anyhow::Result;

use super::chart::{render_lines, Chart, Series};
use super::style::series_styles;
use super::{ks_of, metric, names_and_coords, Figure, FinishedRecords};

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let items = f.of_kind("score_topk");
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let (names, coords) = names_and_coords(&items);
    let styles = series_styles(&names, &coords);
    let mut out = Vec::new();
    for (metric_name, what, y_desc) in [
        (
            "fvu",
            "FVU",
            "FVU (fraction of variance unexplained, lower is better)",
        ),
        ("cos", "cosine", "cosine(x, x̂) (higher is better)"),
    ] {
        let series = items
            .iter()
            .zip(&styles)
            .map(|((_, r), style)| {
                let points = ks_of(r, metric_name)
                    .into_iter()
                    .filter_map(|k| Some((k as f64, metric(r, &format!("{metric_name}@{k}"))?)))
                    .collect();
                Series::new(style.clone(), points)
            })
            .collect();
        let chart = Chart {
            title: format!("Top-k reconstruction: {what} against k"),
            x_desc: "k (latents kept per sample, log scale)".into(),
            y_desc: y_desc.into(),
            log_x: true,
            series,
            notes: Vec::new(),
        };
        out.push(Figure {
            id: format!("score_topk_{metric_name}"),
            kind: "score_topk".into(),
            title: chart.title.clone(),
            svg: render_lines(&chart)?,
        });
    }
    Ok(out)
}
