//! `embed`: raw texts and images → embeddings with a pretrained encoder (CLIP, SigLIP, a
//! sentence-transformers BERT), the first step of the reference pipeline (docs/reference.md §2).
//!
//! The model and the data are located before the key is computed ([`Step::resources`]): the
//! content hashes of the model's files (weights, configuration, tokenizer) and of the data files
//! enter the key, the names and paths they were found under do not. Data from a Hugging Face
//! dataset repository is keyed by its commit and file names and downloaded when the step runs.
//! The work itself is the resumable, part-wise loop of [`crate::embed::pipeline`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::embed::encoder::{Encoder, ImageGeometry};
use crate::embed::image::{Background, PassOrder, Preprocess};
use crate::embed::model_files::{self, ModelFiles};
use crate::embed::pipeline::{self, OutputPaths, Settings, SplitRule};
use crate::embed::source::image_folder::{self, ImageFolder};
#[cfg(feature = "parquet")]
use crate::embed::source::parquet::{ParquetOptions, ParquetSource};
use crate::embed::source::text_lines::TextLines;
use crate::embed::source::webdataset::{WebDataset, WebDatasetOptions};
use crate::embed::source::{files as source_files, Source};
use crate::interop::hub::{self, Kind};
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Resource, Step, StepContext};

pub struct Embed;

const SOURCES: &[&str] = &["text", "images", "webdataset", "parquet"];

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "model", ty: ParamType::Str, role: Role::Locator, default: Default::Required, gridable: true, doc: "the encoder: a folder with config.json, the weights (model.safetensors) and tokenizer.json, or a Hugging Face model id such as openai/clip-vit-large-patch14", ..ParamSpec::BASE },
    ParamSpec { name: "model_revision", ty: ParamType::Str, role: Role::Locator, default: Default::Str("main"), doc: "branch, tag or commit of a Hugging Face model", ..ParamSpec::BASE },
    ParamSpec { name: "source", ty: ParamType::Choice(SOURCES), default: Default::Required, doc: "text: a text file, one entry per line; images: a folder of images (sub-folders are labels, a .txt beside an image its caption); webdataset: .tar/.tar.gz shards; parquet: Hugging Face parquet shards", ..ParamSpec::BASE },
    ParamSpec { name: "path", ty: ParamType::Str, role: Role::Locator, default: Default::Absent, gridable: true, doc: "the data: a file, a folder or a glob of shards (e.g. shards/train-*.tar), relative to the experiment file", ..ParamSpec::BASE },
    ParamSpec { name: "dataset", ty: ParamType::Str, role: Role::Locator, default: Default::Absent, gridable: true, doc: "a Hugging Face dataset repository (instead of `path`), e.g. pixparse/cc3m-wds", ..ParamSpec::BASE },
    ParamSpec { name: "files", ty: ParamType::Str, role: Role::Locator, default: Default::Absent, gridable: true, doc: "with `dataset`: a glob of the repository's files to read, e.g. cc3m-validation-*.tar", ..ParamSpec::BASE },
    ParamSpec { name: "revision", ty: ParamType::Str, role: Role::Locator, default: Default::Str("main"), doc: "with `dataset`: branch, tag or commit (the resolved commit is keyed)", ..ParamSpec::BASE },
    ParamSpec { name: "tower", ty: ParamType::Choice(&["auto", "image", "text", "both"]), default: Default::Str("auto"), gridable: true, doc: "which tower(s) embed: `auto` = image for image sources, text for text files; `both` writes the text tower's matrix as `text_matrix`, rows aligned", ..ParamSpec::BASE },
    ParamSpec { name: "templates", ty: ParamType::StrList, default: Default::Absent, doc: "prompt templates with {} for the text, e.g. [\"a photo of a {}.\"]; several are averaged (each embedding normalised, averaged, renormalised). The reference embeds texts verbatim", ..ParamSpec::BASE },
    ParamSpec { name: "normalize", ty: ParamType::Bool, default: Default::Bool(false), doc: "L2-normalise every embedding (the reference stores CLIP's raw projected features; sentence-transformers models normalise by their own pipeline)", ..ParamSpec::BASE },
    ParamSpec { name: "background", ty: ParamType::Str, default: Default::Str("white"), doc: "images with transparency are composited onto this colour (`white`, `black` or `#rrggbb`); `drop` discards the alpha channel as Pillow's convert(\"RGB\") does", ..ParamSpec::BASE },
    ParamSpec { name: "resize_order", ty: ParamType::Choice(&["horizontal_first", "pillow13"]), default: Default::Str("horizontal_first"), doc: "order of the two bicubic passes: horizontal_first as the Pillow releases the reference ran on; pillow13 as Pillow 13, which resizes vertically first when the height shrinks much more than the width (pixels differ by a few levels on such images)", ..ParamSpec::BASE },
    ParamSpec { name: "limit", ty: ParamType::Int, default: Default::Absent, min: Some(1.0), doc: "read only the first `limit` items of the source", ..ParamSpec::BASE },
    ParamSpec { name: "split", ty: ParamType::Choice(&["all", "train", "holdout"]), default: Default::Str("all"), gridable: true, doc: "keep every item, or one side of a deterministic split: an item is held out when the BLAKE3 hash of its key (relative path, shard:member, …) falls in the first `holdout` share, whatever the order or size of the source", ..ParamSpec::BASE },
    ParamSpec { name: "holdout", ty: ParamType::Float, default: Default::Float(0.2), min: Some(0.0), max: Some(1.0), doc: "with split = \"train\"/\"holdout\": the share of items held out", ..ParamSpec::BASE },
    ParamSpec { name: "image_column", ty: ParamType::Str, default: Default::Str("image"), doc: "parquet: the image column (struct of bytes and path, as Hugging Face stores images)", ..ParamSpec::BASE },
    ParamSpec { name: "text_column", ty: ParamType::Str, default: Default::Absent, doc: "parquet: a caption column", ..ParamSpec::BASE },
    ParamSpec { name: "label_column", ty: ParamType::Str, default: Default::Absent, doc: "parquet: a label column (integer class ids are named through the dataset's class names, booleans are `true`/`false`)", ..ParamSpec::BASE },
    ParamSpec { name: "group_column", ty: ParamType::Str, default: Default::Absent, doc: "parquet: a second per-row attribute, read as `label_column` is, written as the `groups` output (e.g. CelebA's `Male` for a `bias` step's `groups`)", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, role: Role::Exec, default: Default::Absent, min: Some(1.0), doc: "items per encoder batch (speed and memory only); default 64 when images are embedded, 4096 for texts alone (texts are sorted by length within a batch, so larger batches pad less)", ..ParamSpec::BASE },
    ParamSpec { name: "part_size", ty: ParamType::Int, role: Role::Exec, default: Default::Int(8192), min: Some(1.0), doc: "items per resumable part: an interrupted embed resumes after the last finished part", ..ParamSpec::BASE },
];

/// Default items per encoder batch when images are embedded: decoded pixels of two batches are
/// held at once (64 CLIP inputs are 38 MB).
const IMAGE_BATCH: usize = 64;
/// Default texts per encoder batch for text sources: the encoder sorts a batch by length and pads
/// sub-batches to their longest text, so a large batch wastes little on padding; the transformer's
/// own memory is bounded by its sub-batches whatever this is.
const TEXT_BATCH: usize = 4096;

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec { name: "matrix", optional: false, doc: "the embeddings (.npy float32, one row per kept item): the image tower's for image sources, else the text tower's" },
    OutputSpec { name: "texts", optional: true, doc: "the text of each row (caption, vocabulary entry), one per line" },
    OutputSpec { name: "labels", optional: true, doc: "the label of each row (class folder, class name), one per line" },
    OutputSpec { name: "groups", optional: true, doc: "with `group_column`: the group value of each row, one per line (empty where the row has none)" },
    OutputSpec { name: "text_matrix", optional: true, doc: "with tower = \"both\": the text tower's embeddings of the same rows" },
    OutputSpec { name: "items", optional: false, doc: "where each row comes from, one line per row: the path in the image folder, shard:member, file.parquet:row (0-based), file.txt:line (1-based)" },
    OutputSpec { name: "thumbnails", optional: true, doc: "when images are embedded: a tar archive with one JPEG per row (<row>.jpg, longer side at most 64 px), in row order" },
    OutputSpec { name: "report", optional: false, doc: "JSON: counts, every skipped item with its reason, model, preprocessing, throughput" },
];

fn str_param<'a>(params: &'a BTreeMap<String, Value>, name: &str) -> Option<&'a str> {
    params.get(name).and_then(Value::as_str)
}

/// Where the data comes from, as written.
enum DataLocation {
    Local(String),
    Hub {
        dataset: String,
        files: String,
        revision: String,
    },
}

fn data_location(params: &BTreeMap<String, Value>) -> Result<DataLocation> {
    match (str_param(params, "path"), str_param(params, "dataset"), str_param(params, "files")) {
        (Some(p), None, None) => Ok(DataLocation::Local(p.to_string())),
        (None, Some(d), Some(f)) => Ok(DataLocation::Hub {
            dataset: d.to_string(),
            files: f.to_string(),
            revision: str_param(params, "revision").unwrap_or("main").to_string(),
        }),
        (None, Some(_), None) => bail!("`dataset` needs `files`: a glob of the repository's files to read, e.g. \"data/validation-*.parquet\""),
        (None, None, _) => bail!("give the data with `path` (a local file, folder or glob) or `dataset` + `files` (a Hugging Face dataset repository)"),
        _ => bail!("give either `path` or `dataset` + `files`, not both"),
    }
}

/// The local data files and their key names, or the hub files as identities.
fn locate_data(source: &str, params: &BTreeMap<String, Value>, base: &Path) -> Result<Resource> {
    match data_location(params)? {
        DataLocation::Local(written) => {
            let files: Vec<(String, PathBuf)> = match source {
                "images" => {
                    let root = resolve(base, &written);
                    let mut files = Vec::new();
                    for image in image_folder::image_files(&root)? {
                        let rel = image
                            .strip_prefix(&root)
                            .unwrap_or(&image)
                            .to_string_lossy()
                            .into_owned();
                        let caption = image.with_extension("txt");
                        files.push((rel.clone(), image));
                        if caption.is_file() {
                            files.push((format!("{rel}:caption"), caption));
                        }
                    }
                    files
                }
                _ => {
                    let paths = source_files::expand(base, std::slice::from_ref(&written))?;
                    if source == "text" && paths.len() != 1 {
                        bail!(
                            "a text source reads one file; `{written}` matches {}",
                            paths.len()
                        );
                    }
                    paths
                        .into_iter()
                        .map(|p| {
                            let name = p
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            (name, p)
                        })
                        .collect()
                }
            };
            Ok(Resource {
                name: "data".into(),
                described: written,
                files,
                identities: Vec::new(),
            })
        }
        DataLocation::Hub {
            dataset,
            files,
            revision,
        } => {
            if source == "images" || source == "text" {
                bail!("a Hugging Face `dataset` holds shards: use source = \"webdataset\" or \"parquet\"");
            }
            let pattern = glob::Pattern::new(&files)
                .with_context(|| format!("`files = \"{files}\"` is not a valid glob"))?;
            let (all, commit) = hub::list(Kind::Dataset, &dataset, &revision)?;
            let commit = commit.unwrap_or(revision.clone());
            let chosen: Vec<String> = all.into_iter().filter(|f| pattern.matches(f)).collect();
            if chosen.is_empty() {
                bail!("no file of Hugging Face dataset `{dataset}` (revision `{revision}`) matches `{files}`");
            }
            let identities = chosen
                .iter()
                .map(|f| (f.clone(), format!("hf-dataset:{dataset}@{commit}/{f}")))
                .collect();
            Ok(Resource {
                name: "data".into(),
                described: format!("{dataset}@{commit}/{files}"),
                files: Vec::new(),
                identities,
            })
        }
    }
}

fn resolve(base: &Path, written: &str) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn model_resource(m: &ModelFiles) -> Resource {
    Resource {
        name: "model".into(),
        described: m.described.clone(),
        files: m
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        identities: Vec::new(),
    }
}

/// The model files again from the resolved resource (the same files that were keyed).
fn model_files(ctx: &StepContext) -> Result<ModelFiles> {
    let r = ctx
        .resources
        .get("model")
        .context("the model was not located")?;
    Ok(ModelFiles {
        described: r.described.clone(),
        files: r.files.iter().cloned().collect(),
    })
}

/// The data files on this machine, each with the name its items are referred to by (a local
/// file's name, a hub file's path in its repository), downloading hub files now.
fn data_files(ctx: &StepContext) -> Result<Vec<(String, PathBuf)>> {
    let r = ctx
        .resources
        .get("data")
        .context("the data was not located")?;
    if r.identities.is_empty() {
        return Ok(r.files.clone());
    }
    let dataset = ctx.str("dataset")?;
    let commit = r
        .described
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(c, _)| c.to_string())
        .context("the dataset's commit was not resolved")?;
    let bar = ctx
        .progress
        .bar(r.identities.len() as u64, "embed: fetching shards");
    let mut out = Vec::new();
    for (name, _) in &r.identities {
        let path = hub::fetch_from(Kind::Dataset, dataset, name, &commit)?.path;
        out.push((name.clone(), path));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub fn parse_background(s: &str) -> Result<Background> {
    let t = s.trim().to_ascii_lowercase();
    Ok(match t.as_str() {
        "drop" => Background::Drop,
        "white" => Background::Color([255, 255, 255]),
        "black" => Background::Color([0, 0, 0]),
        hex if hex.starts_with('#') && hex.len() == 7 => {
            let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16);
            match (byte(1), byte(3), byte(5)) {
                (Ok(r), Ok(g), Ok(b)) => Background::Color([r, g, b]),
                _ => {
                    bail!("`background = \"{s}\"`: not a colour; use white, black, #rrggbb or drop")
                }
            }
        }
        _ => bail!("`background = \"{s}\"`: not a colour; use white, black, #rrggbb or drop"),
    })
}

fn preprocess(
    geometry: ImageGeometry,
    background: Background,
    pass_order: PassOrder,
) -> Preprocess {
    Preprocess {
        size: geometry.size,
        crop: geometry.crop,
        mean: geometry.mean,
        std: geometry.std,
        background,
        pass_order,
    }
}

fn open_source(
    kind: &str,
    ctx: &StepContext,
    named: Vec<(String, PathBuf)>,
) -> Result<(Box<dyn Source>, Option<usize>)> {
    let (names, files): (Vec<String>, Vec<PathBuf>) = named.into_iter().unzip();
    Ok(match kind {
        "text" => {
            let path = &files[0];
            let lines = std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count() + usize::from(!b.ends_with(b"\n") && !b.is_empty())).ok();
            (Box::new(TextLines::open(path)?), lines)
        }
        "images" => {
            // The folder is where the first keyed image lies, less its relative path.
            let r = ctx.resources.get("data").context("the data was not located")?;
            let root = r.files.first().map(|(rel, p)| strip_suffix_path(p, rel)).context("no image files")?;
            let folder = ImageFolder::open(&root)?;
            let n = folder.len();
            (Box::new(folder), Some(n))
        }
        "webdataset" => (Box::new(WebDataset::open(files, WebDatasetOptions::default())?.with_names(names)?), None),
        #[cfg(not(feature = "parquet"))]
        "parquet" => bail!("this msae was built without parquet support (`--no-default-features`); rebuild it with the default features to read parquet shards"),
        #[cfg(feature = "parquet")]
        "parquet" => {
            let opts = ParquetOptions {
                image_column: Some(ctx.str("image_column")?.to_string()),
                text_column: ctx.params.get("text_column").and_then(Value::as_str).map(String::from),
                label_column: ctx.params.get("label_column").and_then(Value::as_str).map(String::from),
                group_column: ctx.params.get("group_column").and_then(Value::as_str).map(String::from),
                // The text tower alone reads no image bytes, and needs no image column.
                skip_images: !wants_image(ctx),
            };
            (Box::new(ParquetSource::open(files, opts)?.with_names(names)?), None)
        }
        other => bail!("unknown source `{other}`"),
    })
}

/// The folder an image file lies under, given its path relative to that folder.
fn strip_suffix_path(path: &Path, rel: &str) -> PathBuf {
    let depth = Path::new(rel).components().count();
    let mut p = path.to_path_buf();
    for _ in 0..depth {
        p.pop();
    }
    p
}

fn wants_image(ctx: &StepContext) -> bool {
    towers(ctx).map(|(i, _)| i).unwrap_or(true)
}

/// The split this instance keeps, if any.
fn split_rule(ctx: &StepContext) -> Result<Option<SplitRule>> {
    let side = ctx.str("split")?;
    if side == "all" {
        return Ok(None);
    }
    let holdout = ctx
        .params
        .get("holdout")
        .and_then(Value::as_float)
        .unwrap_or(0.2);
    if !(holdout > 0.0 && holdout < 1.0) {
        bail!("`holdout` must lie strictly between 0 and 1 (got {holdout})");
    }
    Ok(Some(SplitRule {
        holdout,
        keep_holdout: side == "holdout",
    }))
}

/// (image tower, text tower) for this instance.
fn towers(ctx: &StepContext) -> Result<(bool, bool)> {
    let source = ctx.str("source")?;
    Ok(match ctx.str("tower")? {
        "image" => (true, false),
        "text" => (false, true),
        "both" => (true, true),
        _ => (source != "text", source == "text"),
    })
}

impl Step for Embed {
    step_info!(kind: "embed", version: 4, about: "embed texts or images with a pretrained encoder (CLIP, SigLIP, sentence-transformers BERT)");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn resources(&self, params: &BTreeMap<String, Value>, base: &Path) -> Result<Vec<Resource>> {
        let model = str_param(params, "model").context("`model` is required")?;
        let revision = str_param(params, "model_revision").unwrap_or("main");
        let source = str_param(params, "source").context("`source` is required")?;
        // Checked before anything is located, so that the mistake is named first.
        if source != "parquet" && params.contains_key("group_column") {
            bail!("`group_column` reads a column of parquet shards; source = \"{source}\" has no columns (use source = \"parquet\", or leave `group_column` out)");
        }
        let located = model_files::locate(model, revision, base)?;
        Ok(vec![
            model_resource(&located),
            locate_data(source, params, base)?,
        ])
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let source_kind = ctx.str("source")?.to_string();
        let (image, text) = towers(ctx)?;
        if source_kind == "text" && image {
            bail!("a text source has no images: use tower = \"text\" (or \"auto\")");
        }
        let files = model_files(ctx)?;
        let device = crate::kinds::sae_common::device(ctx.device)?;
        let encoder = Encoder::load(&files, text, image, &device)?;
        let background = parse_background(ctx.str("background")?)?;
        let pass_order = match ctx.str("resize_order")? {
            "pillow13" => PassOrder::Pillow13,
            _ => PassOrder::HorizontalFirst,
        };
        let templates: Vec<String> = match ctx.params.get("templates") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        if let Some(t) = templates.iter().find(|t| !t.contains("{}")) {
            bail!("template `{t}` has no `{{}}` where the text goes");
        }
        let settings = Settings {
            image,
            text,
            templates: templates.clone(),
            normalize: ctx
                .params
                .get("normalize")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            batch_size: match ctx.params.get("batch_size") {
                Some(_) => ctx.usize("batch_size")?,
                None if image => IMAGE_BATCH,
                None => TEXT_BATCH,
            },
            part_size: ctx.usize("part_size")?,
            limit: ctx
                .params
                .get("limit")
                .and_then(Value::as_int)
                .map(|l| l as usize),
            preprocess: encoder
                .image_geometry()
                .filter(|_| image)
                .map(|g| preprocess(g, background, pass_order)),
            split: split_rule(ctx)?,
            // Every row of an image embed has a decoded image to preview.
            thumbnails: image,
        };
        let data = data_files(ctx)?;
        let (source, hint) = open_source(&source_kind, ctx, data)?;
        let total = settings
            .limit
            .map(|l| hint.map_or(l, |h| h.min(l)))
            .or(hint);
        let bar = ctx.progress.bar(
            total.unwrap_or(0) as u64,
            &format!("embed {}", ctx.instance),
        );
        let outputs = OutputPaths {
            matrix: ctx.output_path("matrix"),
            text_matrix: ctx.output_path("text_matrix"),
            texts: ctx.output_path("texts"),
            labels: ctx.output_path("labels"),
            groups: ctx.output_path("groups"),
            items: ctx.output_path("items"),
            thumbnails: ctx.output_path("thumbnails"),
        };
        let on_progress = |pos: usize| {
            if total.is_none() && pos as u64 > bar.length().unwrap_or(0) {
                bar.set_length(pos as u64);
            }
            bar.set_position(pos as u64);
        };
        let outcome = pipeline::run(
            source,
            &encoder,
            &settings,
            &ctx.partial_dir,
            &outputs,
            &on_progress,
        )?;
        bar.finish_and_clear();
        if !outcome.skipped.is_empty() {
            ctx.progress.println(&format!(
                "{}: {} of {} items skipped (the report lists each with its reason)",
                ctx.instance,
                outcome.skipped.len(),
                outcome.positions
            ));
        }
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for s in &outcome.skipped {
            let head = s.reason.split(':').next().unwrap_or(&s.reason).to_string();
            *reasons.entry(head).or_default() += 1;
        }
        let per_s = |rows: usize, secs: f64| if secs > 0.0 { rows as f64 / secs } else { 0.0 };
        let report = json!({
            "model": files.described,
            "family": encoder.family.name(),
            "towers": { "image": image, "text": text },
            "dims": { "image": encoder.image_dim().filter(|_| image), "text": encoder.text_dim().filter(|_| text) },
            "source": { "kind": source_kind, "data": ctx.resources.get("data").map(|r| r.described.clone()) },
            "positions": outcome.positions,
            "rows": outcome.rows,
            "skipped": outcome.skipped.len(),
            "skip_reasons": reasons,
            "skipped_items": outcome.skipped,
            "split": settings.split.map(|r| json!({ "side": if r.keep_holdout { "holdout" } else { "train" }, "holdout": r.holdout, "other_side": outcome.excluded })),
            "preprocessing": settings.preprocess.as_ref().map(|p| json!({
                "size": p.size,
                "resize": if p.crop { "shorter side bicubic (Pillow semantics), centre crop" } else { "bicubic to size × size (Pillow semantics)" },
                "mean": p.mean,
                "std": p.std,
                "background": ctx.str("background").unwrap_or("white"),
            })),
            "templates": templates,
            "normalize": settings.normalize,
            "throughput": {
                "seconds": outcome.seconds,
                "rows_per_s": per_s(outcome.rows, outcome.seconds),
                "resumed_parts": outcome.resumed_parts,
                "rows_this_run": outcome.rows_this_run,
                "seconds_this_run": outcome.seconds_this_run,
            },
            "device": ctx.device,
            "batch_size": settings.batch_size,
            "part_size": settings.part_size,
        });
        std::fs::write(
            ctx.output_path("report"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        if !outcome.wrote_texts {
            std::fs::remove_file(ctx.output_path("texts")).ok();
        }
        if !outcome.wrote_labels {
            std::fs::remove_file(ctx.output_path("labels")).ok();
        }
        if !outcome.wrote_groups {
            std::fs::remove_file(ctx.output_path("groups")).ok();
        }
        if !outcome.wrote_thumbnails {
            std::fs::remove_file(ctx.output_path("thumbnails")).ok();
        }
        let mut metrics = Metrics::new();
        metrics.insert("rows".into(), outcome.rows.into());
        metrics.insert("cols".into(), outcome.cols.into());
        metrics.insert("skipped".into(), outcome.skipped.len().into());
        metrics.insert(
            "rows_per_s".into(),
            per_s(outcome.rows, outcome.seconds).into(),
        );
        metrics.insert("model".into(), files.described.clone().into());
        Ok(metrics)
    }
}
