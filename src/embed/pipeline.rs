//! The embed loop: items from a source → decoded, preprocessed batches → the encoder → parts on
//! disk → the output files.
//!
//! * **Parts.** Positions of the source are cut into parts of `part_size`. A finished part is
//!   written to the step's partial folder (embeddings as raw f32, thumbnails as concatenated
//!   JPEGs, then a JSON file with its rows' item references, texts, labels, groups, thumbnail
//!   sizes and skipped items, renamed into place last, so a part counts only when whole).
//!   An interrupted embed resumes after the last whole part; a source skips the positions before
//!   it without decoding them. Memory is bounded by one part of embeddings and thumbnails plus
//!   two batches; the outputs are joined from the part files, streaming.
//! * **Overlap.** A producer thread reads and decodes the next batch (images in parallel) while
//!   the encoder works on the current one; a channel of two batches keeps it just ahead.
//! * **Splitting.** With a split rule, each item's side (training or held out) is decided by a
//!   hash of its key; items on the other side are counted, not embedded and not reported as
//!   skipped, so two embeds of the same source with opposite sides partition it.
//! * **Skipping.** An item that cannot be read or decoded, or lacks what the towers need, is
//!   recorded with its position and reason, and its row is not written, so matrices, item
//!   references, texts, labels, groups and thumbnails stay aligned. Order is the source's order.
//! * **Thumbnails.** When asked for, each kept image also becomes a small JPEG
//!   ([`super::image::thumbnail`]) made from the pixels decoded for the encoder.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::encoder::Encoder;
use super::image::{decode, thumbnail_jpeg, Preprocess};
use super::source::{reference_line, Entry, Item, Source};
use super::thumbnails::{self, PartThumbnails};
use crate::data::npy::NpyWriter;

/// What to embed and how.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Embed images with the image tower (items without a readable image are skipped).
    pub image: bool,
    /// Embed texts with the text tower (items without a text are skipped).
    pub text: bool,
    /// Prompt templates with `{}` for the text; several are averaged (each embedding
    /// L2-normalised, averaged, renormalised). Empty: texts as they are.
    pub templates: Vec<String>,
    /// L2-normalise every output row.
    pub normalize: bool,
    pub batch_size: usize,
    pub part_size: usize,
    /// Stop after this many positions.
    pub limit: Option<usize>,
    pub preprocess: Option<Preprocess>,
    /// Keep only one side of a deterministic train/held-out split of the items.
    pub split: Option<SplitRule>,
    /// Write a JPEG thumbnail of every row's image (needs the image tower and `preprocess`).
    pub thumbnails: bool,
}

/// A train/held-out split decided per item by a hash of its key, so that an item's side does not
/// depend on the order of the source, on the other items, or on how the embed was cut in parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRule {
    /// Share of the items held out (0 < fraction < 1).
    pub holdout: f64,
    /// Keep the held-out side (else the training side).
    pub keep_holdout: bool,
}

impl SplitRule {
    /// Whether the item with this key is on the kept side: the first 8 bytes of the key's BLAKE3
    /// hash, read as a fraction of 2^64, fall below `holdout` for held-out items.
    pub fn keeps(&self, key: &str) -> bool {
        let h = blake3::hash(key.as_bytes());
        let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        let held_out = (x as f64) < self.holdout * 18_446_744_073_709_551_616.0;
        held_out == self.keep_holdout
    }
}

/// An item that was not embedded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub position: usize,
    pub key: String,
    pub reason: String,
}

/// The part file that makes a part count: everything but the embeddings.
#[derive(Debug, Serialize, Deserialize)]
struct PartMeta {
    positions: usize,
    rows: usize,
    /// Each row's item reference (one line of the `items` output).
    items: Vec<String>,
    texts: Vec<Option<String>>,
    labels: Vec<Option<String>>,
    /// Each row's group value (absent from parts written before groups existed: none).
    #[serde(default)]
    groups: Vec<Option<String>>,
    skipped: Vec<Skipped>,
    /// Items on the other side of the split (not rows, not skipped).
    #[serde(default)]
    excluded: usize,
    /// Byte size of each row's thumbnail in the part's thumbnail file (empty without them).
    #[serde(default)]
    thumbnails: Vec<u32>,
    /// Seconds spent on this part (for the throughput of a resumed run).
    seconds: f64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    part_size: usize,
}

/// Where the results go.
pub struct OutputPaths {
    /// The first tower's matrix (image tower when images are embedded, else the text tower).
    pub matrix: PathBuf,
    /// The text tower's matrix when both towers run.
    pub text_matrix: PathBuf,
    pub texts: PathBuf,
    pub labels: PathBuf,
    pub groups: PathBuf,
    /// One line per row: the item's reference in its source.
    pub items: PathBuf,
    /// The archive of the rows' thumbnails.
    pub thumbnails: PathBuf,
}

/// What an embed produced.
#[derive(Debug, Clone)]
pub struct EmbedOutcome {
    pub positions: usize,
    pub rows: usize,
    pub cols: usize,
    pub skipped: Vec<Skipped>,
    /// Items left out because they are on the other side of the split.
    pub excluded: usize,
    pub wrote_texts: bool,
    pub wrote_labels: bool,
    pub wrote_groups: bool,
    pub wrote_thumbnails: bool,
    /// Parts found finished from an earlier, interrupted run.
    pub resumed_parts: usize,
    /// Seconds of embedding work over all parts (earlier runs included).
    pub seconds: f64,
    /// Seconds of this run.
    pub seconds_this_run: f64,
    pub rows_this_run: usize,
}

/// A batch ready for the encoder.
struct Batch {
    part: usize,
    positions: usize,
    items: Vec<String>,
    texts: Vec<Option<String>>,
    labels: Vec<Option<String>>,
    groups: Vec<Option<String>>,
    pixels: Vec<f32>,
    /// One JPEG per row when thumbnails are asked for.
    thumbnails: Vec<Vec<u8>>,
    skipped: Vec<Skipped>,
    excluded: usize,
    /// The source has no more positions (or the limit is reached) after this batch.
    last: bool,
}

fn part_path(dir: &Path, part: usize, what: &str) -> PathBuf {
    dir.join(format!("part-{part:06}.{what}"))
}

/// The number of whole parts in `dir` from a run with the same part size; anything else there is
/// removed. Also whether the last whole part ended the source.
fn finished_parts(
    dir: &Path,
    part_size: usize,
    towers: usize,
    dims: &[usize],
    thumbnails: bool,
) -> Result<(usize, bool)> {
    fs::create_dir_all(dir)?;
    let manifest_path = dir.join("parts.json");
    let manifest = Manifest { part_size };
    let same = fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .is_some_and(|m| m == manifest);
    if !same {
        for entry in fs::read_dir(dir)? {
            let p = entry?.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
            {
                fs::remove_file(&p).ok();
            }
        }
        fs::write(&manifest_path, serde_json::to_vec(&manifest)?)?;
        return Ok((0, false));
    }
    let mut done = 0;
    let mut ended = false;
    while let Ok(bytes) = fs::read(part_path(dir, done, "json")) {
        let Ok(meta) = serde_json::from_slice::<PartMeta>(&bytes) else {
            break;
        };
        let sizes_ok = (0..towers).all(|t| {
            fs::metadata(part_path(dir, done, &format!("t{t}.f32")))
                .is_ok_and(|m| m.len() == (meta.rows * dims[t] * 4) as u64)
        });
        let thumbnails_ok = !thumbnails
            || (meta.thumbnails.len() == meta.rows
                && thumbnails::part_is_whole(&part_path(dir, done, "thumbs"), &meta.thumbnails));
        if !sizes_ok || meta.items.len() != meta.rows || !thumbnails_ok {
            break;
        }
        done += 1;
        if meta.positions < part_size {
            ended = true;
            break;
        }
    }
    // Whatever follows the whole parts is the debris of the interrupted one.
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(num) = name
            .strip_prefix("part-")
            .and_then(|r| r.get(..6))
            .and_then(|n| n.parse::<usize>().ok())
        {
            if num >= done {
                fs::remove_file(&p).ok();
            }
        }
    }
    Ok((done, ended))
}

/// An image ready for the encoder: its tensor, and its JPEG thumbnail (empty when not asked for).
type Prepared = (Vec<f32>, Vec<u8>);

/// Decodes and preprocesses the images of `items` in parallel into `pixels` (and, with
/// `thumbnails`, a JPEG thumbnail of each from the same decoded pixels); returns, per item,
/// `None` when it is usable or the reason it is not.
fn prepare_images(
    items: &[Item],
    pre: &Preprocess,
    pixels: &mut Vec<f32>,
    thumbnails: Option<&mut Vec<Vec<u8>>>,
) -> Vec<Option<String>> {
    let per = 3 * pre.size as usize * pre.size as usize;
    let with_thumbnails = thumbnails.is_some();
    let results: Vec<Result<Prepared, String>> = items
        .par_iter()
        .map(|item| {
            let bytes = item
                .image
                .as_deref()
                .ok_or_else(|| "no image".to_string())?;
            let img = decode(bytes).map_err(|e| format!("cannot decode the image: {e:#}"))?;
            let rgb = pre.pixels(&img);
            let mut out = vec![0f32; per];
            pre.tensor(&rgb, &mut out);
            let thumbnail = if with_thumbnails {
                thumbnail_jpeg(&img, pre.background)
                    .map_err(|e| format!("cannot make the thumbnail: {e:#}"))?
            } else {
                Vec::new()
            };
            Ok((out, thumbnail))
        })
        .collect();
    let mut thumbnails = thumbnails;
    results
        .into_iter()
        .map(|r| match r {
            Ok((values, thumbnail)) => {
                pixels.extend_from_slice(&values);
                if let Some(t) = thumbnails.as_deref_mut() {
                    t.push(thumbnail);
                }
                None
            }
            Err(reason) => Some(reason),
        })
        .collect()
}

/// Reads the source from `start` and sends batches that never cross a part boundary.
fn produce(
    mut source: Box<dyn Source>,
    settings: Settings,
    start_part: usize,
    tx: std::sync::mpsc::SyncSender<Result<Batch>>,
) {
    let result = (|| -> Result<()> {
        let mut position = start_part * settings.part_size;
        source.skip(position)?;
        let mut part = start_part;
        let mut in_part = 0usize;
        loop {
            let limit_left = settings.limit.map(|l| l.saturating_sub(position));
            let want = settings
                .batch_size
                .min(settings.part_size - in_part)
                .min(limit_left.unwrap_or(usize::MAX));
            let mut items = Vec::with_capacity(want);
            let mut item_positions = Vec::with_capacity(want);
            let mut skipped = Vec::new();
            let mut read = 0;
            let mut excluded = 0;
            let mut exhausted = want == 0;
            let other_side = |key: &str| settings.split.is_some_and(|r| !r.keeps(key));
            while read < want {
                match source.next_entry()? {
                    None => {
                        exhausted = true;
                        break;
                    }
                    Some(Entry::Unreadable { key, .. } | Entry::Item(Item { key, .. }))
                        if other_side(&key) =>
                    {
                        excluded += 1
                    }
                    Some(Entry::Unreadable { key, reason }) => skipped.push(Skipped {
                        position: position + read,
                        key,
                        reason,
                    }),
                    Some(Entry::Item(item)) => {
                        item_positions.push(position + read);
                        items.push(item);
                    }
                }
                read += 1;
            }
            if read == want && limit_left == Some(want) {
                exhausted = true;
            }
            let mut usable: Vec<Option<String>> = items
                .iter()
                .map(|item| {
                    if settings.text && item.text.is_none() {
                        Some("no text".to_string())
                    } else if settings.image && item.image.is_none() {
                        Some("no image".to_string())
                    } else {
                        None
                    }
                })
                .collect();
            let mut pixels = Vec::new();
            let mut thumbnails = Vec::new();
            if let Some(pre) = settings.preprocess.as_ref().filter(|_| settings.image) {
                let ready: Vec<Item> = items
                    .iter()
                    .zip(&usable)
                    .filter(|(_, u)| u.is_none())
                    .map(|(i, _)| i.clone())
                    .collect();
                let reasons = prepare_images(
                    &ready,
                    pre,
                    &mut pixels,
                    settings.thumbnails.then_some(&mut thumbnails),
                );
                let mut it = reasons.into_iter();
                for u in usable.iter_mut().filter(|u| u.is_none()) {
                    *u = it.next().expect("one reason per prepared item");
                }
            }
            let mut references = Vec::new();
            let mut texts = Vec::new();
            let mut labels = Vec::new();
            let mut groups = Vec::new();
            for ((item, pos), why) in items.into_iter().zip(item_positions).zip(usable) {
                match why {
                    Some(reason) => skipped.push(Skipped {
                        position: pos,
                        key: item.key,
                        reason,
                    }),
                    None => {
                        references.push(reference_line(&item.key));
                        texts.push(item.text);
                        labels.push(item.label);
                        groups.push(item.group);
                    }
                }
            }
            skipped.sort_by_key(|s| s.position);
            in_part += read;
            position += read;
            let batch = Batch {
                part,
                positions: read,
                items: references,
                texts,
                labels,
                groups,
                pixels,
                thumbnails,
                skipped,
                excluded,
                last: exhausted,
            };
            if tx.send(Ok(batch)).is_err() {
                return Ok(()); // the consumer stopped
            }
            if exhausted {
                return Ok(());
            }
            if in_part == settings.part_size {
                part += 1;
                in_part = 0;
            }
        }
    })();
    if let Err(e) = result {
        tx.send(Err(e)).ok();
    }
}

/// Divides each row of `values` (rows × dim) by its L2 norm (zero rows stay zero).
pub fn normalize_rows(values: &mut [f32], dim: usize) {
    for row in values.chunks_mut(dim) {
        let norm = row
            .iter()
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for x in row {
                *x = (*x as f64 / norm) as f32;
            }
        }
    }
}

/// Embeds texts under the templates: one template formats; several are averaged over
/// normalised embeddings and renormalised.
fn embed_texts(
    encoder: &Encoder,
    texts: &[String],
    templates: &[String],
    dim: usize,
) -> Result<Vec<f32>> {
    if templates.is_empty() {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        return encoder.embed_texts(&refs);
    }
    let prompts: Vec<String> = texts
        .iter()
        .flat_map(|t| templates.iter().map(move |tpl| tpl.replace("{}", t)))
        .collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let mut all = encoder.embed_texts(&refs)?;
    if templates.len() == 1 {
        return Ok(all);
    }
    normalize_rows(&mut all, dim);
    let t = templates.len();
    let mut out = vec![0f32; texts.len() * dim];
    for (i, row) in out.chunks_mut(dim).enumerate() {
        for j in 0..dim {
            let mut s = 0f64;
            for k in 0..t {
                s += all[(i * t + k) * dim + j] as f64;
            }
            row[j] = (s / t as f64) as f32;
        }
    }
    normalize_rows(&mut out, dim);
    Ok(out)
}

/// One part being filled.
struct PartBuffer {
    towers: Vec<Vec<f32>>,
    /// The rows' thumbnails back to back (sizes in `meta.thumbnails`).
    thumbnails: Vec<u8>,
    meta: PartMeta,
    started: Instant,
}

impl PartBuffer {
    fn new(towers: usize) -> PartBuffer {
        PartBuffer {
            towers: vec![Vec::new(); towers],
            thumbnails: Vec::new(),
            meta: PartMeta {
                positions: 0,
                rows: 0,
                items: Vec::new(),
                texts: Vec::new(),
                labels: Vec::new(),
                groups: Vec::new(),
                skipped: Vec::new(),
                excluded: 0,
                thumbnails: Vec::new(),
                seconds: 0.0,
            },
            started: Instant::now(),
        }
    }

    /// Writes the embeddings and thumbnails, then the metadata file that makes the part count.
    fn write(mut self, dir: &Path, part: usize, with_thumbnails: bool) -> Result<PartMeta> {
        for (t, values) in self.towers.iter().enumerate() {
            let path = part_path(dir, part, &format!("t{t}.f32"));
            let mut f = fs::File::create(&path)?;
            f.write_all(bytemuck_f32(values))?;
            f.sync_all()?;
        }
        if with_thumbnails {
            thumbnails::write_part(&part_path(dir, part, "thumbs"), &self.thumbnails)?;
        }
        self.meta.seconds = self.started.elapsed().as_secs_f64();
        let tmp = part_path(dir, part, "json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&self.meta)?)?;
        f.sync_all()?;
        fs::rename(&tmp, part_path(dir, part, "json"))?;
        Ok(self.meta)
    }
}

fn bytemuck_f32(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns; the slice covers the same memory.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

/// Runs the embed: resumes from `partial`, writes every output, returns what happened.
pub fn run(
    source: Box<dyn Source>,
    encoder: &Encoder,
    settings: &Settings,
    partial: &Path,
    out: &OutputPaths,
    on_progress: &(dyn Fn(usize) + Sync),
) -> Result<EmbedOutcome> {
    if !settings.image && !settings.text {
        bail!("nothing to embed: neither the image nor the text tower was asked for");
    }
    if settings.batch_size == 0 || settings.part_size == 0 {
        bail!("batch and part sizes must be positive");
    }
    let mut dims = Vec::new();
    if settings.image {
        dims.push(
            encoder
                .image_dim()
                .context("the model has no image tower")?,
        );
    }
    if settings.text {
        dims.push(encoder.text_dim().context("the model has no text tower")?);
    }
    if settings.thumbnails && !(settings.image && settings.preprocess.is_some()) {
        bail!("thumbnails need the image tower");
    }
    let (resumed, ended) = finished_parts(
        partial,
        settings.part_size,
        dims.len(),
        &dims,
        settings.thumbnails,
    )?;
    let started = Instant::now();
    let mut rows_this_run = 0;
    if !ended {
        let (tx, rx) = sync_channel::<Result<Batch>>(2);
        let producer_settings = settings.clone();
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(move || produce(source, producer_settings, resumed, tx));
            rows_this_run = consume(rx, encoder, settings, &dims, partial, resumed, on_progress)?;
            Ok(())
        })?;
    }
    assemble(
        partial,
        settings,
        &dims,
        out,
        resumed,
        started,
        rows_this_run,
    )
}

/// Embeds the batches as they come and writes each part when it is complete.
fn consume(
    rx: Receiver<Result<Batch>>,
    encoder: &Encoder,
    settings: &Settings,
    dims: &[usize],
    partial: &Path,
    first_part: usize,
    on_progress: &(dyn Fn(usize) + Sync),
) -> Result<usize> {
    let mut current = PartBuffer::new(dims.len());
    let mut current_part = first_part;
    let mut rows = 0;
    let mut done_positions = first_part * settings.part_size;
    on_progress(done_positions);
    for batch in rx {
        let batch = batch?;
        if batch.part != current_part {
            bail!(
                "internal error: batch of part {} while filling part {current_part}",
                batch.part
            );
        }
        let n = batch.texts.len();
        let mut t = 0;
        if settings.image {
            let mut v = if n > 0 {
                encoder.embed_images(batch.pixels, n)?
            } else {
                Vec::new()
            };
            if settings.normalize {
                normalize_rows(&mut v, dims[t]);
            }
            current.towers[t].extend_from_slice(&v);
            t += 1;
        }
        if settings.text {
            let texts: Vec<String> = batch
                .texts
                .iter()
                .map(|x| x.clone().unwrap_or_default())
                .collect();
            let mut v = if n > 0 {
                embed_texts(encoder, &texts, &settings.templates, dims[t])?
            } else {
                Vec::new()
            };
            if settings.normalize {
                normalize_rows(&mut v, dims[t]);
            }
            current.towers[t].extend_from_slice(&v);
        }
        if let Some(bad) = current.towers.iter().flatten().position(|x| !x.is_finite()) {
            bail!("the encoder produced a non-finite value (row {} of the current part); check the model's weights", bad / dims[0]);
        }
        current.meta.positions += batch.positions;
        current.meta.rows += n;
        current.meta.items.extend(batch.items);
        for t in &batch.thumbnails {
            let size = u32::try_from(t.len()).context("a thumbnail over 4 GiB")?;
            current.meta.thumbnails.push(size);
            current.thumbnails.extend_from_slice(t);
        }
        current.meta.texts.extend(batch.texts);
        current.meta.labels.extend(batch.labels);
        current.meta.groups.extend(batch.groups);
        current.meta.skipped.extend(batch.skipped);
        current.meta.excluded += batch.excluded;
        rows += n;
        done_positions += batch.positions;
        on_progress(done_positions);
        if current.meta.positions == settings.part_size || batch.last {
            let full = std::mem::replace(&mut current, PartBuffer::new(dims.len()));
            full.write(partial, current_part, settings.thumbnails)?;
            current_part += 1;
        }
        if batch.last {
            break;
        }
    }
    Ok(rows)
}

/// Joins the parts into the output files.
fn assemble(
    partial: &Path,
    settings: &Settings,
    dims: &[usize],
    out: &OutputPaths,
    resumed: usize,
    started: Instant,
    rows_this_run: usize,
) -> Result<EmbedOutcome> {
    let mut metas = Vec::new();
    for part in 0.. {
        let Ok(bytes) = fs::read(part_path(partial, part, "json")) else {
            break;
        };
        let meta: PartMeta = serde_json::from_slice(&bytes)
            .with_context(|| format!("part {part} of the embed is damaged"))?;
        let last = meta.positions < settings.part_size;
        metas.push(meta);
        if last {
            break;
        }
    }
    let rows: usize = metas.iter().map(|m| m.rows).sum();
    if rows == 0 {
        let skipped: usize = metas.iter().map(|m| m.skipped.len()).sum();
        let excluded: usize = metas.iter().map(|m| m.excluded).sum();
        if excluded > 0 && skipped == 0 {
            bail!("no item is on this side of the split ({excluded} on the other side); use a larger source or another `holdout`");
        }
        bail!("no item could be embedded ({skipped} skipped); see the reasons with a smaller source or check the paths and formats");
    }
    let targets = [&out.matrix, &out.text_matrix];
    for (t, dim) in dims.iter().enumerate() {
        let mut w = NpyWriter::create(targets[t], rows, *dim)?;
        for part in 0..metas.len() {
            let bytes = fs::read(part_path(partial, part, &format!("t{t}.f32")))?;
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            w.write_rows(&values)?;
        }
        w.finish()?;
    }
    let write_lines = |path: &Path, lines: Vec<&Option<String>>| -> Result<bool> {
        if lines.iter().all(|l| l.is_none()) {
            return Ok(false);
        }
        let mut f = std::io::BufWriter::new(fs::File::create(path)?);
        for l in lines {
            // One row, one line: line breaks inside a caption become spaces.
            let text = l.as_deref().unwrap_or("").replace(['\n', '\r'], " ");
            writeln!(f, "{text}")?;
        }
        f.flush()?;
        Ok(true)
    };
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&out.items)?);
        for line in metas.iter().flat_map(|m| m.items.iter()) {
            writeln!(f, "{line}")?;
        }
        f.flush()?;
    }
    let wrote_thumbnails = if settings.thumbnails {
        let written = thumbnails::write_archive(
            metas.iter().enumerate().map(|(part, m)| PartThumbnails {
                path: part_path(partial, part, "thumbs"),
                sizes: &m.thumbnails,
            }),
            &out.thumbnails,
        )?;
        if written != rows {
            bail!("internal error: {written} thumbnails for {rows} rows");
        }
        true
    } else {
        false
    };
    let wrote_texts = write_lines(
        &out.texts,
        metas.iter().flat_map(|m| m.texts.iter()).collect(),
    )?;
    let wrote_labels = write_lines(
        &out.labels,
        metas.iter().flat_map(|m| m.labels.iter()).collect(),
    )?;
    let groups: Vec<&Option<String>> = metas.iter().flat_map(|m| m.groups.iter()).collect();
    if groups.len() != rows && groups.iter().any(|g| g.is_some()) {
        bail!(
            "internal error: {} group values for {rows} rows",
            groups.len()
        );
    }
    let wrote_groups = groups.len() == rows && write_lines(&out.groups, groups)?;
    Ok(EmbedOutcome {
        positions: metas.iter().map(|m| m.positions).sum(),
        rows,
        cols: dims[0],
        skipped: metas
            .iter()
            .flat_map(|m| m.skipped.iter().cloned())
            .collect(),
        excluded: metas.iter().map(|m| m.excluded).sum(),
        wrote_texts,
        wrote_labels,
        wrote_groups,
        wrote_thumbnails,
        resumed_parts: resumed,
        seconds: metas.iter().map(|m| m.seconds).sum(),
        seconds_this_run: started.elapsed().as_secs_f64(),
        rows_this_run,
    })
    .map_err(|e: anyhow::Error| anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::SplitRule;

    #[test]
    fn the_two_sides_of_a_split_partition_the_items_in_the_asked_share() {
        let train = SplitRule {
            holdout: 0.2,
            keep_holdout: false,
        };
        let held = SplitRule {
            keep_holdout: true,
            ..train
        };
        let keys: Vec<String> = (0..20_000).map(|i| format!("cats/{i:05}.png")).collect();
        let mut held_out = 0;
        for k in &keys {
            assert_ne!(train.keeps(k), held.keeps(k), "{k} is on exactly one side");
            held_out += held.keeps(k) as usize;
        }
        // Binomial(20000, 0.2): standard deviation about 57.
        assert!((3_700..4_300).contains(&held_out), "{held_out}");
        // A key's side is a property of the key alone.
        assert_eq!(held.keeps("cats/00017.png"), held.keeps("cats/00017.png"));
        let bigger = SplitRule {
            holdout: 0.5,
            keep_holdout: true,
        };
        assert!(
            keys.iter().all(|k| !held.keeps(k) || bigger.keeps(k)),
            "nested as the share grows"
        );
    }
}
