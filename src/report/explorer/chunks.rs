//! The explorer's sidecar files: `latents.js`, the list every search and sort runs over (per
//! latent: firing count, level, name, cosine, concept mark), and `chunk-NNNN.js` files with what
//! a card draws (mean, max, histogram, top examples with their texts, item references and
//! thumbnails), for consecutive latents. Each file is a script that hands its data to the page
//! (`msaeExplorer.latents(…)`, `msaeExplorer.chunk(…)`): a page opened from the file system may
//! load scripts but not fetch files.
//!
//! A chunk holds at most [`CHUNK_LATENTS`] latents and [`CHUNK_BYTES`] bytes: it is closed before
//! a latent would take it over, and one latent alone stays far below the bound (at most
//! [`SHOWN`] examples, thumbnails of at most 16 KiB, texts of at most [`TEXT_CHARS`]
//! characters).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::load::{LatentDoc, Name, TopDoc};
use super::thumbs::Thumbnails;

/// Top examples shown on a card (and written to the chunks).
pub const SHOWN: usize = 8;
/// The most bytes of one chunk file.
pub const CHUNK_BYTES: usize = 512 << 10;
/// The most latents of one chunk file.
pub const CHUNK_LATENTS: usize = 256;
/// Texts and item references are cut to this many characters.
pub const TEXT_CHARS: usize = 160;
/// Names in the latent list are cut to this many characters.
pub const NAME_CHARS: usize = 64;
/// Bytes of a chunk besides its entries: the call around the data and the field names.
const CHUNK_OVERHEAD: usize = 128;

/// What the chunks show besides the `top_examples` document: per row, its text, its item
/// reference and its thumbnail.
pub struct RowData<'a> {
    pub texts: BTreeMap<u64, String>,
    pub items: BTreeMap<u64, String>,
    pub thumbnails: Option<&'a Thumbnails>,
}

/// The name of chunk `i`.
pub fn chunk_file(i: usize) -> String {
    format!("chunk-{i:04}.js")
}

/// `v` rounded to four significant digits (what a card shows; shorter files).
pub fn round4(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return 0.0;
    }
    // Scaling by an exact power of ten on each side keeps the rounded value the nearest float.
    let digits = 3 - v.abs().log10().floor() as i32;
    if digits >= 0 {
        let scale = 10f64.powi(digits);
        (v * scale).round() / scale
    } else {
        let scale = 10f64.powi(-digits);
        (v / scale).round() * scale
    }
}

/// Text cut to `n` characters (an ellipsis marks the cut), control characters made spaces.
pub fn clip(s: &str, n: usize) -> String {
    let mut out: String = s
        .chars()
        .take(n)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(n).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// The rows a card shows for a latent.
pub fn shown_rows(l: &LatentDoc) -> impl Iterator<Item = u64> + '_ {
    l.top.iter().take(SHOWN).map(|e| e.row)
}

/// One latent's entry in a chunk: `l` latent, `m` mean when firing, `x` max, `h0` the first
/// non-empty histogram bin and `h` the counts from there to the last non-empty one, `t` the
/// shown examples as [row, activation].
fn latent_entry(l: &LatentDoc) -> String {
    let first = l.histogram.iter().position(|&c| c > 0).unwrap_or(0);
    let last = l
        .histogram
        .iter()
        .rposition(|&c| c > 0)
        .map_or(0, |i| i + 1);
    let top: Vec<_> = l
        .top
        .iter()
        .take(SHOWN)
        .map(|e| json!([e.row, round4(e.value as f64)]))
        .collect();
    json!({
        "l": l.latent,
        "m": round4(l.mean_when_firing),
        "x": round4(l.max as f64),
        "h0": first,
        "h": &l.histogram[first..last.max(first)],
        "t": top,
    })
    .to_string()
}

/// A `"row":"value"` member.
fn member(row: u64, value: &str) -> String {
    format!("\"{row}\":{}", serde_json::Value::from(value))
}

/// One chunk being filled.
#[derive(Default)]
struct Chunk {
    latents: Vec<String>,
    rows: BTreeSet<u64>,
    texts: Vec<String>,
    items: Vec<String>,
    thumbs: Vec<String>,
    bytes: usize,
}

impl Chunk {
    fn script(&self, id: usize) -> String {
        let mut s = String::with_capacity(self.bytes + CHUNK_OVERHEAD);
        let _ = writeln!(
            s,
            "msaeExplorer.chunk({id},{{\"latents\":[{}],\"texts\":{{{}}},\"items\":{{{}}},\"thumbs\":{{{}}}}});",
            self.latents.join(","),
            self.texts.join(","),
            self.items.join(","),
            self.thumbs.join(",")
        );
        s
    }
}

/// One latent's members of a chunk: its entry and, per row not yet in the chunk, the row's
/// text, item and thumbnail members.
struct Piece {
    entry: String,
    rows: BTreeMap<u64, [Option<String>; 3]>,
}

impl Piece {
    /// Bytes it adds to a chunk that already holds `rows`.
    fn cost(&self, rows: &BTreeSet<u64>) -> usize {
        self.entry.len()
            + 1
            + self
                .rows
                .iter()
                .filter(|(r, _)| !rows.contains(r))
                .flat_map(|(_, m)| m.iter().flatten())
                .map(|m| m.len() + 1)
                .sum::<usize>()
    }
}

/// Builds every chunk's script; returns them with the first latent of each.
pub fn build(doc: &TopDoc, data: &RowData) -> Result<(Vec<String>, Vec<usize>)> {
    let mut scripts = Vec::new();
    let mut starts = Vec::new();
    let mut chunk = Chunk::default();
    for l in &doc.latents {
        let rows: BTreeSet<u64> = shown_rows(l).collect();
        let uris = match data.thumbnails {
            Some(t) => t.data_uris(&rows)?,
            None => BTreeMap::new(),
        };
        let piece = Piece {
            entry: latent_entry(l),
            rows: l
                .top
                .iter()
                .take(SHOWN)
                .map(|e| {
                    let text = e
                        .text
                        .as_deref()
                        .or(data.texts.get(&e.row).map(String::as_str))
                        .map(|t| member(e.row, &clip(t, TEXT_CHARS)));
                    let item = data
                        .items
                        .get(&e.row)
                        .map(|t| member(e.row, &clip(t, TEXT_CHARS)));
                    let thumb = uris.get(&e.row).map(|u| member(e.row, u));
                    (e.row, [text, item, thumb])
                })
                .collect(),
        };
        let cost = piece.cost(&chunk.rows);
        if !chunk.latents.is_empty()
            && (chunk.latents.len() == CHUNK_LATENTS
                || chunk.bytes + cost + CHUNK_OVERHEAD > CHUNK_BYTES)
        {
            scripts.push(chunk.script(scripts.len()));
            chunk = Chunk::default();
        }
        if chunk.latents.is_empty() {
            starts.push(l.latent);
        }
        chunk.bytes += piece.cost(&chunk.rows);
        chunk.latents.push(piece.entry);
        for (row, [text, item, thumb]) in piece.rows {
            if chunk.rows.insert(row) {
                chunk.texts.extend(text);
                chunk.items.extend(item);
                chunk.thumbs.extend(thumb);
            }
        }
    }
    if !chunk.latents.is_empty() {
        scripts.push(chunk.script(scripts.len()));
    }
    Ok((scripts, starts))
}

/// The latent list: `n`, `rows`, and per latent `count` (rows it fires on), `level` (index of
/// the first Matryoshka level that keeps it), `name` and `cos` (from `name`), `concept` (1 for
/// a valid concept), plus `chunks`, the first latent of each chunk file.
pub fn latents_script(
    doc: &TopDoc,
    names: Option<&[Name]>,
    concepts: Option<&BTreeSet<usize>>,
    starts: &[usize],
) -> String {
    let rows = doc.rows as f64;
    let count: Vec<u64> = doc
        .latents
        .iter()
        .map(|l| (l.frequency * rows).round() as u64)
        .collect();
    let level: Option<Vec<Option<usize>>> = doc
        .levels
        .as_ref()
        .map(|_| doc.latents.iter().map(|l| l.level).collect());
    let name: Option<Vec<String>> =
        names.map(|n| n.iter().map(|n| clip(&n.word, NAME_CHARS)).collect());
    let cos: Option<Vec<f64>> = names.map(|n| {
        n.iter()
            .map(|n| (n.cosine as f64 * 1000.0).round() / 1000.0)
            .collect()
    });
    let concept: Option<Vec<u8>> =
        concepts.map(|c| (0..doc.n_latents).map(|j| c.contains(&j) as u8).collect());
    let data = json!({
        "n": doc.n_latents,
        "rows": doc.rows,
        "count": count,
        "level": level,
        "name": name,
        "cos": cos,
        "concept": concept,
        "chunks": starts,
    });
    format!("msaeExplorer.latents({data});\n")
}

#[cfg(test)]
mod tests {
    use super::super::load::{Example, HistogramAxis};
    use super::*;

    fn latent(j: usize, rows: &[u64], text: Option<&str>) -> LatentDoc {
        let mut histogram = vec![0; 32];
        histogram[20] = 3;
        histogram[22] = 1;
        LatentDoc {
            latent: j,
            frequency: rows.len() as f64 / 100.0,
            mean_when_firing: 0.123456,
            max: 1.5,
            level: None,
            histogram,
            top: rows
                .iter()
                .map(|&row| Example {
                    row,
                    value: 1.0 / (row + 1) as f32,
                    text: text.map(str::to_string),
                })
                .collect(),
        }
    }

    fn doc(latents: Vec<LatentDoc>) -> TopDoc {
        TopDoc {
            rows: 100,
            n_latents: latents.len(),
            per_latent: 16,
            code: "sparse".into(),
            levels: None,
            histogram: HistogramAxis {
                bins: 32,
                log2_min: -12,
                log2_step: 0.5,
            },
            latents,
        }
    }

    fn parse(script: &str) -> serde_json::Value {
        let open = script.find(',').unwrap() + 1;
        let close = script.rfind(");").unwrap();
        serde_json::from_str(&script[open..close]).unwrap()
    }

    #[test]
    fn chunks_hold_at_most_their_latent_count_and_share_rows() {
        let latents: Vec<_> = (0..600)
            .map(|j| latent(j, &[j as u64 % 7, 50], Some("a \"quoted\"\ttext")))
            .collect();
        let data = RowData {
            texts: BTreeMap::new(),
            items: BTreeMap::new(),
            thumbnails: None,
        };
        let (scripts, starts) = build(&doc(latents), &data).unwrap();
        assert_eq!(starts, vec![0, 256, 512]);
        let first = parse(&scripts[0]);
        assert_eq!(first["latents"].as_array().unwrap().len(), 256);
        // Row 50 is shown by every latent but written once per chunk; the tab became a space.
        assert_eq!(first["texts"].as_object().unwrap().len(), 8);
        assert_eq!(first["texts"]["50"], "a \"quoted\" text");
        let l = &first["latents"][3];
        assert_eq!(l["h0"], 20);
        assert_eq!(l["h"], json!([3, 0, 1]));
        assert_eq!(l["m"], 0.1235);
        assert_eq!(l["t"], json!([[3, 0.25], [50, 0.01961]]));
        assert!(scripts[0].starts_with("msaeExplorer.chunk(0,"));
        assert!(scripts[2].starts_with("msaeExplorer.chunk(2,"));
    }

    #[test]
    fn a_chunk_closes_before_its_byte_bound() {
        // Texts of 160 characters of 4 UTF-8 bytes each: about 5 KiB a latent.
        let long: String = "𝄞".repeat(400);
        let latents: Vec<_> = (0..300)
            .map(|j| {
                latent(
                    j,
                    &(0..8).map(|i| (j * 8 + i) as u64).collect::<Vec<_>>(),
                    None,
                )
            })
            .collect();
        let texts: BTreeMap<u64, String> = (0..2400).map(|r| (r, long.clone())).collect();
        let items = texts.clone();
        let data = RowData {
            texts,
            items,
            thumbnails: None,
        };
        let (scripts, starts) = build(&doc(latents), &data).unwrap();
        assert!(starts.len() > 2, "{starts:?}");
        for s in &scripts {
            assert!(s.len() <= CHUNK_BYTES, "{}", s.len());
        }
        assert!(scripts[0].len() > CHUNK_BYTES * 9 / 10);
        let texts = parse(&scripts[0])["texts"].as_object().unwrap().clone();
        assert_eq!(texts["0"].as_str().unwrap().chars().count(), TEXT_CHARS);
        assert!(texts["0"].as_str().unwrap().ends_with('…'));
    }

    #[test]
    fn the_latent_list_counts_firing_rows() {
        let d = doc(vec![latent(0, &[1, 2], None), latent(1, &[], None)]);
        let names = vec![
            Name {
                word: "dog".into(),
                cosine: 0.41234,
            },
            Name {
                word: "x".repeat(100),
                cosine: -0.1,
            },
        ];
        let s = latents_script(&d, Some(&names), Some(&[1].into()), &[0]);
        let v = parse(&format!("x(0,{}", &s["msaeExplorer.latents(".len()..]));
        assert_eq!(v["count"], json!([2, 0]));
        assert_eq!(v["cos"], json!([0.412, -0.1]));
        assert_eq!(v["concept"], json!([0, 1]));
        assert_eq!(v["name"][1].as_str().unwrap().chars().count(), NAME_CHARS);
        assert!(v["level"].is_null());
    }

    #[test]
    fn rounding_keeps_four_significant_digits() {
        assert_eq!(round4(0.000123456), 0.0001235);
        assert_eq!(round4(12345.6), 12350.0);
        assert_eq!(round4(-2.0), -2.0);
        assert_eq!(round4(0.0), 0.0);
    }
}
