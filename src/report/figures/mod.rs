//! The figures of an experiment, drawn from the records and outputs of its finished instances.
//!
//! Each step kind with something to look at has its own file; a kind that an experiment does not
//! use gives no figure. Figures are SVG drawn with plotters: titles, axis descriptions and legends
//! make them readable on their own.

pub mod chart;
pub mod style;

mod align;
mod bias;
mod name;
mod pareto;
mod probe;
mod recovery;
mod score_topk;
mod validate;

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};

use crate::experiment::{Instance, Plan};
use crate::store::objects::Objects;
use crate::store::Record;

/// One drawn figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem under `figures/`, unique within the experiment.
    pub id: String,
    /// The step kind it shows (the page groups figures by it).
    pub kind: String,
    pub title: String,
    pub svg: String,
}

/// The finished instances of an experiment and where their outputs are.
pub struct FinishedRecords<'a> {
    pub plan: &'a Plan,
    pub records: &'a [Option<Record>],
    pub objects: &'a Objects,
}

impl FinishedRecords<'_> {
    /// Finished instances of one step kind, in plan order.
    pub fn of_kind(&self, kind: &str) -> Vec<(&Instance, &Record)> {
        self.plan
            .instances
            .iter()
            .filter(|i| i.kind.kind() == kind)
            .filter_map(|i| self.records[i.index].as_ref().map(|r| (i, r)))
            .collect()
    }

    /// A JSON output of a finished instance.
    pub fn json(&self, record: &Record, output: &str) -> Result<serde_json::Value> {
        let a = record.outputs.get(output).ok_or_else(|| {
            anyhow!(
                "instance {} has no output `{output}` in its record",
                record.instance
            )
        })?;
        let path = self.objects.path(&a.hash);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "output `{output}` of {} is not the JSON expected",
                record.instance
            )
        })
    }

    /// The record of the instance an input of `inst` came from.
    pub fn upstream(&self, inst: &Instance, param: &str) -> Option<&Record> {
        let input = inst.inputs.get(param)?;
        self.records[input.instance].as_ref()
    }
}

/// Names and grid coordinates of instances (values written as in instance names), the input of
/// legend labels.
pub fn names_and_coords(
    items: &[(&Instance, &Record)],
) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    items
        .iter()
        .map(|(i, _)| {
            let coords = i
                .coords
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            (i.name.clone(), coords)
        })
        .unzip()
}

/// A metric as a number.
pub fn metric(record: &Record, name: &str) -> Option<f64> {
    record.metrics.get(name).and_then(serde_json::Value::as_f64)
}

/// The `k`s of metrics named `<prefix>@<k>`, ascending.
pub fn ks_of(record: &Record, prefix: &str) -> Vec<u64> {
    let mut ks: Vec<u64> = record
        .metrics
        .keys()
        .filter_map(|m| m.strip_prefix(prefix)?.strip_prefix('@')?.parse().ok())
        .collect();
    ks.sort_unstable();
    ks
}

/// A file-name-safe id from an instance name.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Draws the figures of one step kind.
type Builder = fn(&FinishedRecords) -> Result<Vec<Figure>>;

/// Every figure the finished instances support, plus a message for each that could not be drawn.
pub fn build(f: &FinishedRecords) -> (Vec<Figure>, Vec<String>) {
    let builders: [(&str, Builder); 8] = [
        ("score_topk", score_topk::figures),
        ("pareto", pareto::figures),
        ("validate", validate::figures),
        ("align", align::figures),
        ("recovery", recovery::figures),
        ("name", name::figures),
        ("linear_probe", probe::figures),
        ("bias", bias::figures),
    ];
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    for (what, build) in builders {
        match build(f) {
            Ok(mut v) => figures.append(&mut v),
            Err(e) => problems.push(format!("{what} figures could not be drawn: {e:#}")),
        }
    }
    (figures, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("sae[arch=topk,k=8]"), "sae_arch_topk_k_8");
        assert_eq!(slug("a..b"), "a..b");
    }
}
