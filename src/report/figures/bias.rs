//! Bias analysis: for every `bias` instance, a forest plot of each concept's effect on the
//! probe. Per concept and scale, the mean change of the target class's probability with its
//! bootstrap interval, drawn beside the same number for the concept's frequency-matched random
//! control, so a concept that moves the probe more than chance stands apart from its control; a
//! star marks the pairs whose difference interval excludes zero. One panel for all rows and one
//! per group, up to [`MAX_GROUP_PANELS`] groups.
//!
//! The target class is the one `select = "probe"` chose concepts for; otherwise the class whose
//! probability a concept moved most (the step's `largest_shift_class`). Drawn as SVG by hand
//! rather than with plotters: the rows are categories, and each interval is a group of its own
//! (`<g class="ci" data-of="concept|control">`) that a reader's tools can pick out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{anyhow, Result};
use serde::Deserialize;

use super::style::{tick, PALETTE};
use super::{slug, Figure, FinishedRecords};
use crate::report::html::esc;

/// Group panels drawn beside the panel of all rows; further groups are named in a note.
pub const MAX_GROUP_PANELS: usize = 3;

#[derive(Deserialize)]
struct Report {
    classes: Vec<String>,
    confidence: f64,
    controls_per_concept: usize,
    selection: Selection,
    #[serde(default)]
    groups: Vec<String>,
    concepts: Vec<Concept>,
}

#[derive(Deserialize)]
struct Selection {
    mode: String,
    target: Option<String>,
}

#[derive(Deserialize)]
struct Concept {
    latent: usize,
    name: String,
    effects: Vec<Effect>,
}

#[derive(Deserialize)]
struct Effect {
    scale: f64,
    all: Comparison,
    #[serde(default)]
    groups: BTreeMap<String, Comparison>,
}

#[derive(Deserialize)]
struct Comparison {
    rows: usize,
    concept: Estimates,
    control: Estimates,
    difference: Estimates,
}

#[derive(Deserialize)]
struct Estimates {
    probability_change: BTreeMap<String, Interval>,
}

/// A bootstrap interval; a number the step could not estimate is `null` in its JSON.
#[derive(Deserialize, Clone, Copy)]
struct Interval {
    mean: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
}

impl Interval {
    fn values(&self) -> Option<(f64, f64, f64)> {
        let (m, l, h) = (self.mean?, self.low?, self.high?);
        (m.is_finite() && l.is_finite() && h.is_finite()).then_some((m, l, h))
    }
}

// Layout, in pixels.
const LABEL_W: f64 = 190.0;
const PANEL_W: f64 = 260.0;
const PANEL_GAP: f64 = 26.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 84.0;
const ROW_H: f64 = 30.0;
const CONCEPT_GAP: f64 = 8.0;

/// Ticks at 1, 2 or 5 times a power of ten, about six over `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 6.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// One population drawn as a panel: its heading and, per concept and scale, its comparison.
struct Panel<'a> {
    heading: String,
    of: &'a str,
    cells: Vec<Vec<Option<&'a Comparison>>>,
}

fn colour(i: usize) -> String {
    let c = PALETTE[i];
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// The figure of one `bias` report.
fn render(instance: &str, report: &Report, class: &str, class_why: &str) -> String {
    let concepts = &report.concepts;
    let mut panels = vec![Panel {
        heading: format!(
            "all rows ({})",
            concepts
                .first()
                .and_then(|c| c.effects.first())
                .map_or(0, |e| e.all.rows)
        ),
        of: "all",
        cells: concepts
            .iter()
            .map(|c| c.effects.iter().map(|e| Some(&e.all)).collect())
            .collect(),
    }];
    for g in report.groups.iter().take(MAX_GROUP_PANELS) {
        let cells: Vec<Vec<Option<&Comparison>>> = concepts
            .iter()
            .map(|c| c.effects.iter().map(|e| e.groups.get(g)).collect())
            .collect();
        let rows = cells
            .iter()
            .flatten()
            .flatten()
            .next()
            .map_or(0, |c| c.rows);
        panels.push(Panel {
            heading: format!("group {g} ({rows} rows)"),
            of: g,
            cells,
        });
    }

    // One x range for every panel, zero included, padded.
    let (mut lo, mut hi) = (0f64, 0f64);
    for p in &panels {
        for c in p.cells.iter().flatten().flatten() {
            for e in [&c.concept, &c.control] {
                if let Some((_, l, h)) = e.probability_change.get(class).and_then(Interval::values)
                {
                    lo = lo.min(l);
                    hi = hi.max(h);
                }
            }
        }
    }
    if hi - lo < 1e-9 {
        lo -= 0.01;
        hi += 0.01;
    }
    let pad = (hi - lo) * 0.06;
    let (lo, hi) = (lo - pad, hi + pad);
    let x_of = |panel: usize, v: f64| {
        LABEL_W + panel as f64 * (PANEL_W + PANEL_GAP) + (v - lo) / (hi - lo) * PANEL_W
    };

    // Rows: per concept its scales, a small gap between concepts.
    let mut row_y = Vec::new();
    let mut y = TOP;
    for c in concepts {
        row_y.push(
            c.effects
                .iter()
                .enumerate()
                .map(|(s, _)| y + s as f64 * ROW_H)
                .collect::<Vec<_>>(),
        );
        y += c.effects.len() as f64 * ROW_H + CONCEPT_GAP;
    }
    let bottom = y;
    let width = LABEL_W + panels.len() as f64 * (PANEL_W + PANEL_GAP) - PANEL_GAP + RIGHT;
    let more_groups = report.groups.len().saturating_sub(MAX_GROUP_PANELS);
    let height = bottom + 98.0 + if more_groups > 0 { 18.0 } else { 0.0 };
    let (blue, orange) = (colour(0), colour(1));
    let pct = (report.confidence * 100.0).round();

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" class=\"bias-figure\"><rect width=\"100%\" height=\"100%\" fill=\"#FFFFFF\"/>"
    );
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">Bias: change of p({}) per concept and scale, {}</text>",
        width / 2.0,
        esc(class),
        esc(instance)
    );
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"44\" font-size=\"12\" fill=\"#444\" text-anchor=\"middle\">{}</text>",
        width / 2.0,
        esc(class_why)
    );
    for (p, panel) in panels.iter().enumerate() {
        let left = x_of(p, lo);
        let mid = left + PANEL_W / 2.0;
        let _ = write!(
            s,
            "<text x=\"{mid:.1}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
            TOP - 14.0,
            esc(&panel.heading)
        );
        let _ = write!(
            s,
            "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{PANEL_W:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#BBBBBB\"/>",
            TOP - 6.0,
            bottom - TOP + 6.0
        );
        for t in ticks(lo, hi) {
            let x = x_of(p, t);
            let (stroke, dash) = if t == 0.0 {
                ("#666666", " stroke-dasharray=\"4 3\"")
            } else {
                ("#E4E4E4", "")
            };
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{bottom:.1}\" stroke=\"{stroke}\"{dash}/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                TOP - 6.0,
                bottom + 16.0,
                tick(t)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{mid:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">change of p({}) (probability)</text>",
            bottom + 34.0,
            esc(class)
        );
        for (ci, c) in concepts.iter().enumerate() {
            for (si, e) in c.effects.iter().enumerate() {
                let Some(cmp) = panel.cells[ci][si] else {
                    continue;
                };
                let y0 = row_y[ci][si];
                for (which, est, dy, hollow) in [
                    ("concept", &cmp.concept, 9.0, false),
                    ("control", &cmp.control, 20.0, true),
                ] {
                    let Some((m, l, h)) =
                        est.probability_change.get(class).and_then(Interval::values)
                    else {
                        continue;
                    };
                    let colour = if hollow { &orange } else { &blue };
                    let yy = y0 + dy;
                    let fill = if hollow { "#FFFFFF" } else { colour.as_str() };
                    let _ = write!(
                        s,
                        "<g class=\"ci\" data-of=\"{which}\" data-latent=\"{}\" data-concept=\"{}\" data-scale=\"{}\" data-panel=\"{}\" data-mean=\"{m}\" data-low=\"{l}\" data-high=\"{h}\"><title>{} ×{}, {}: {} {}, {pct} % interval [{}, {}]</title><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/><circle cx=\"{:.1}\" cy=\"{yy:.1}\" r=\"3.5\" fill=\"{fill}\" stroke=\"{colour}\" stroke-width=\"1.5\"/></g>",
                        c.latent,
                        esc(&c.name),
                        e.scale,
                        esc(panel.of),
                        esc(&c.name),
                        e.scale,
                        esc(&panel.heading),
                        which,
                        tick(m),
                        tick(l),
                        tick(h),
                        x_of(p, l),
                        x_of(p, h).max(x_of(p, l) + 0.5),
                        x_of(p, m)
                    );
                }
                let beyond = cmp
                    .difference
                    .probability_change
                    .get(class)
                    .and_then(Interval::values)
                    .is_some_and(|(_, l, h)| l > 0.0 || h < 0.0);
                if beyond {
                    let _ = write!(
                        s,
                        "<text class=\"beyond\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" font-weight=\"bold\" fill=\"{blue}\">*</text>",
                        x_of(p, hi) - 12.0,
                        y0 + 15.0
                    );
                }
            }
        }
    }
    // Row labels: the concept on its first scale's row, the scale on every row.
    for (ci, c) in concepts.iter().enumerate() {
        let label = if c.name.starts_with('#') {
            c.name.clone()
        } else {
            format!("{} (#{})", c.name, c.latent)
        };
        let label: String = if label.chars().count() > 22 {
            label.chars().take(21).chain(['…']).collect()
        } else {
            label
        };
        let _ = write!(
            s,
            "<text x=\"8\" y=\"{:.1}\" font-size=\"13\">{}</text>",
            row_y[ci][0] + 18.0,
            esc(&label)
        );
        for (si, e) in c.effects.iter().enumerate() {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#444\" text-anchor=\"end\">×{}</text>",
                LABEL_W - 10.0,
                row_y[ci][si] + 18.0,
                e.scale
            );
        }
        if ci + 1 < concepts.len() {
            let yl = row_y[ci][0] + c.effects.len() as f64 * ROW_H + CONCEPT_GAP / 2.0;
            let _ = write!(
                s,
                "<line x1=\"4\" x2=\"{:.1}\" y1=\"{yl:.1}\" y2=\"{yl:.1}\" stroke=\"#EEEEEE\"/>",
                width - RIGHT
            );
        }
    }
    // Legend.
    let ly = bottom + 60.0;
    let _ = write!(
        s,
        "<line x1=\"12\" x2=\"36\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{blue}\" stroke-width=\"2\"/><circle cx=\"24\" cy=\"{ly:.1}\" r=\"3.5\" fill=\"{blue}\"/><text x=\"44\" y=\"{:.1}\" font-size=\"12\">concept, mean and {pct} % bootstrap interval</text>",
        ly + 4.0
    );
    let _ = write!(
        s,
        "<line x1=\"12\" x2=\"36\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{orange}\" stroke-width=\"2\"/><circle cx=\"24\" cy=\"{:.1}\" r=\"3.5\" fill=\"#FFFFFF\" stroke=\"{orange}\" stroke-width=\"1.5\"/><text x=\"44\" y=\"{:.1}\" font-size=\"12\">control: {} random latents of matched firing frequency, averaged · * concept − control interval excludes 0 · ×: factor on the concept's code</text>",
        ly + 18.0,
        ly + 18.0,
        ly + 18.0,
        ly + 22.0,
        report.controls_per_concept
    );
    if more_groups > 0 {
        let _ = write!(
            s,
            "<text x=\"12\" y=\"{:.1}\" font-size=\"12\" fill=\"#444\">{more_groups} more group(s) not drawn: {}; every group is in the step's report</text>",
            ly + 40.0,
            esc(&report.groups[MAX_GROUP_PANELS..].join(", "))
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A metric as text.
fn metric_text(record: &crate::store::Record, name: &str) -> Option<String> {
    record.metrics.get(name)?.as_str().map(str::to_string)
}

pub fn figures(f: &FinishedRecords) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for (inst, record) in f.of_kind("bias") {
        let report: Report = serde_json::from_value(f.json(record, "report")?).map_err(|e| {
            anyhow!(
                "the `report` output of {} is not a bias report: {e}",
                inst.name
            )
        })?;
        if report.concepts.is_empty() || report.classes.is_empty() {
            continue;
        }
        let (class, why) = match (&report.selection.mode[..], &report.selection.target) {
            ("probe", Some(t)) => (
                t.clone(),
                format!("the class the concepts were selected for (select = \"probe\", target = \"{t}\")"),
            ),
            _ => match metric_text(record, "largest_shift_class") {
                Some(c) => (
                    c,
                    "the class whose probability a concept changed most (largest_shift_class)"
                        .to_string(),
                ),
                None => (report.classes[0].clone(), "the probe's first class".to_string()),
            },
        };
        if !report.classes.contains(&class) {
            return Err(anyhow!(
                "the report of {} has no class `{class}` among its classes",
                inst.name
            ));
        }
        let svg = render(&inst.name, &report, &class, &why);
        out.push(Figure {
            id: format!("bias_{}", slug(&inst.name)),
            kind: "bias".into(),
            title: format!(
                "Bias: change of p({class}) per concept and scale against frequency-matched random controls, {}",
                inst.name
            ),
            svg,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(ticks(-0.012, 0.031), vec![-0.01, 0.0, 0.01, 0.02, 0.03]);
        let t = ticks(-0.3, 0.05);
        assert!(
            t.contains(&0.0) && t.iter().all(|v| (-0.3..=0.05).contains(v)),
            "{t:?}"
        );
    }

    fn iv(m: f64, l: f64, h: f64) -> serde_json::Value {
        serde_json::json!({ "mean": m, "low": l, "high": h })
    }

    #[test]
    fn every_concept_and_control_gets_one_interval_per_scale_and_panel() {
        let est = |m: f64| serde_json::json!({ "probability_change": { "a": iv(m, m - 0.01, m + 0.01), "b": iv(-m, -m - 0.01, -m + 0.01) } });
        let cmp = |m: f64| serde_json::json!({ "rows": 10, "concept": est(m), "control": est(m / 10.0), "difference": est(m) });
        let effect = |scale: f64, m: f64| serde_json::json!({ "scale": scale, "all": cmp(m), "groups": { "x": cmp(m), "y": cmp(-m) } });
        let report: Report = serde_json::from_value(serde_json::json!({
            "classes": ["a", "b"],
            "confidence": 0.95,
            "controls_per_concept": 4,
            "selection": { "mode": "list", "target": null },
            "groups": ["x", "y"],
            "concepts": [
                { "latent": 3, "name": "smile", "effects": [effect(0.0, -0.2), effect(2.0, 0.1)] },
                { "latent": 5, "name": "#5", "effects": [effect(0.0, 0.0), effect(2.0, 0.0)] }
            ]
        }))
        .unwrap();
        let svg = render("b<1>", &report, "a", "why");
        assert_eq!(svg.matches("data-of=\"concept\"").count(), 2 * 2 * 3);
        assert_eq!(svg.matches("data-of=\"control\"").count(), 2 * 2 * 3);
        // Only the first concept's difference interval excludes zero.
        assert_eq!(svg.matches("class=\"beyond\"").count(), 2 * 3);
        assert!(svg.contains("b&lt;1&gt;") && svg.contains("smile (#3)"));
    }
}
