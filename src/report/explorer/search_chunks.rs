//! The sidecar files of a concept-search page: `search.js`, the list of queries and, per edit
//! and strength, the metrics the step reports; and `chunk-NNNN.js` files with, for consecutive
//! queries, every edit's and strength's neighbours (row, cosine, the edited latent's
//! activation) and the neighbours' thumbnails, texts and labels. Like the latent explorer's,
//! each file is a script handing its data to the page (`msaeSearch.index(…)`,
//! `msaeSearch.chunk(…)`).
//!
//! A chunk holds at most [`CHUNK_QUERIES`] queries and [`CHUNK_BYTES`] bytes. One query brings
//! `edits × strengths × SHOWN` neighbours, so unlike a latent card it can exceed the bound
//! alone: its thumbnails that do not fit are left out and counted (the page's header says how
//! many), its texts and numbers always stay.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::chunks::{clip, round4, CHUNK_BYTES, TEXT_CHARS};
use super::search::{ResultsDoc, RowText};
use super::thumbs::Thumbnails;

/// Neighbours shown per strength (and written to the chunks).
pub const SHOWN: usize = 10;
/// The most queries of one chunk file.
pub const CHUNK_QUERIES: usize = 64;
/// Bytes of a chunk besides its members: the call around the data and the field names.
const CHUNK_OVERHEAD: usize = 160;

fn num(v: Option<f64>) -> serde_json::Value {
    match v.filter(|v| v.is_finite()) {
        Some(v) => json!(round4(v)),
        None => serde_json::Value::Null,
    }
}

/// A `"row":"value"` member.
fn member(row: u64, value: &str) -> String {
    format!("\"{row}\":{}", serde_json::Value::from(value))
}

/// The gallery rows a query's results show, in order of first appearance.
pub fn shown_rows(doc: &ResultsDoc, q: usize) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in &doc.edits {
        for r in &e.results {
            for nb in r.queries[q].neighbours.iter().take(SHOWN) {
                if seen.insert(nb.row) {
                    out.push(nb.row);
                }
            }
        }
    }
    out
}

/// One query's entry: `q` its position, `row` its row of the queries matrix, `e` per edit and
/// per result `[kept, before, after, [[row, cosine, activation], …]]`.
fn entry(doc: &ResultsDoc, q: usize) -> String {
    let edits: Vec<serde_json::Value> = doc
        .edits
        .iter()
        .map(|e| {
            let results: Vec<serde_json::Value> = e
                .results
                .iter()
                .map(|r| {
                    let qd = &r.queries[q];
                    let nbs: Vec<serde_json::Value> = qd
                        .neighbours
                        .iter()
                        .take(SHOWN)
                        .map(|nb| json!([nb.row, num(nb.cosine), num(nb.activation)]))
                        .collect();
                    json!([num(qd.kept), num(qd.activation), num(qd.edited), nbs])
                })
                .collect();
            json!(results)
        })
        .collect();
    json!({ "q": q, "row": doc.query_rows[q], "e": edits }).to_string()
}

/// What the chunks show besides the results: per gallery row its text and label, the gallery's
/// and the queries' thumbnails, the queries' texts.
pub struct SearchData<'a> {
    pub texts: &'a RowText,
    pub labels: &'a RowText,
    pub thumbs: Option<&'a Thumbnails>,
    pub query_texts: &'a RowText,
    pub query_thumbs: Option<&'a Thumbnails>,
}

/// Members of one table of a chunk (texts, labels, thumbnails …), each row at most once.
#[derive(Default)]
struct Table {
    members: BTreeMap<u64, String>,
}

impl Table {
    fn cost(&self, new: &BTreeMap<u64, String>) -> usize {
        new.iter()
            .filter(|(r, _)| !self.members.contains_key(r))
            .map(|(_, m)| m.len() + 1)
            .sum()
    }

    fn add(&mut self, new: BTreeMap<u64, String>) {
        for (r, m) in new {
            self.members.entry(r).or_insert(m);
        }
    }

    fn join(&self) -> String {
        self.members.values().cloned().collect::<Vec<_>>().join(",")
    }
}

const TABLES: [&str; 5] = ["texts", "labels", "thumbs", "qtexts", "qthumbs"];

#[derive(Default)]
struct Chunk {
    entries: Vec<String>,
    tables: [Table; 5],
    bytes: usize,
}

impl Chunk {
    fn cost(&self, entry: &str, members: &[BTreeMap<u64, String>; 5]) -> usize {
        entry.len()
            + 1
            + self
                .tables
                .iter()
                .zip(members)
                .map(|(t, m)| t.cost(m))
                .sum::<usize>()
    }

    fn script(&self, id: usize) -> String {
        let mut s = String::with_capacity(self.bytes + CHUNK_OVERHEAD);
        let _ = write!(
            s,
            "msaeSearch.chunk({id},{{\"queries\":[{}]",
            self.entries.join(",")
        );
        for (name, t) in TABLES.iter().zip(&self.tables) {
            let _ = write!(s, ",\"{name}\":{{{}}}", t.join());
        }
        s.push_str("});\n");
        s
    }
}

/// Every chunk's script, the first query of each, and how many thumbnails were left out to
/// keep a chunk under its bound.
pub struct Built {
    pub scripts: Vec<String>,
    pub starts: Vec<usize>,
    pub left_out: usize,
}

pub fn build(doc: &ResultsDoc, data: &SearchData) -> Result<Built> {
    let mut out = Built {
        scripts: Vec::new(),
        starts: Vec::new(),
        left_out: 0,
    };
    let mut chunk = Chunk::default();
    for q in 0..doc.query_rows.len() {
        let rows = shown_rows(doc, q);
        let text_of = |r: u64| data.texts.get(&r).map(|t| member(r, &clip(t, TEXT_CHARS)));
        let texts: BTreeMap<u64, String> = rows
            .iter()
            .filter_map(|&r| Some((r, text_of(r)?)))
            .collect();
        let labels: BTreeMap<u64, String> = rows
            .iter()
            .filter_map(|&r| Some((r, member(r, &clip(data.labels.get(&r)?, TEXT_CHARS)))))
            .collect();
        let mut thumbs: BTreeMap<u64, String> = match data.thumbs {
            Some(t) => t
                .data_uris(&rows.iter().copied().collect())?
                .into_iter()
                .map(|(r, u)| (r, member(r, &u)))
                .collect(),
            None => BTreeMap::new(),
        };
        let qrow = doc.query_rows[q];
        let qtexts: BTreeMap<u64, String> = data
            .query_texts
            .get(&qrow)
            .map(|t| (qrow, member(qrow, &clip(t, TEXT_CHARS))))
            .into_iter()
            .collect();
        let qthumbs: BTreeMap<u64, String> = match data.query_thumbs {
            Some(t) => t
                .data_uris(&[qrow].into())?
                .into_iter()
                .map(|(r, u)| (r, member(r, &u)))
                .collect(),
            None => BTreeMap::new(),
        };
        let e = entry(doc, q);
        // A query alone over the bound: leave out its last thumbnails until it fits.
        let fixed = e.len()
            + 1
            + [&texts, &labels, &qtexts, &qthumbs]
                .iter()
                .flat_map(|m| m.values())
                .map(|m| m.len() + 1)
                .sum::<usize>();
        let mut thumb_bytes: usize = thumbs.values().map(|m| m.len() + 1).sum();
        while fixed + thumb_bytes + CHUNK_OVERHEAD > CHUNK_BYTES {
            let Some(&last) = rows.iter().rev().find(|r| thumbs.contains_key(r)) else {
                break;
            };
            thumb_bytes -= thumbs.remove(&last).map_or(0, |m| m.len() + 1);
            out.left_out += 1;
        }
        let members = [texts, labels, thumbs, qtexts, qthumbs];
        let cost = chunk.cost(&e, &members);
        if !chunk.entries.is_empty()
            && (chunk.entries.len() == CHUNK_QUERIES
                || chunk.bytes + cost + CHUNK_OVERHEAD > CHUNK_BYTES)
        {
            out.scripts.push(chunk.script(out.scripts.len()));
            chunk = Chunk::default();
        }
        if chunk.entries.is_empty() {
            out.starts.push(q);
        }
        chunk.bytes += chunk.cost(&e, &members);
        chunk.entries.push(e);
        for (t, m) in chunk.tables.iter_mut().zip(members) {
            t.add(m);
        }
    }
    if !chunk.entries.is_empty() {
        out.scripts.push(chunk.script(out.scripts.len()));
    }
    Ok(out)
}

/// The list script: the query rows, the chunks' first queries, and per edit its text, op,
/// latent, concept and per result the strength (`null` for ablate) with the step's metrics
/// over all queries (`act` the latent's mean activation in the neighbours, `cos` the
/// neighbours' mean cosine, `kept` the edited query's mean cosine to the original, `label` and
/// `text` the shares of neighbours matching the concept).
pub fn index_script(doc: &ResultsDoc, starts: &[usize]) -> String {
    let edits: Vec<serde_json::Value> = doc
        .edits
        .iter()
        .map(|e| {
            let results: Vec<serde_json::Value> = e
                .results
                .iter()
                .map(|r| {
                    json!({
                        "s": r.strength,
                        "act": num(r.mean_activation),
                        "cos": num(r.mean_cosine),
                        "kept": num(r.kept),
                        "label": num(r.label_share),
                        "text": num(r.text_share),
                    })
                })
                .collect();
            json!({
                "edit": clip(&e.edit, TEXT_CHARS),
                "op": e.op,
                "latent": e.latent,
                "concept": clip(&e.concept, TEXT_CHARS),
                "results": results,
            })
        })
        .collect();
    let data = json!({
        "queries": doc.query_rows,
        "chunks": starts,
        "k": doc.k,
        "edits": edits,
    });
    format!("msaeSearch.index({data});\n")
}
