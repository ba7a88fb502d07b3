//! Concept naming: the most frequent latents of each named SAE with their names and similarity.

use anyhow::{anyhow, Result};

use super::chart::{render_bars, Bars};
use super::{slug, Figure, FinishedRecords};

/// Rows drawn per figure (the `top_latents` output may hold more).
const ROWS: usize = 20;

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for (inst, r) in f.of_kind("name") {
        let top = f.json(r, "top_latents")?;
        let rows = top
            .as_array()
            .ok_or_else(|| anyhow!("`top_latents` of {} is not a list", inst.name))?;
        let mut labels = Vec::new();
        let mut values = Vec::new();
        for row in rows.iter().take(ROWS) {
            let field = |k: &str| row.get(k).and_then(serde_json::Value::as_f64);
            let (Some(latent), Some(freq), Some(score)) =
                (field("latent"), field("frequency"), field("score"))
            else {
                continue;
            };
            let word = row.get("word").and_then(|w| w.as_str()).unwrap_or("?");
            let word: String = if word.chars().count() > 24 {
                word.chars().take(23).chain(['…']).collect()
            } else {
                word.to_string()
            };
            labels.push(format!("#{latent} {word} ({score:.2})"));
            values.push(freq);
        }
        if values.is_empty() {
            continue;
        }
        let title = format!("Most frequent latents and their names, {}", inst.name);
        let svg = render_bars(&Bars {
            title: title.clone(),
            x_desc: "activation frequency (share of training samples)".into(),
            y_desc: "latent: #index name (cosine of the name)".into(),
            labels,
            values,
        })?;
        out.push(Figure {
            id: format!("name_{}", slug(&inst.name)),
            kind: "name".into(),
            title,
            svg,
        });
    }
    Ok(out)
}
