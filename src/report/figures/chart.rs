//! Drawing charts to SVG text with plotters: line charts, scatter plots and bar charts, each with
//! a title, axis descriptions, and a legend beside the plot so it never covers data.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use super::style::{tick, Marker, SeriesStyle, PALETTE};

const FONT: &str = "sans-serif";
const PLOT_WIDTH: u32 = 640;
const MIN_HEIGHT: u32 = 420;
const LEGEND_ROW: i32 = 18;

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// The outline of a hollow triangle marker around its centre, closed: plotters' triangle marker
/// is always filled, so a hollow one is drawn as this path (the filled marker's corners).
const TRIANGLE_OUTLINE: [(i32, i32); 4] = [(0, -5), (-4, 3), (4, 3), (0, -5)];

/// One curve (or, in a scatter plot, one point set).
pub struct Series {
    pub style: SeriesStyle,
    pub points: Vec<(f64, f64)>,
    /// Scatter plots: hollow markers tell a second quantity of the same series apart.
    pub hollow: bool,
    /// Whether the series has a legend row (a second quantity of a series may share its row).
    pub in_legend: bool,
    /// A marker on every n-th point (1: all), so long curves stay readable.
    pub marker_every: usize,
}

impl Series {
    pub fn new(style: SeriesStyle, points: Vec<(f64, f64)>) -> Series {
        Series {
            style,
            points,
            hollow: false,
            in_legend: true,
            marker_every: 1,
        }
    }

    fn marked_points(&self) -> Vec<(f64, f64)> {
        let every = self.marker_every.max(1);
        let last = self.points.len().saturating_sub(1);
        self.points
            .iter()
            .enumerate()
            .filter(|(i, _)| i % every == 0 || *i == last)
            .map(|(_, p)| *p)
            .collect()
    }
}

/// What a chart shows; `render_lines` and `render_scatter` draw it.
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    /// Extra legend rows without a curve (e.g. "filled = sparse code").
    pub notes: Vec<String>,
}

/// A data range padded so that markers at the ends stay inside the plot.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 {
        let pad = (lo.abs() * 0.1).max(0.05);
        (lo - pad, hi + pad)
    } else {
        let pad = (hi - lo) * 0.06;
        (lo - pad, hi + pad)
    }
}

fn legend_width(chart: &Chart) -> u32 {
    let chars = chart
        .series
        .iter()
        .filter(|s| s.in_legend)
        .map(|s| s.style.label.chars().count())
        .chain(chart.notes.iter().map(|n| n.chars().count()))
        .max()
        .unwrap_or(0) as u32;
    (chars * 7 + 48).clamp(120, 420)
}

fn height_for(rows: usize) -> u32 {
    MIN_HEIGHT.max(70 + rows as u32 * LEGEND_ROW as u32)
}

/// Draws a marker of `style` centred at a pixel position of `area`.
fn legend_marker(
    area: &DrawingArea<SVGBackend, Shift>,
    at: (i32, i32),
    marker: Marker,
    colour: RGBColor,
    hollow: bool,
) -> Result<()> {
    let style = if hollow {
        colour.stroke_width(2)
    } else {
        colour.filled()
    };
    match marker {
        Marker::Circle => area.draw(&Circle::new(at, 4, style)),
        Marker::Triangle if hollow => area.draw(&PathElement::new(
            TRIANGLE_OUTLINE
                .iter()
                .map(|(x, y)| (at.0 + x, at.1 + y))
                .collect::<Vec<_>>(),
            style,
        )),
        Marker::Triangle => area.draw(&TriangleMarker::new(at, 5, style)),
        Marker::Square => area.draw(&Rectangle::new(
            [(at.0 - 4, at.1 - 4), (at.0 + 4, at.1 + 4)],
            style,
        )),
        Marker::Cross => area.draw(&Cross::new(at, 4, colour.stroke_width(2))),
    }
    .map_err(draw_err)
}

fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, chart: &Chart, lines: bool) -> Result<()> {
    let mut y = 48;
    let font = (FONT, 14).into_font().color(&BLACK);
    for s in chart.series.iter().filter(|s| s.in_legend) {
        if lines {
            area.draw(&Rectangle::new(
                [(6, y - 1), (30, y + 1)],
                s.style.colour.filled(),
            ))
            .map_err(draw_err)?;
        }
        legend_marker(area, (18, y), s.style.marker, s.style.colour, s.hollow)?;
        area.draw(&Text::new(
            s.style.label.clone(),
            (38, y),
            font.pos(text_anchor::Pos::new(
                text_anchor::HPos::Left,
                text_anchor::VPos::Center,
            )),
        ))
        .map_err(draw_err)?;
        y += LEGEND_ROW;
    }
    for note in &chart.notes {
        area.draw(&Text::new(
            note.clone(),
            (6, y),
            font.pos(text_anchor::Pos::new(
                text_anchor::HPos::Left,
                text_anchor::VPos::Center,
            )),
        ))
        .map_err(draw_err)?;
        y += LEGEND_ROW;
    }
    Ok(())
}

/// Points of a series drawn as markers in chart coordinates.
macro_rules! draw_markers {
    ($chart:expr, $points:expr, $marker:expr, $colour:expr, $hollow:expr) => {{
        let style = if $hollow {
            $colour.stroke_width(2)
        } else {
            $colour.filled()
        };
        let owned: Vec<(f64, f64)> = $points;
        let pts = owned.iter().copied();
        match $marker {
            Marker::Circle => $chart
                .draw_series(pts.map(|p| Circle::new(p, 4, style)))
                .map(|_| ()),
            Marker::Triangle if $hollow => $chart
                .draw_series(pts.map(|p| {
                    EmptyElement::at(p) + PathElement::new(TRIANGLE_OUTLINE.to_vec(), style)
                }))
                .map(|_| ()),
            Marker::Triangle => $chart
                .draw_series(pts.map(|p| TriangleMarker::new(p, 5, style)))
                .map(|_| ()),
            Marker::Square => $chart
                .draw_series(
                    pts.map(|p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], style)),
                )
                .map(|_| ()),
            Marker::Cross => $chart
                .draw_series(pts.map(|p| Cross::new(p, 4, $colour.stroke_width(2))))
                .map(|_| ()),
        }
        .map_err(draw_err)
    }};
}

/// Draws the chart's axes and every series; `lines` joins each series' points.
fn render(chart: &Chart, lines: bool) -> Result<String> {
    let legend = legend_width(chart);
    let rows = chart.series.iter().filter(|s| s.in_legend).count() + chart.notes.len();
    let height = height_for(rows);
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH + legend, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (plot, legend_area) = root.split_horizontally(PLOT_WIDTH);
        let transformed = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter(|p| !chart.log_x || p.0 > 0.0)
                .map(|&(x, y)| (if chart.log_x { x.log2() } else { x }, y))
                .collect()
        };
        let (x0, x1) = padded(
            chart
                .series
                .iter()
                .flat_map(|s| transformed(&s.points))
                .map(|p| p.0),
        );
        let (y0, y1) = padded(
            chart
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
        );
        let mut c = ChartBuilder::on(&plot)
            .caption(&chart.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        let y_fmt = |v: &f64| tick(*v);
        // A log axis is drawn as a linear axis over log2(x), labelled at powers of two (the
        // values k and L0 take in sweeps); other grid lines stay unlabelled.
        let x_fmt = |v: &f64| {
            if !chart.log_x {
                tick(*v)
            } else if (v - v.round()).abs() < 1e-9 {
                tick(2f64.powf(v.round()))
            } else {
                String::new()
            }
        };
        let mut mesh = c.configure_mesh();
        if chart.log_x {
            mesh.x_labels(((x1 - x0).ceil() as usize + 1).max(2));
        }
        mesh.x_desc(&chart.x_desc)
            .y_desc(&chart.y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xE4, 0xE4, 0xE4))
            .draw()
            .map_err(draw_err)?;
        for s in &chart.series {
            let points = transformed(&s.points);
            if lines {
                c.draw_series(LineSeries::new(
                    points.iter().copied(),
                    s.style.colour.stroke_width(2),
                ))
                .map_err(draw_err)?;
            }
            draw_markers!(
                c,
                transformed(&s.marked_points()),
                s.style.marker,
                s.style.colour,
                s.hollow
            )?;
        }
        draw_legend(&legend_area, chart, lines)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Curves: every series' points joined in order, with markers.
pub fn render_lines(chart: &Chart) -> Result<String> {
    render(chart, true)
}

/// Scatter plot: markers only.
pub fn render_scatter(chart: &Chart) -> Result<String> {
    render(chart, false)
}

/// A histogram from bin edges and counts.
pub struct Histogram {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub edges: Vec<f64>,
    pub counts: Vec<f64>,
    /// A one-line summary written under the title (e.g. the mean).
    pub note: String,
}

pub fn render_histogram(h: &Histogram) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PLOT_WIDTH, MIN_HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let x0 = h.edges.first().copied().unwrap_or(0.0);
        let x1 = h.edges.last().copied().unwrap_or(1.0);
        let top = h.counts.iter().copied().fold(0.0, f64::max).max(1.0) * 1.08;
        let mut c = ChartBuilder::on(&root)
            .caption(&h.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, 0.0..top)
            .map_err(draw_err)?;
        let fmt = |v: &f64| tick(*v);
        c.configure_mesh()
            .x_desc(&h.x_desc)
            .y_desc(&h.y_desc)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xE4, 0xE4, 0xE4))
            .draw()
            .map_err(draw_err)?;
        c.draw_series(
            h.edges
                .windows(2)
                .zip(&h.counts)
                .filter(|(_, &n)| n > 0.0)
                .map(|(w, &n)| Rectangle::new([(w[0], 0.0), (w[1], n)], PALETTE[0].filled())),
        )
        .map_err(draw_err)?;
        root.draw(&Text::new(
            h.note.clone(),
            (90, 44),
            (FONT, 14).into_font().color(&BLACK),
        ))
        .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Horizontal bars, one labelled row each, largest first (top).
pub struct Bars {
    pub title: String,
    pub x_desc: String,
    /// What the row labels say.
    pub y_desc: String,
    pub labels: Vec<String>,
    pub values: Vec<f64>,
}

pub fn render_bars(b: &Bars) -> Result<String> {
    let rows = b.values.len().max(1);
    let height = MIN_HEIGHT.max(90 + rows as u32 * 22);
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH + 200, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let top = b.values.iter().copied().fold(0.0, f64::max).max(1e-12) * 1.05;
        let mut c = ChartBuilder::on(&root)
            .caption(&b.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(280)
            .build_cartesian_2d(0.0..top, (0..rows).into_segmented())
            .map_err(draw_err)?;
        let labels = b.labels.clone();
        let row_label = move |v: &SegmentValue<usize>| match v {
            // Row 0 is drawn at the bottom; the largest value (first label) goes on top.
            SegmentValue::CenterOf(i) if *i < rows => {
                labels.get(rows - 1 - *i).cloned().unwrap_or_default()
            }
            _ => String::new(),
        };
        let fmt = |v: &f64| tick(*v);
        c.configure_mesh()
            .disable_y_mesh()
            .x_desc(&b.x_desc)
            .y_desc(&b.y_desc)
            .x_label_formatter(&fmt)
            .y_labels(rows)
            .y_label_formatter(&row_label)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xE4, 0xE4, 0xE4))
            .draw()
            .map_err(draw_err)?;
        c.draw_series(b.values.iter().enumerate().map(|(i, &v)| {
            let row = rows - 1 - i;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (v, SegmentValue::Exact(row + 1)),
                ],
                PALETTE[0].filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}
