//! The latent explorer: for every finished `top_examples` instance, a page of latent cards
//! (`explorer/<instance>/index.html` beside the report page) with each latent's name and cosine
//! (from a `name` step of the same SAE), its valid-concept mark (from a `concepts` step of the
//! same SAE), firing frequency, Matryoshka level, activation histogram and top examples as
//! thumbnails or texts; searchable by name or index, sortable by index, frequency, name cosine
//! and name.
//!
//! The page holds no latent data, so its size does not depend on the SAE's: the latent list and
//! the cards' contents are sidecar scripts (`latents.js`, `chunk-NNNN.js`) the page loads as it needs them, and
//! only the cards near the viewport are drawn. Thumbnails come from a `thumbnails` output of the
//! instance that produced the ranked matrix (an `embed` step writes one for images); texts from
//! the examples themselves (`top_examples` given `texts`) or from that instance's `texts`.
//!
//! Every finished `concept_search` instance gets a page in the same folder
//! (`explorer/<instance>/index.html`, see [`search`]): per query and edit, a row of neighbours
//! per strength.
//!
//! An explorer is rewritten only when what it is made from changed (its sources' record keys
//! and this code), so rewriting the report during a run stays cheap.

mod chunks;
mod load;
mod page;
pub mod search;
mod search_chunks;
mod sources;
mod thumbs;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::figures::{slug, FinishedRecords};
use super::html::esc;
use chunks::RowData;
use sources::Sources;
use thumbs::Thumbnails;

use page::{SCRIPT, STYLE};

/// An explorer page the report links to.
pub struct Link {
    /// The `top_examples` instance it shows.
    pub instance: String,
    /// Its path relative to the report folder.
    pub href: String,
    pub latents: u64,
    /// The SAE, as `instance.output`.
    pub sae: String,
    pub names: bool,
    pub thumbnails: bool,
}

/// The explorers and concept-search pages written, and a message for each that could not be.
pub struct Explorers {
    pub links: Vec<Link>,
    pub searches: Vec<search::SearchLink>,
    pub problems: Vec<String>,
}

/// Version of what the explorer writes, part of every fingerprint.
const FORMAT: &str = "explorer 1";

/// Writes an explorer for each finished `top_examples` instance and a concept-search page for
/// each finished `concept_search` instance under `dir/explorer/`, and removes those of
/// instances no longer in the plan or finished.
pub fn write_all(dir: &Path, f: &FinishedRecords) -> Explorers {
    let root = dir.join("explorer");
    let mut out = Explorers {
        links: Vec::new(),
        searches: Vec::new(),
        problems: Vec::new(),
    };
    let mut kept = BTreeSet::new();
    for top in f.of_kind("top_examples") {
        let Some(s) = Sources::find(f, top) else {
            continue;
        };
        let name = slug(&top.0.name);
        kept.insert(name.clone());
        match write_one(&root.join(&name), f, &s) {
            Ok(()) => out.links.push(Link {
                instance: top.0.name.clone(),
                href: format!("explorer/{name}/index.html"),
                latents: top
                    .1
                    .metrics
                    .get("latents")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                sae: s.sae_ref(f),
                names: s.name.is_some(),
                thumbnails: s.data_output("thumbnails").is_some(),
            }),
            Err(e) => out.problems.push(format!(
                "the latent explorer of {} could not be written: {e:#}",
                top.0.name
            )),
        }
    }
    out.searches = search::write_all(&root, f, &mut kept, &mut out.problems);
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            if !kept.contains(&e.file_name().to_string_lossy().to_string()) {
                std::fs::remove_dir_all(e.path()).ok();
            }
        }
    }
    out
}

/// Writes through a temporary name, so a page never loads half a file.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_one(folder: &Path, f: &FinishedRecords, s: &Sources) -> Result<()> {
    let fingerprint = s.fingerprint(&format!("{FORMAT}\n{SCRIPT}\n{STYLE}"));
    let index = folder.join("index.html");
    // The page is written last, so a page with this fingerprint means every file is there.
    if std::fs::read_to_string(&index).is_ok_and(|h| h.contains(&page::marker(&fingerprint))) {
        return Ok(());
    }
    let path_of = |a: &crate::store::ArtifactRecord| f.objects.path(&a.hash);
    let (top_inst, top_rec) = s.top;
    let latents_out = top_rec
        .outputs
        .get("latents")
        .context("its record has no `latents` output")?;
    let doc = load::top_doc(&path_of(latents_out), &top_inst.name)?;
    let names = match s.name {
        Some((i, r)) => {
            let a = r
                .outputs
                .get("names")
                .context("the name step's record has no `names`")?;
            Some(load::names(&path_of(a), &i.name, doc.n_latents)?)
        }
        None => None,
    };
    let concepts = match s.concepts {
        Some((i, r)) => {
            let a = r
                .outputs
                .get("concepts")
                .context("the concepts step's record has no `concepts`")?;
            Some(load::concepts(&path_of(a), &i.name, doc.n_latents)?)
        }
        None => None,
    };
    let shown: BTreeSet<u64> = doc.latents.iter().flat_map(chunks::shown_rows).collect();
    let producer = &s.producer.name;
    let lines = |output: &str| -> Result<_> {
        match s.data_output(output) {
            Some(a) => load::lines_of_rows(
                &path_of(a),
                &format!("the `{output}` output of {producer}"),
                &shown,
            ),
            None => Ok(Default::default()),
        }
    };
    let texts = if s.texts_in_examples() {
        Default::default()
    } else {
        lines("texts")?
    };
    let items = lines("items")?;
    let thumbnails = match s.data_output("thumbnails") {
        Some(a) => Some(
            Thumbnails::index(&path_of(a), &shown)
                .with_context(|| format!("the `thumbnails` output of {producer}"))?,
        ),
        None => None,
    };
    let data = RowData {
        texts,
        items,
        thumbnails: thumbnails.as_ref(),
    };
    let (scripts, starts) = chunks::build(&doc, &data)?;

    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let mut written = BTreeSet::from(["index.html".to_string(), "latents.js".to_string()]);
    for (i, script) in scripts.iter().enumerate() {
        let name = chunks::chunk_file(i);
        write_file(&folder.join(&name), script)?;
        written.insert(name);
    }
    write_file(
        &folder.join("latents.js"),
        &chunks::latents_script(&doc, names.as_deref(), concepts.as_ref(), &starts),
    )?;
    for e in std::fs::read_dir(folder)?.flatten() {
        if !written.contains(&e.file_name().to_string_lossy().to_string()) {
            std::fs::remove_file(e.path()).ok();
        }
    }
    let examples_from = examples_from(f, s, thumbnails.as_ref(), &data, &shown);
    let info = page::PageInfo {
        experiment: top_rec.experiment.clone(),
        instance: top_inst.name.clone(),
        latents: doc.n_latents,
        per_latent: doc.per_latent,
        rows: doc.rows,
        code: doc.code.clone(),
        sae: s.sae_ref(f),
        data: format!("{producer}.{}", s.data_output),
        names_from: s.name.map(|(i, _)| i.name.clone()),
        concepts_from: s.concepts.map(|(i, _)| i.name.clone()),
        examples_from,
        thumbs: thumbnails.is_some(),
        levels: doc.levels.clone(),
        histogram: doc.histogram,
        fingerprint,
    };
    write_file(&index, &page::render(&info))?;
    Ok(())
}

/// Where the cards' examples come from, as the end of the header's first sentence: thumbnails
/// (with how many shown rows have none), texts, item references or bare row numbers.
fn examples_from(
    f: &FinishedRecords,
    s: &Sources,
    thumbnails: Option<&Thumbnails>,
    data: &RowData,
    shown: &BTreeSet<u64>,
) -> String {
    let producer = &s.producer.name;
    if let Some(t) = thumbnails {
        let mut part = format!(
            ", as thumbnails from <code>{}.thumbnails</code>",
            esc(producer)
        );
        let missing = shown.iter().filter(|r| !t.has(**r)).count();
        if missing > 0 {
            let _ = write!(part, " ({missing} of {} shown rows have none", shown.len());
            if t.too_large > 0 {
                let _ = write!(
                    part,
                    ", {} of them over {} KiB",
                    t.too_large,
                    thumbs::MAX_BYTES >> 10
                );
            }
            part.push(')');
        }
        return part;
    }
    if let Some(t) = s.top.0.inputs.get("texts") {
        let from = format!("{}.{}", f.plan.instances[t.instance].name, t.output);
        return format!(", as texts from <code>{}</code>", esc(&from));
    }
    if !data.texts.is_empty() {
        return format!(", as texts from <code>{}.texts</code>", esc(producer));
    }
    if !data.items.is_empty() {
        return format!(
            ", as the item references of <code>{}.items</code>",
            esc(producer)
        );
    }
    ", as row numbers (the matrix has no texts, items or thumbnails)".to_string()
}
