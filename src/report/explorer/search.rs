//! Concept-search pages: for every finished `concept_search` instance,
//! `explorer/<instance>/index.html` beside the report page shows, per query and edit, one row
//! of neighbours per strength, labelled with the strength and the metrics the step reports for
//! it (the edited latent's mean activation in the neighbours, the shares of neighbours whose
//! label or text matches the concept, the edited query's cosine to the original). Neighbours
//! are thumbnails from the gallery producer's `thumbnails` output when it wrote one, else their
//! texts (the step's `gallery_texts`, else the producer's `texts`); the query's own thumbnail or
//! text heads its block.
//!
//! As in the latent explorer, the page holds no results: the query list and the metrics are in
//! `search.js`, the neighbours in `chunk-NNNN.js` files loaded as their queries come near the
//! viewport, so the page's size does not depend on the number of queries. A page is rewritten
//! only when its sources' records or this code changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::load::lines_of_rows;
use super::page::{inline_json, marker, thousands};
use super::search_chunks::{self as chunks, SearchData, SHOWN};
use super::sources::Finished;
use super::thumbs::{Thumbnails, MAX_BYTES};
use super::write_file;
use crate::experiment::Instance;
use crate::report::figures::{slug, FinishedRecords};
use crate::report::html::esc;
use crate::store::ArtifactRecord;

pub const SCRIPT: &str = include_str!("search.js");
pub const STYLE: &str = include_str!("search.css");

/// Version of what a search page writes, part of its fingerprint.
const FORMAT: &str = "concept search 1";

/// Texts or labels by row.
pub type RowText = BTreeMap<u64, String>;

/// The `results` output of `concept_search`.
#[derive(Deserialize)]
pub struct ResultsDoc {
    pub query_rows: Vec<u64>,
    pub gallery_rows: u64,
    pub k: usize,
    pub residual: bool,
    pub strength_unit: String,
    #[serde(default)]
    pub self_excluded: bool,
    pub edits: Vec<EditDoc>,
}

#[derive(Deserialize)]
pub struct EditDoc {
    pub edit: String,
    pub op: String,
    pub latent: usize,
    pub concept: String,
    pub results: Vec<ResultDoc>,
}

/// Numbers the step could not compute (NaN) are `null` in its JSON.
#[derive(Deserialize)]
pub struct ResultDoc {
    pub strength: Option<f64>,
    pub mean_activation: Option<f64>,
    pub mean_cosine: Option<f64>,
    pub kept: Option<f64>,
    pub label_share: Option<f64>,
    pub text_share: Option<f64>,
    pub queries: Vec<QueryDoc>,
}

#[derive(Deserialize)]
pub struct QueryDoc {
    pub row: u64,
    pub activation: Option<f64>,
    pub edited: Option<f64>,
    pub kept: Option<f64>,
    pub neighbours: Vec<Neighbour>,
}

#[derive(Deserialize)]
pub struct Neighbour {
    pub row: u64,
    pub cosine: Option<f64>,
    pub activation: Option<f64>,
    pub label: Option<String>,
    pub text: Option<String>,
}

/// A concept-search page the report links to.
pub struct SearchLink {
    pub instance: String,
    pub href: String,
    pub queries: usize,
    pub edits: usize,
    /// `instance.output` of the gallery.
    pub gallery: String,
    pub thumbnails: bool,
}

/// A finished `concept_search` instance and the records of the instances that produced its
/// gallery and queries (when finished).
struct Sources<'a> {
    search: Finished<'a>,
    gallery: Option<Finished<'a>>,
    queries: Option<Finished<'a>>,
}

impl<'a> Sources<'a> {
    fn find(f: &FinishedRecords<'a>, search: Finished<'a>) -> Sources<'a> {
        let upstream = |param: &str| {
            let input = search.0.inputs.get(param)?;
            f.records[input.instance]
                .as_ref()
                .map(|r| (&f.plan.instances[input.instance], r))
        };
        Sources {
            search,
            gallery: upstream("gallery"),
            queries: upstream("queries"),
        }
    }

    fn output(part: Option<Finished<'a>>, name: &str) -> Option<&'a ArtifactRecord> {
        part.and_then(|(_, r)| r.outputs.get(name))
    }

    fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(format!("{FORMAT}\n{SCRIPT}\n{STYLE}").as_bytes());
        for part in [Some(self.search), self.gallery, self.queries] {
            h.update(b"\0");
            if let Some((_, r)) = part {
                h.update(r.key.as_bytes());
                for (name, a) in &r.outputs {
                    h.update(format!("\0{name}\0{}", a.hash).as_bytes());
                }
            }
        }
        h.finalize().to_hex()[..32].to_string()
    }
}

/// `instance.output` of an input of `inst`.
fn input_ref(f: &FinishedRecords, inst: &Instance, param: &str) -> String {
    inst.inputs
        .get(param)
        .map(|i| format!("{}.{}", f.plan.instances[i.instance].name, i.output))
        .unwrap_or_default()
}

/// Writes a page for each finished `concept_search` instance under `root`, recording the
/// folders written in `kept`.
pub fn write_all(
    root: &Path,
    f: &FinishedRecords,
    kept: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Vec<SearchLink> {
    let mut links = Vec::new();
    for search in f.of_kind("concept_search") {
        let s = Sources::find(f, search);
        let name = slug(&search.0.name);
        kept.insert(name.clone());
        match write_one(&root.join(&name), f, &s) {
            Ok((queries, edits)) => links.push(SearchLink {
                instance: search.0.name.clone(),
                href: format!("explorer/{name}/index.html"),
                queries,
                edits,
                gallery: input_ref(f, search.0, "gallery"),
                thumbnails: Sources::output(s.gallery, "thumbnails").is_some(),
            }),
            Err(e) => problems.push(format!(
                "the concept-search page of {} could not be written: {e:#}",
                search.0.name
            )),
        }
    }
    links
}

fn read_doc(path: &Path, instance: &str) -> Result<ResultsDoc> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the `results` output ({})", path.display()))?;
    let doc: ResultsDoc =
        serde_json::from_reader(std::io::BufReader::new(file)).with_context(|| {
            format!("the `results` output of {instance} is not a concept_search document")
        })?;
    for e in &doc.edits {
        for r in &e.results {
            let rows: Vec<u64> = r.queries.iter().map(|q| q.row).collect();
            if rows != doc.query_rows {
                bail!(
                    "the `results` output of {instance}: edit `{}` does not list its results for the {} query rows in order",
                    e.edit,
                    doc.query_rows.len()
                );
            }
        }
    }
    Ok(doc)
}

/// Returns the number of queries and edits shown.
fn write_one(folder: &Path, f: &FinishedRecords, s: &Sources) -> Result<(usize, usize)> {
    let (inst, rec) = s.search;
    let fingerprint = s.fingerprint();
    let index = folder.join("index.html");
    let results = rec
        .outputs
        .get("results")
        .context("its record has no `results` output")?;
    // The step's own counts, so an unchanged page is kept without reading its results.
    let metric = |m: &str| rec.metrics.get(m).and_then(serde_json::Value::as_u64);
    if let (Some(q), Some(e)) = (metric("queries"), metric("edits")) {
        if std::fs::read_to_string(&index).is_ok_and(|h| h.contains(&marker(&fingerprint))) {
            return Ok((q as usize, e as usize));
        }
    }
    let doc = read_doc(&f.objects.path(&results.hash), &inst.name)?;
    let counts = (doc.query_rows.len(), doc.edits.len());
    let path_of = |a: &ArtifactRecord| f.objects.path(&a.hash);

    let mut texts = RowText::new();
    let mut labels = RowText::new();
    let mut wanted = BTreeSet::new();
    for e in &doc.edits {
        for r in &e.results {
            for q in &r.queries {
                for nb in q.neighbours.iter().take(SHOWN) {
                    wanted.insert(nb.row);
                    if let Some(t) = &nb.text {
                        texts.entry(nb.row).or_insert_with(|| t.clone());
                    }
                    if let Some(l) = &nb.label {
                        labels.entry(nb.row).or_insert_with(|| l.clone());
                    }
                }
            }
        }
    }
    let gallery_name = s.gallery.map(|(i, _)| i.name.clone()).unwrap_or_default();
    let queries_name = s.queries.map(|(i, _)| i.name.clone()).unwrap_or_default();
    let thumbs = match Sources::output(s.gallery, "thumbnails") {
        Some(a) => Some(
            Thumbnails::index(&path_of(a), &wanted)
                .with_context(|| format!("the `thumbnails` output of {gallery_name}"))?,
        ),
        None => None,
    };
    let gallery_texts_from = if !texts.is_empty() {
        Some(input_ref(f, inst, "gallery_texts"))
    } else if thumbs.is_none() {
        match Sources::output(s.gallery, "texts") {
            Some(a) => {
                texts = lines_of_rows(
                    &path_of(a),
                    &format!("the `texts` output of {gallery_name}"),
                    &wanted,
                )?;
                Some(format!("{gallery_name}.texts"))
            }
            None => None,
        }
    } else {
        None
    };
    let query_rows: BTreeSet<u64> = doc.query_rows.iter().copied().collect();
    let query_thumbs = match Sources::output(s.queries, "thumbnails") {
        Some(a) => Some(
            Thumbnails::index(&path_of(a), &query_rows)
                .with_context(|| format!("the `thumbnails` output of {queries_name}"))?,
        ),
        None => None,
    };
    let query_texts = match Sources::output(s.queries, "texts") {
        Some(a) => lines_of_rows(
            &path_of(a),
            &format!("the `texts` output of {queries_name}"),
            &query_rows,
        )?,
        None => RowText::new(),
    };
    let built = chunks::build(
        &doc,
        &SearchData {
            texts: &texts,
            labels: &labels,
            thumbs: thumbs.as_ref(),
            query_texts: &query_texts,
            query_thumbs: query_thumbs.as_ref(),
        },
    )?;

    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let mut written = BTreeSet::from(["index.html".to_string(), "search.js".to_string()]);
    for (i, script) in built.scripts.iter().enumerate() {
        let name = super::chunks::chunk_file(i);
        write_file(&folder.join(&name), script)?;
        written.insert(name);
    }
    write_file(
        &folder.join("search.js"),
        &chunks::index_script(&doc, &built.starts),
    )?;
    for e in std::fs::read_dir(folder)?.flatten() {
        if !written.contains(&e.file_name().to_string_lossy().to_string()) {
            std::fs::remove_file(e.path()).ok();
        }
    }

    let neighbours_as = match &thumbs {
        Some(t) => {
            let missing = wanted.iter().filter(|r| !t.has(**r)).count();
            let mut part = format!(
                "as thumbnails from <code>{}.thumbnails</code>",
                esc(&gallery_name)
            );
            if missing > 0 || t.too_large > 0 || built.left_out > 0 {
                let _ = write!(
                    part,
                    " ({missing} of {} shown rows have none, {} over {} KiB; {} left out to keep each chunk under 512 KiB)",
                    wanted.len(),
                    t.too_large,
                    MAX_BYTES >> 10,
                    built.left_out
                );
            }
            part
        }
        None => match &gallery_texts_from {
            Some(from) => format!("as texts from <code>{}</code>", esc(from)),
            None => "as row numbers (the gallery has no thumbnails or texts)".to_string(),
        },
    };
    let mut about = format!(
        "{} quer{} (rows of <code>{}</code>) searched in <code>{}</code> ({} rows{}) with the SAE <code>{}</code> edited in; {} neighbours each, the first {} shown per strength, {}.",
        thousands(doc.query_rows.len() as u64),
        if doc.query_rows.len() == 1 { "y" } else { "ies" },
        esc(&input_ref(f, inst, "queries")),
        esc(&input_ref(f, inst, "gallery")),
        thousands(doc.gallery_rows),
        if doc.self_excluded { ", a query's own row left out" } else { "" },
        esc(&input_ref(f, inst, "sae")),
        doc.k,
        SHOWN.min(doc.k),
        neighbours_as
    );
    let _ = write!(
        about,
        " Strengths in {} units; the reconstruction error is {}. Each row is labelled with the step's metrics over all queries: <i>act</i> the edited latent's mean activation in the neighbours, <i>label</i> / <i>text</i> the shares of neighbours whose label / text matches the concept, <i>kept</i> the edited query's mean cosine to the original.",
        esc(&doc.strength_unit),
        if doc.residual { "kept (x′ = x + dec(z′) − dec(z))" } else { "dropped (x′ = dec(z′))" }
    );
    if !labels.is_empty() {
        let _ = write!(
            about,
            " Labels from <code>{}</code>.",
            esc(&input_ref(f, inst, "gallery_labels"))
        );
    }
    let config = serde_json::json!({
        "thumbs": thumbs.is_some(),
        "queryThumbs": query_thumbs.is_some(),
    });
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">{}<title>Concept search {} · {} · msae</title><style>{STYLE}</style></head><body>",
        marker(&fingerprint),
        esc(&inst.name),
        esc(&rec.experiment)
    );
    let _ = write!(
        h,
        "<header><p><a href=\"../../index.html\">← report of {}</a></p><h1>Concept search: {}</h1><p class=\"muted\">{about}</p>",
        esc(&rec.experiment),
        esc(&inst.name)
    );
    h.push_str("<div class=\"controls\"><label>edit <select id=\"edit\"></select></label><span id=\"status\" class=\"muted\"></span></div></header>");
    h.push_str(
        "<main id=\"list\"></main><noscript>The page draws its results with JavaScript.</noscript>",
    );
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"search-config\">{}</script><script>{SCRIPT}</script><script src=\"search.js\"></script></body></html>",
        inline_json(&config)
    );
    write_file(&index, &h)?;
    Ok(counts)
}
