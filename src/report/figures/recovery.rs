//! Feature recovery: for every SAE, the share of planted features whose best-matching latent
//! reaches at least a given |cosine| (a survival curve of the best-match |cosines|).

use anyhow::{anyhow, Result};

use super::chart::{render_lines, Chart, Series};
use super::style::series_styles;
use super::{names_and_coords, Figure, FinishedRecords};

/// Points (c, share of values ≥ c) at every value, highest first.
pub fn survival(mut values: Vec<f64>) -> Vec<(f64, f64)> {
    values.retain(|v| v.is_finite());
    values.sort_by(|a, b| b.total_cmp(a));
    let n = values.len() as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, (i + 1) as f64 / n))
        .collect()
}

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let items = f.of_kind("recovery");
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let (names, coords) = names_and_coords(&items);
    let styles = series_styles(&names, &coords);
    let mut series = Vec::new();
    for ((inst, r), style) in items.iter().zip(styles) {
        let matches = f.json(r, "matches")?;
        let best: Vec<f64> = matches
            .as_array()
            .ok_or_else(|| anyhow!("`matches` of {} is not a list", inst.name))?
            .iter()
            .filter_map(|m| m.get("best_abs_cos")?.as_f64())
            .collect();
        let points = survival(best);
        let mut s = Series::new(style, points);
        s.marker_every = (s.points.len() / 8).max(1);
        series.push(s);
    }
    let chart = Chart {
        title: "Feature recovery: best-match |cosine| per planted feature".into(),
        x_desc: "|cosine| of the best-matching decoder direction".into(),
        y_desc: "share of planted features at or above".into(),
        log_x: false,
        series,
        notes: Vec::new(),
    };
    Ok(vec![Figure {
        id: "recovery".into(),
        kind: "recovery".into(),
        title: chart.title.clone(),
        svg: render_lines(&chart)?,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survival_counts_values_at_or_above() {
        let s = survival(vec![0.5, 0.9, f64::NAN, 0.7, 0.1]);
        assert_eq!(s, vec![(0.9, 0.25), (0.7, 0.5), (0.5, 0.75), (0.1, 1.0)]);
    }
}
