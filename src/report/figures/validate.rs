//! Per-epoch validation curves: FVU and cosine of the sparse code for every run, and for each
//! Matryoshka run one curve per nesting level.

use anyhow::{anyhow, Result};

use super::chart::{render_lines, Chart, Series};
use super::style::{series_styles, SeriesStyle, MARKERS, PALETTE};
use super::{names_and_coords, slug, Figure, FinishedRecords};

fn number(v: &serde_json::Value, field: &str) -> Option<f64> {
    v.get(field).and_then(serde_json::Value::as_f64)
}

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let items = f.of_kind("validate");
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let epochs: Vec<Vec<serde_json::Value>> = items
        .iter()
        .map(|(_, r)| {
            f.json(r, "epochs")?
                .as_array()
                .cloned()
                .ok_or_else(|| anyhow!("`epochs` of {} is not a list", r.instance))
        })
        .collect::<Result<_>>()?;
    let (names, coords) = names_and_coords(&items);
    let styles = series_styles(&names, &coords);
    let mut out = Vec::new();
    for (field, what, y_desc) in [
        (
            "fvu_sparse",
            "FVU",
            "FVU of the sparse code (lower is better)",
        ),
        ("cos_sparse", "cosine", "cosine(x, x̂) of the sparse code"),
    ] {
        let series = epochs
            .iter()
            .zip(&styles)
            .map(|(eps, style)| {
                let points = eps
                    .iter()
                    .enumerate()
                    .filter_map(|(e, m)| Some(((e + 1) as f64, number(m, field)?)))
                    .collect();
                Series::new(style.clone(), points)
            })
            .collect();
        let chart = Chart {
            title: format!("Validation {what} per epoch"),
            x_desc: "epoch".into(),
            y_desc: y_desc.into(),
            log_x: false,
            series,
            notes: Vec::new(),
        };
        out.push(Figure {
            id: format!("validate_{field}"),
            kind: "validate".into(),
            title: chart.title.clone(),
            svg: render_lines(&chart)?,
        });
    }
    for ((inst, _), eps) in items.iter().zip(&epochs) {
        let Some(levels) = eps
            .last()
            .and_then(|m| m.get("levels"))
            .and_then(serde_json::Value::as_array)
            .filter(|l| !l.is_empty())
        else {
            continue;
        };
        let series = levels
            .iter()
            .enumerate()
            .filter_map(|(li, level)| {
                let k = number(level, "k")?;
                let points = eps
                    .iter()
                    .enumerate()
                    .filter_map(|(e, m)| {
                        let l = m.get("levels")?.as_array()?.get(li)?;
                        Some(((e + 1) as f64, number(l, "fvu")?))
                    })
                    .collect();
                Some(Series::new(
                    SeriesStyle {
                        label: format!("level k={k}"),
                        colour: PALETTE[li % PALETTE.len()],
                        marker: MARKERS[(li / PALETTE.len()) % MARKERS.len()],
                    },
                    points,
                ))
            })
            .collect();
        let chart = Chart {
            title: format!("Matryoshka levels: FVU per epoch, {}", inst.name),
            x_desc: "epoch".into(),
            y_desc: "FVU of the level's code (lower is better)".into(),
            log_x: false,
            series,
            notes: Vec::new(),
        };
        out.push(Figure {
            id: format!("validate_levels_{}", slug(&inst.name)),
            kind: "validate".into(),
            title: chart.title.clone(),
            svg: render_lines(&chart)?,
        });
    }
    Ok(out)
}
