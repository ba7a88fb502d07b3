//! Reading back what plotters wrote: data lines, legend labels and axis ticks of a figure, and
//! the pixel ↔ value mapping the ticks define.

/// An attribute of one tag's text.
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Every `<name …>` opening tag, in document order.
pub fn tags<'a>(svg: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find(&open) {
        let end = rest[i..].find('>').expect("tag ends") + i;
        out.push(&rest[i..=end]);
        rest = &rest[end + 1..];
    }
    out
}

/// Text elements as (x, y, text-anchor, content).
pub fn texts(svg: &str) -> Vec<(f64, f64, String, String)> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("<text ") {
        let tag_end = rest[i..].find('>').unwrap() + i;
        let close = rest[tag_end..].find("</text>").unwrap() + tag_end;
        let tag = &rest[i..=tag_end];
        out.push((
            attr(tag, "x").unwrap().parse().unwrap(),
            attr(tag, "y").unwrap().parse().unwrap(),
            attr(tag, "text-anchor").unwrap_or("start").to_string(),
            rest[tag_end + 1..close].trim().to_string(),
        ));
        rest = &rest[close..];
    }
    out
}

/// The data lines: polylines drawn 2 px wide (axes and ticks are 1 px), as pixel points.
pub fn data_lines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    tags(svg, "polyline")
        .into_iter()
        .filter(|t| attr(t, "stroke-width") == Some("2"))
        .map(|t| {
            attr(t, "points")
                .unwrap()
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
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
            .filter(|(_, _, a, _)| a == anchor)
            .filter_map(|(x, y, _, s)| Some((s.parse::<f64>().ok()?, if x_axis { *x } else { *y })))
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
        .filter(|(_, _, a, _)| a == "start")
        .map(|(_, _, _, s)| s)
        .collect()
}
