//! Semantic preservation against k: the linear probe's macro-F1 on the top-k reconstructions,
//! and its KL divergence and argmax agreement between original and reconstructed embeddings;
//! the probe's own macro-F1 on the original embeddings is in each legend.

use anyhow::Result;

use super::chart::{render_lines, Chart, Series};
use super::style::series_styles;
use super::{ks_of, metric, names_and_coords, Figure, FinishedRecords};

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let items = f.of_kind("linear_probe");
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let (names, coords) = names_and_coords(&items);
    let mut styles = series_styles(&names, &coords);
    for (style, (_, r)) in styles.iter_mut().zip(&items) {
        if let Some(f1) = metric(r, "macro_f1") {
            style.label = format!("{} (probe macro-F1 {f1:.3})", style.label);
        }
    }
    let mut out = Vec::new();
    for (name, what, y_desc) in [
        (
            "macro_f1",
            "macro-F1",
            "probe's macro-F1 on the reconstructions (higher is better)",
        ),
        (
            "kl",
            "KL divergence",
            "KL(p(x) ‖ p(x̂)) in nats (lower is better)",
        ),
        (
            "agreement",
            "agreement",
            "share of rows with the same predicted class",
        ),
    ] {
        let series = items
            .iter()
            .zip(&styles)
            .map(|((_, r), style)| {
                let points = ks_of(r, name)
                    .into_iter()
                    .filter_map(|k| Some((k as f64, metric(r, &format!("{name}@{k}"))?)))
                    .collect();
                Series::new(style.clone(), points)
            })
            .collect();
        let chart = Chart {
            title: format!("Linear probe on top-k reconstructions: {what} against k"),
            x_desc: "k (latents kept per sample, log scale)".into(),
            y_desc: y_desc.into(),
            log_x: true,
            series,
            notes: Vec::new(),
        };
        out.push(Figure {
            id: format!("linear_probe_{name}"),
            kind: "linear_probe".into(),
            title: chart.title.clone(),
            svg: render_lines(&chart)?,
        });
    }
    Ok(out)
}
