//! Reading the outputs an explorer shows: the `top_examples` document, a `name` step's names, a
//! `concepts` step's valid latents and one-line-per-row text files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// The `latents` output of `top_examples`.
#[derive(Deserialize)]
pub struct TopDoc {
    pub rows: u64,
    pub n_latents: usize,
    pub per_latent: usize,
    pub code: String,
    /// Matryoshka prefix sizes, when the model has them.
    pub levels: Option<Vec<usize>>,
    pub histogram: HistogramAxis,
    pub latents: Vec<LatentDoc>,
}

/// Bin b of a latent's histogram holds activations in
/// [2^(log2_min + b·log2_step), 2^(log2_min + (b+1)·log2_step)).
#[derive(Deserialize, serde::Serialize, Clone, Copy)]
pub struct HistogramAxis {
    pub bins: usize,
    pub log2_min: i32,
    pub log2_step: f64,
}

#[derive(Deserialize)]
pub struct LatentDoc {
    pub latent: usize,
    pub frequency: f64,
    pub mean_when_firing: f64,
    pub max: f32,
    pub level: Option<usize>,
    pub histogram: Vec<u64>,
    pub top: Vec<Example>,
}

#[derive(Deserialize)]
pub struct Example {
    pub row: u64,
    pub value: f32,
    pub text: Option<String>,
}

fn open(path: &Path, what: &str) -> Result<BufReader<std::fs::File>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {what} ({})", path.display()))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}

/// Reads and checks a `top_examples` document.
pub fn top_doc(path: &Path, instance: &str) -> Result<TopDoc> {
    let doc: TopDoc =
        serde_json::from_reader(open(path, "the `latents` output")?).with_context(|| {
            format!("the `latents` output of {instance} is not a top_examples document")
        })?;
    if doc.latents.len() != doc.n_latents
        || doc.latents.iter().enumerate().any(|(j, l)| l.latent != j)
    {
        bail!(
            "the `latents` output of {instance} does not list its {} latents in order",
            doc.n_latents
        );
    }
    if doc
        .latents
        .iter()
        .any(|l| l.histogram.len() != doc.histogram.bins)
    {
        bail!(
            "a latent of {instance} has a histogram of other than {} bins",
            doc.histogram.bins
        );
    }
    Ok(doc)
}

/// A latent's name: its best vocabulary word and that word's cosine.
pub struct Name {
    pub word: String,
    pub cosine: f32,
}

/// Reads a `name` step's `names` list, which must cover `n` latents.
pub fn names(path: &Path, instance: &str, n: usize) -> Result<Vec<Name>> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_reader(open(path, "the `names` output")?)
            .with_context(|| format!("the `names` output of {instance} is not a list"))?;
    if rows.len() != n {
        bail!(
            "the `names` output of {instance} names {} latents, the SAE has {n}",
            rows.len()
        );
    }
    rows.iter()
        .map(|r| {
            Some(Name {
                word: r.get("word")?.as_str()?.to_string(),
                cosine: r.get("score")?.as_f64()? as f32,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("the `names` output of {instance} lacks a word or score"))
}

/// The latents a `concepts` step found valid.
pub fn concepts(path: &Path, instance: &str, n: usize) -> Result<BTreeSet<usize>> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_reader(open(path, "the `concepts` output")?)
            .with_context(|| format!("the `concepts` output of {instance} is not a list"))?;
    rows.iter()
        .map(|r| {
            r.get("latent")
                .and_then(serde_json::Value::as_u64)
                .map(|l| l as usize)
                .filter(|&l| l < n)
                .ok_or_else(|| {
                    anyhow!("the `concepts` output of {instance} lists a latent outside 0..{n}")
                })
        })
        .collect()
}

/// The lines of `wanted` rows (0-based) of a one-line-per-row file, read in one pass; a wanted
/// row past the end is an error naming the file's role.
pub fn lines_of_rows(
    path: &Path,
    what: &str,
    wanted: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    let Some(&last) = wanted.last() else {
        return Ok(out);
    };
    let mut reader = open(path, what)?;
    let mut line = String::new();
    for row in 0..=last {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("{what} has {row} lines, but row {last} is a top example");
        }
        if wanted.contains(&row) {
            out.insert(row, line.trim_end_matches(['\n', '\r']).to_string());
        }
    }
    Ok(out)
}
