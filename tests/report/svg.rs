//! Reading back what plotters wrote: data lines, point markers, bars, legend labels, title and
//! axis descriptions and axis ticks of a figure, and the pixel ↔ value mapping the ticks define.

/// An attribute of one tag's text.
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Every `<name …>` opening tag with its offset in `svg`, in document order.
fn tags_at<'a>(svg: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let open = format!("<{name} ");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = svg[from..].find(&open) {
        let start = from + i;
        let end = svg[start..].find('>').expect("tag ends") + start;
        out.push((start, &svg[start..=end]));
        from = end + 1;
    }
    out
}

/// Every `<name …>` opening tag, in document order.
pub fn tags<'a>(svg: &'a str, name: &str) -> Vec<&'a str> {
    tags_at(svg, name).into_iter().map(|(_, t)| t).collect()
}

/// Text as written in SVG, with the five XML entities plotters writes decoded.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A text element.
pub struct Text {
    pub x: f64,
    pub y: f64,
    /// `start`, `middle` or `end`.
    pub anchor: String,
    pub size: f64,
    /// Drawn turned (the y axis description).
    pub rotated: bool,
    pub content: String,
    /// Where its tag starts in the SVG.
    pub offset: usize,
}

impl Text {
    fn numeric(&self) -> bool {
        self.content.parse::<f64>().is_ok()
    }
}

/// Text elements, in document order.
pub fn texts(svg: &str) -> Vec<Text> {
    tags_at(svg, "text")
        .into_iter()
        .map(|(offset, tag)| {
            let body = offset + tag.len();
            let close = svg[body..].find("</text>").unwrap() + body;
            Text {
                x: attr(tag, "x").unwrap().parse().unwrap(),
                y: attr(tag, "y").unwrap().parse().unwrap(),
                anchor: attr(tag, "text-anchor").unwrap_or("start").to_string(),
                size: attr(tag, "font-size").unwrap().parse().unwrap(),
                rotated: attr(tag, "transform").is_some_and(|t| t.starts_with("rotate(")),
                content: unescape(svg[body..close].trim()),
                offset,
            }
        })
        .collect()
}

fn points(tag: &str) -> Vec<(f64, f64)> {
    attr(tag, "points")
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// Polylines drawn 2 px wide (axes and ticks are 1 px) that end where they start: outlines of
/// hollow markers, not data.
fn closed(points: &[(f64, f64)]) -> bool {
    points.len() > 2 && points.first() == points.last()
}

/// The data lines: open polylines drawn 2 px wide (axes and ticks are 1 px), as pixel points.
pub fn data_lines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    tags(svg, "polyline")
        .into_iter()
        .filter(|t| attr(t, "stroke-width") == Some("2"))
        .map(points)
        .filter(|p| !closed(p))
        .collect()
}

/// A point marker: its centre in pixels, colour, shape and whether it is drawn hollow.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub y: f64,
    pub colour: String,
    pub shape: &'static str,
    pub hollow: bool,
    offset: usize,
}

/// Every point marker (circle, triangle, square or cross), plot and legend, in document order.
pub fn markers(svg: &str) -> Vec<Marker> {
    let mut out = Vec::new();
    for (offset, t) in tags_at(svg, "circle") {
        let hollow = attr(t, "fill") == Some("none");
        out.push(Marker {
            x: attr(t, "cx").unwrap().parse().unwrap(),
            y: attr(t, "cy").unwrap().parse().unwrap(),
            colour: attr(t, if hollow { "stroke" } else { "fill" })
                .unwrap()
                .to_string(),
            shape: "circle",
            hollow,
            offset,
        });
    }
    // Triangles: filled polygons, or closed 2 px outlines; the centre is the corners' mean.
    let triangle = |offset, pts: &[(f64, f64)], colour: &str, hollow| {
        let n = pts.len() as f64;
        Marker {
            x: pts.iter().map(|p| p.0).sum::<f64>() / n,
            y: pts.iter().map(|p| p.1).sum::<f64>() / n,
            colour: colour.to_string(),
            shape: "triangle",
            hollow,
            offset,
        }
    };
    for (offset, t) in tags_at(svg, "polygon") {
        let pts = points(t);
        assert_eq!(pts.len(), 3, "a polygon that is no triangle marker: {t}");
        out.push(triangle(offset, &pts, attr(t, "fill").unwrap(), false));
    }
    for (offset, t) in tags_at(svg, "polyline") {
        let pts = points(t);
        if attr(t, "stroke-width") == Some("2") && closed(&pts) {
            assert_eq!(pts.len(), 4, "a closed outline that is no triangle: {t}");
            out.push(triangle(
                offset,
                &pts[..3],
                attr(t, "stroke").unwrap(),
                true,
            ));
        }
    }
    // Squares: 8 px rectangles (legend swatches of lines are flat, bars are larger).
    for (offset, t) in tags_at(svg, "rect") {
        let size = |a| attr(t, a).unwrap().parse::<f64>().unwrap();
        let (w, h) = (size("width"), size("height"));
        if w == h && w <= 10.0 {
            let hollow = attr(t, "fill") == Some("none");
            out.push(Marker {
                x: size("x") + w / 2.0,
                y: size("y") + h / 2.0,
                colour: attr(t, if hollow { "stroke" } else { "fill" })
                    .unwrap()
                    .to_string(),
                shape: "square",
                hollow,
                offset,
            });
        }
    }
    // Crosses: two 2 px lines (grid lines are 1 px); the first one's middle is the centre.
    let lines: Vec<_> = tags_at(svg, "line")
        .into_iter()
        .filter(|(_, t)| attr(t, "stroke-width") == Some("2"))
        .collect();
    assert!(lines.len() % 2 == 0, "a cross of one line");
    for pair in lines.chunks(2) {
        let (offset, t) = pair[0];
        let c = |a| attr(t, a).unwrap().parse::<f64>().unwrap();
        out.push(Marker {
            x: (c("x1") + c("x2")) / 2.0,
            y: (c("y1") + c("y2")) / 2.0,
            colour: attr(t, "stroke").unwrap().to_string(),
            shape: "cross",
            hollow: false,
            offset,
        });
    }
    out.sort_by_key(|m| m.offset);
    out
}

/// Markers of the plot (the data) and of the legend (one per row, drawn just before its label,
/// so the legend opens with the last marker before the first label).
pub fn plot_and_legend_markers(svg: &str) -> (Vec<Marker>, Vec<Marker>) {
    let mut all = markers(svg);
    let first_label = texts(svg)
        .into_iter()
        .find(|t| t.anchor == "start")
        .expect("a legend")
        .offset;
    let split = all
        .iter()
        .rposition(|m| m.offset < first_label)
        .expect("a legend marker");
    let legend = all.split_off(split);
    (all, legend)
}

/// Filled rectangles other than the white background: the bars of a histogram, as
/// (left, top, right, bottom) pixels.
pub fn bars(svg: &str) -> Vec<(f64, f64, f64, f64)> {
    tags(svg, "rect")
        .into_iter()
        .filter(|t| !matches!(attr(t, "fill"), Some("#FFFFFF") | Some("none")))
        .map(|t| {
            let v = |a| attr(t, a).unwrap().parse::<f64>().unwrap();
            (v("x"), v("y"), v("x") + v("width"), v("y") + v("height"))
        })
        .collect()
}

/// The words around a chart: its title (the largest text) and the descriptions of its axes.
pub struct Labels {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
}

/// The title, the x axis description (the one centred text that is neither the title nor a
/// number) and the y axis description (the one turned text); fails where one is missing or
/// ambiguous.
pub fn labels(svg: &str) -> Labels {
    let t = texts(svg);
    let largest = t.iter().map(|t| t.size).fold(0.0, f64::max);
    let titles: Vec<&Text> = t.iter().filter(|t| t.size == largest).collect();
    assert_eq!(titles.len(), 1, "one title (the largest text)");
    let x: Vec<&Text> = t
        .iter()
        .filter(|t| t.anchor == "middle" && !t.rotated && t.size < largest)
        .filter(|t| !t.content.is_empty() && !t.numeric())
        .collect();
    assert_eq!(x.len(), 1, "one x axis description: {:?}", contents(&x));
    let y: Vec<&Text> = t.iter().filter(|t| t.rotated).collect();
    assert_eq!(y.len(), 1, "one y axis description: {:?}", contents(&y));
    // The x description lies under the plot, below every x tick label.
    let lowest_tick = t
        .iter()
        .filter(|t| t.anchor == "middle" && t.numeric())
        .map(|t| t.y)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(
        x[0].y > lowest_tick,
        "the x description is not under the axis"
    );
    Labels {
        title: titles[0].content.clone(),
        x_desc: x[0].content.clone(),
        y_desc: y[0].content.clone(),
    }
}

fn contents(t: &[&Text]) -> Vec<String> {
    t.iter().map(|t| t.content.clone()).collect()
}

/// pixel = a + b·f(value), fitted on the two ticks furthest apart.
pub struct Axis {
    a: f64,
    b: f64,
    log2: bool,
}

impl Axis {
    /// From (value, pixel) ticks; `log2`: the axis is linear in log2(value).
    pub fn from_ticks(ticks: &[(f64, f64)], log2: bool) -> Axis {
        assert!(
            ticks.len() >= 2,
            "an axis needs two labelled ticks: {ticks:?}"
        );
        let f = |v: f64| if log2 { v.log2() } else { v };
        let lo = ticks.iter().min_by(|p, q| p.1.total_cmp(&q.1)).unwrap();
        let hi = ticks.iter().max_by(|p, q| p.1.total_cmp(&q.1)).unwrap();
        let b = (hi.1 - lo.1) / (f(hi.0) - f(lo.0));
        Axis {
            a: lo.1 - b * f(lo.0),
            b,
            log2,
        }
    }

    pub fn pixel(&self, v: f64) -> f64 {
        self.a + self.b * if self.log2 { v.log2() } else { v }
    }

    /// The value drawn at a pixel (the inverse of `pixel`).
    pub fn value(&self, px: f64) -> f64 {
        let f = (px - self.a) / self.b;
        if self.log2 {
            f.exp2()
        } else {
            f
        }
    }

    /// Value units per pixel.
    pub fn resolution(&self) -> f64 {
        1.0 / self.b.abs()
    }
}

/// The x axis (labels centred under ticks) and the y axis (labels right-aligned) of a chart.
pub fn axes(svg: &str, log_x: bool) -> (Axis, Axis) {
    let t = texts(svg);
    let numeric = |anchor: &str, x_axis: bool| -> Vec<(f64, f64)> {
        t.iter()
            .filter(|t| t.anchor == anchor && !t.rotated)
            .filter_map(|t| {
                Some((
                    t.content.parse::<f64>().ok()?,
                    if x_axis { t.x } else { t.y },
                ))
            })
            .collect()
    };
    (
        Axis::from_ticks(&numeric("middle", true), log_x),
        Axis::from_ticks(&numeric("end", false), false),
    )
}

/// Legend labels (left-aligned texts), in drawing order.
pub fn legend(svg: &str) -> Vec<String> {
    texts(svg)
        .into_iter()
        .filter(|t| t.anchor == "start")
        .map(|t| t.content)
        .collect()
}
