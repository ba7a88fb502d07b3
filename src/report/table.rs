//! Result tables: one per step kind, a row per instance, its grid coordinates then its metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::experiment::Plan;
use crate::store::Record;

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub kind: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Csv,
    Json,
}

/// Builds the tables from the records of cached instances (`None` = not finished, left out).
pub fn build(plan: &Plan, records: &[Option<Record>]) -> Vec<Table> {
    let mut by_kind: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for inst in &plan.instances {
        if records[inst.index].is_some() {
            by_kind
                .entry(inst.kind.kind())
                .or_default()
                .push(inst.index);
        }
    }
    let mut tables = Vec::new();
    for (kind, members) in by_kind {
        let mut coords = BTreeSet::new();
        let mut metrics = BTreeSet::new();
        for &i in &members {
            coords.extend(plan.instances[i].coords.keys().cloned());
            if let Some(r) = &records[i] {
                metrics.extend(r.metrics.keys().cloned());
            }
        }
        let mut metrics: Vec<String> = metrics.into_iter().collect();
        metrics.sort_by(|a, b| natural_cmp(a, b));
        let mut columns = vec!["instance".to_string()];
        columns.extend(coords.iter().cloned());
        columns.extend(metrics.iter().cloned());
        // How each result was produced (not part of its key): see `Record::produced_on`.
        columns.extend(["device".to_string(), "msae".to_string()]);
        let rows = members
            .iter()
            .map(|&i| {
                let inst = &plan.instances[i];
                let r = records[i].as_ref().expect("filtered above");
                let mut row = vec![serde_json::Value::from(inst.name.clone())];
                for c in &coords {
                    row.push(
                        inst.coords
                            .get(c)
                            .map(|v| serde_json::to_value(v).unwrap_or_default())
                            .unwrap_or(serde_json::Value::Null),
                    );
                }
                for m in &metrics {
                    row.push(r.metrics.get(m).cloned().unwrap_or(serde_json::Value::Null));
                }
                row.push(serde_json::Value::from(r.produced_on()));
                row.push(serde_json::Value::from(r.msae_version.clone()));
                row
            })
            .collect();
        tables.push(Table {
            kind: kind.to_string(),
            columns,
            rows,
        });
    }
    tables
}

/// Orders `fvu@16` before `fvu@128`: runs of digits compare as numbers.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x.0 && y.0, x.1.parse::<u128>(), y.1.parse::<u128>()) {
            (true, Ok(p), Ok(q)) => p.cmp(&q),
            _ => x.1.cmp(&y.1),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Four significant digits: enough to compare runs, short enough to read.
fn format_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return f.to_string();
    }
    let mag = f.abs().log10().floor() as i32;
    if (-3..6).contains(&mag) {
        let decimals = (3 - mag).max(0) as usize;
        format!("{f:.decimals$}")
    } else {
        format!("{f:.3e}")
    }
}

pub fn render(table: &Table, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Markdown => {
            let _ = writeln!(out, "### {}\n", table.kind);
            let _ = writeln!(out, "| {} |", table.columns.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(table.columns.len()));
            for row in &table.rows {
                let cells: Vec<String> = row.iter().map(|c| cell(c).replace('|', "\\|")).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
        }
        Format::Csv => {
            let _ = writeln!(
                out,
                "{}",
                table
                    .columns
                    .iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            for row in &table.rows {
                let cells: Vec<String> = row
                    .iter()
                    .map(|c| match c {
                        serde_json::Value::Number(n) => n.to_string(),
                        other => csv_field(&cell(other)),
                    })
                    .collect();
                let _ = writeln!(out, "{}", cells.join(","));
            }
        }
        Format::Json => {
            out = serde_json::to_string_pretty(&json_rows(table)).expect("json");
            out.push('\n');
        }
    }
    out
}

/// A table as JSON: one object per row, keyed by column.
pub fn json_rows(table: &Table) -> Vec<BTreeMap<&str, &serde_json::Value>> {
    table
        .rows
        .iter()
        .map(|row| {
            table
                .columns
                .iter()
                .map(String::as_str)
                .zip(row.iter())
                .collect()
        })
        .collect()
}

/// Several tables as one JSON document: an object keyed by step kind, each an array of rows.
pub fn render_json_all(tables: &[Table]) -> String {
    let all: BTreeMap<&str, Vec<BTreeMap<&str, &serde_json::Value>>> = tables
        .iter()
        .map(|t| (t.kind.as_str(), json_rows(t)))
        .collect();
    let mut out = serde_json::to_string_pretty(&all).expect("json");
    out.push('\n');
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes every table in all three formats into `dir`.
pub fn write_all(dir: &Path, tables: &[Table]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for t in tables {
        for (format, ext) in [
            (Format::Markdown, "md"),
            (Format::Csv, "csv"),
            (Format::Json, "json"),
        ] {
            let path = dir.join(format!("{}.{ext}", t.kind));
            let text = render(t, format);
            // Skip unchanged files so a no-op run touches nothing.
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(&path, text)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_keep_four_significant_digits() {
        assert_eq!(format_float(0.123456), "0.1235");
        assert_eq!(format_float(12.5), "12.50");
        assert_eq!(format_float(1.5e-7), "1.500e-7");
    }

    #[test]
    fn metric_columns_sort_numbers_by_value() {
        let mut v = vec!["fvu@128", "cos@16", "fvu@16", "fvu@1024", "dead"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["cos@16", "dead", "fvu@16", "fvu@128", "fvu@1024"]);
    }

    #[test]
    fn csv_quotes_fields_with_commas() {
        assert_eq!(csv_field("sae[a=1,b=2]"), "\"sae[a=1,b=2]\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
