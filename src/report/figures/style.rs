//! Colours, markers and legend labels shared by every figure.
//!
//! Colours are the Okabe–Ito palette (distinguishable with the common forms of colour
//! blindness). Series that differ in one "minor" grid coordinate (e.g. the expansion factor)
//! share a colour and differ in marker shape, so a sweep reads as families of curves.

use std::collections::{BTreeMap, BTreeSet};

use plotters::style::RGBColor;

/// Okabe–Ito, ordered so that the first colours have the most contrast on white
/// (yellow, the weakest on white, comes last).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0xF0, 0xE4, 0x42), // yellow
];

/// Marker shapes, cycled when series share a colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
}

pub const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Cross,
];

/// How one series is drawn and named.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesStyle {
    pub label: String,
    pub colour: RGBColor,
    pub marker: Marker,
}

/// Legend labels and styles for a set of instances, from their grid coordinates.
///
/// The label lists only the coordinates that differ between the instances (`arch=topk,
/// expansion=8`); when none differ the instance name is used. The coordinate with the fewest
/// distinct values (two to four, set on every instance) picks the marker when at least two
/// coordinates vary; the others pick the colour.
pub fn series_styles(names: &[String], coords: &[BTreeMap<String, String>]) -> Vec<SeriesStyle> {
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in coords {
        for (k, v) in c {
            values.entry(k).or_default().insert(v);
        }
    }
    // A coordinate varies when instances disagree on it or some lack it.
    let varying: Vec<&str> = values
        .iter()
        .filter(|(k, vs)| vs.len() > 1 || coords.iter().any(|c| !c.contains_key(**k)))
        .map(|(k, _)| *k)
        .collect();
    let minor = if varying.len() >= 2 {
        // Ties go to the last coordinate in name order (min_by_key keeps the first minimum).
        varying
            .iter()
            .rev()
            .copied()
            .filter(|k| {
                (2..=MARKERS.len()).contains(&values[k].len())
                    && coords.iter().all(|c| c.contains_key(*k))
            })
            .min_by_key(|k| values[k].len())
    } else {
        None
    };
    let mut colour_groups: Vec<String> = Vec::new();
    let mut minor_values: Vec<String> = Vec::new();
    names
        .iter()
        .zip(coords)
        .map(|(name, c)| {
            let label = if varying.is_empty() {
                name.clone()
            } else {
                varying
                    .iter()
                    .filter_map(|k| c.get(*k).map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let group: String = varying
                .iter()
                .filter(|k| Some(**k) != minor)
                .map(|k| c.get(*k).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\u{1f}");
            let colour_index = position_or_push(&mut colour_groups, group);
            let minor_value = minor.and_then(|k| c.get(k)).cloned().unwrap_or_default();
            let mut marker_index = position_or_push(&mut minor_values, minor_value);
            // More groups than colours: the marker tells the repeated colours apart.
            marker_index += colour_index / PALETTE.len();
            SeriesStyle {
                label,
                colour: PALETTE[colour_index % PALETTE.len()],
                marker: MARKERS[marker_index % MARKERS.len()],
            }
        })
        .collect()
}

fn position_or_push(list: &mut Vec<String>, value: String) -> usize {
    match list.iter().position(|v| *v == value) {
        Some(i) => i,
        None => {
            list.push(value);
            list.len() - 1
        }
    }
}

/// Tick labels: short, exact for the round numbers axes use.
pub fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn c(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_list_only_varying_coordinates_and_minor_axis_picks_marker() {
        let names: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
        let coords = vec![
            c(&[("arch", "topk"), ("expansion", "4"), ("d", "1")]),
            c(&[("arch", "topk"), ("expansion", "8"), ("d", "1")]),
            c(&[("arch", "relu"), ("expansion", "4"), ("d", "1")]),
            c(&[("arch", "relu"), ("expansion", "8"), ("d", "1")]),
        ];
        let s = series_styles(&names, &coords);
        assert_eq!(s[0].label, "arch=topk, expansion=4");
        assert_eq!(s[0].colour, s[1].colour);
        assert_ne!(s[0].marker, s[1].marker);
        assert_ne!(s[0].colour, s[2].colour);
        assert_eq!(s[0].marker, s[2].marker);
    }

    #[test]
    fn identical_coordinates_fall_back_to_names() {
        let names = vec!["a".to_string()];
        let s = series_styles(&names, &[BTreeMap::new()]);
        assert_eq!(s[0].label, "a");
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(64.0), "64");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(2e-5), "2.0e-5");
    }
}
