//! `concept_search`: similarity search steered by a concept of an SAE. Each query row is taken
//! into the SAE's space (standardised with `statistics`/`scale_rule`, encoded with the model's
//! own sparse code — TopK, BatchTopK, ReLU, JumpReLU, the first Matryoshka level), one latent of
//! its code is edited, the code is decoded and un-standardised back into the embedding space,
//! and the `k` gallery rows of highest cosine to the edited query are its neighbours.
//!
//! Choices, each also in docs/step-kinds.md:
//! * **Queries** are rows of any matrix of the SAE's width: items of the gallery's kind, or text
//!   prompts embedded by an `embed` step with the encoder that made the gallery (the same
//!   embedding space). `query_rows` picks rows (default all); more than
//!   [`MAX_SEARCHES`] searches (rows × results per row) is refused, as is a row out of range.
//! * **Edits** are `"<op> <latent>"`: `set` (`z_j = strength·unit`), `add`
//!   (`z_j += strength·unit`), `scale` (`z_j ·= strength`, a factor without unit) and `ablate`
//!   (`z_j = 0`, one result whatever the strengths). The latent is an index (`12`, `#12`) or a
//!   concept name of the `name` step's `names` (`kinds::latent_names::resolve`).
//! * **Strength unit**: `relative` (default) measures set and add strengths in the latent's
//!   largest activation over the gallery (so 1 sets the latent to its gallery maximum; a latent
//!   that never fires on the gallery is refused there), `code` in raw code units.
//! * **Residual** (default on): the reconstruction error is kept, `x' = x + dec(z') − dec(z)`,
//!   so an edit of strength 0 returns the query itself; off, `x' = dec(z')`, the
//!   reconstruction alone. Arithmetic in `analysis::concept_search`.
//! * **Self**: when `queries` and `gallery` hold the same matrix (equal content hash, as the same
//!   reference gives), a query's own gallery row is never its neighbour.
//! * **Ties** between neighbour cosines go to the lower gallery row.
//! * **Relevance**: a neighbour is relevant when its `gallery_labels` entry equals the concept
//!   name, or its `gallery_texts` entry holds the concept name as a whole word (both
//!   case-insensitive); shares are reported only where those inputs exist and the latent has a
//!   name.
//!
//! The gallery is read twice in blocks of `batch_size` rows: once encoded (each edited latent's
//! activation in every row and its maximum), once normalised for the cosine search.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use serde_json::{json, Value as Json};

use crate::analysis::concept_search::{
    contains_word, cosine, label_matches, parse_edit, EditOp, EditSpace, NearestRows, Neighbour,
};
use crate::kinds::import::read_lines;
use crate::kinds::latent_names::{read_names, resolve};
use crate::kinds::sae_common::{device, open_sae_matrix};
use crate::kinds::sae_eval::{standardization_for, standardized_batch, stats_source, EVAL_PARAMS};
use crate::kinds::train::load_model;
use crate::metrics::MatRef;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{InputArtifact, Metrics, Step, StepContext};

pub struct ConceptSearch;

/// The most searches (query rows × results per row) one step runs: each writes `k` neighbours
/// into the JSON, and every edited query is held in memory during the gallery pass.
pub const MAX_SEARCHES: usize = 100_000;

static PARAMS: &[ParamSpec] = &[
    EVAL_PARAMS[0],
    ParamSpec { name: "queries", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the query embeddings: items (e.g. \"data.test\") or text prompts embedded by an `embed` step with the encoder that made the gallery", ..ParamSpec::BASE },
    ParamSpec { name: "query_rows", ty: ParamType::IntList, default: Default::Absent, min: Some(0.0), doc: "which rows of `queries` to search with (default all; at most 100,000 searches, rows × results per row)", ..ParamSpec::BASE },
    ParamSpec { name: "gallery", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the embeddings searched, of the SAE's width, e.g. \"data.train\"; when it is the same matrix as `queries`, a query never finds its own row", ..ParamSpec::BASE },
    ParamSpec { name: "gallery_labels", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "one label per gallery row, e.g. \"data.labels\": adds the share of neighbours labelled with the concept's name", ..ParamSpec::BASE },
    ParamSpec { name: "gallery_texts", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "one text per gallery row, e.g. \"data.texts\": shown with each neighbour, and adds the share of neighbours whose text holds the concept's name as a whole word", ..ParamSpec::BASE },
    ParamSpec { name: "names", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "the `name` step's names of this SAE, e.g. \"names.names\" (needed for concept names in `edits`, and for the shares)", ..ParamSpec::BASE },
    ParamSpec { name: "edits", ty: ParamType::StrList, default: Default::Required, doc: "the edits, each \"<op> <latent>\": op one of set, add, scale, ablate; latent an index (\"12\", \"#12\") or a concept name, e.g. [\"add dog\", \"ablate 12\"]", ..ParamSpec::BASE },
    ParamSpec { name: "strengths", ty: ParamType::FloatList, default: Default::FloatList(&[0.0, 0.5, 1.0, 2.0, 4.0]), doc: "the strengths of every set, add and scale edit (scale: a factor; ablate ignores them)", ..ParamSpec::BASE },
    ParamSpec { name: "strength_unit", ty: ParamType::Choice(&["relative", "code"]), default: Default::Str("relative"), doc: "relative: set/add strengths in units of the latent's largest activation over the gallery; code: in raw code units", ..ParamSpec::BASE },
    ParamSpec { name: "residual", ty: ParamType::Bool, default: Default::Bool(true), doc: "keep the SAE's reconstruction error: x' = x + dec(z') − dec(z); false: x' = dec(z')", ..ParamSpec::BASE },
    ParamSpec { name: "k", ty: ParamType::Int, default: Default::Int(10), min: Some(1.0), doc: "neighbours per search", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, default: Default::Int(4096), min: Some(1.0), doc: "rows per encoding and search block (BatchTopK codes depend on the batch)", ..ParamSpec::BASE },
    EVAL_PARAMS[4],
    EVAL_PARAMS[5],
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "results",
    optional: false,
    doc: "per edit and strength: the metrics (mean activation of the latent in the neighbours, label and text shares, kept cosine) and per query its neighbours with cosines and activations (JSON)",
}];

/// One resolved edit.
struct Edit {
    text: String,
    op: EditOp,
    latent: usize,
    concept: String,
    /// The concept name to look for in labels and texts (none for a bare index).
    word: Option<String>,
}

/// One search per query row: an edit at one strength (`None` for ablate).
struct Case {
    edit: usize,
    strength: Option<f64>,
}

/// Reads a one-line-per-gallery-row input, checking the count.
fn gallery_lines(
    ctx: &StepContext,
    param: &str,
    rows: usize,
    gallery: &InputArtifact,
) -> Result<Option<Vec<String>>> {
    let Some(input) = ctx.inputs.get(param) else {
        return Ok(None);
    };
    let lines = read_lines(&input.path)?;
    if lines.len() != rows {
        bail!(
            "`{param}` (from {}) has {} lines but `gallery` (from {}) has {rows} rows; they must match one to one",
            input.from,
            lines.len(),
            gallery.from
        );
    }
    Ok(Some(lines))
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

impl Step for ConceptSearch {
    step_info!(kind: "concept_search", version: 1, about: "similarity search with a concept of an SAE edited into the queries (set, add, scale, ablate a latent): neighbours, the latent's activation in them, label and text shares");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let (d, n) = (sae.d, sae.n);
        let (queries, queries_in) = open_sae_matrix(ctx, "queries", d)?;
        let (gallery, gallery_in) = open_sae_matrix(ctx, "gallery", d)?;
        let g_rows = gallery.rows();
        let labels = gallery_lines(ctx, "gallery_labels", g_rows, &gallery_in)?;
        let texts = gallery_lines(ctx, "gallery_texts", g_rows, &gallery_in)?;
        let names = match ctx.inputs.get("names") {
            Some(input) => Some(read_names(&input.path, &input.from, n)?),
            None => None,
        };

        let edits = match ctx.params.get("edits") {
            Some(Value::List(items)) => items
                .iter()
                .map(|item| {
                    let text = item.as_str().unwrap_or_default();
                    let (op, what) = parse_edit(text, "edits").map_err(|e| anyhow!("{e}"))?;
                    let chosen = resolve(what, names.as_deref(), n, "edits")?;
                    let word = names
                        .as_ref()
                        .map(|_| chosen.name.clone())
                        .filter(|w| !w.trim().is_empty());
                    Ok(Edit {
                        text: text.to_string(),
                        op,
                        latent: chosen.latent,
                        concept: chosen.name,
                        word,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            _ => bail!("`edits` is missing"),
        };
        let strengths: Vec<f64> = match ctx.params.get("strengths") {
            Some(Value::List(items)) => items.iter().filter_map(Value::as_float).collect(),
            _ => bail!("`strengths` is missing"),
        };
        let cases: Vec<Case> = edits
            .iter()
            .enumerate()
            .flat_map(|(e, edit)| {
                if edit.op.uses_strength() {
                    strengths
                        .iter()
                        .map(|&s| Case {
                            edit: e,
                            strength: Some(s),
                        })
                        .collect()
                } else {
                    vec![Case {
                        edit: e,
                        strength: None,
                    }]
                }
            })
            .collect();

        let rows: Vec<usize> = match ctx.params.get("query_rows") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(Value::as_int)
                .map(|r| {
                    let r = r as usize;
                    if r >= queries.rows() {
                        bail!(
                            "`query_rows`: row {r} does not exist; `queries` (from {}) has {} rows (0 to {})",
                            queries_in.from,
                            queries.rows(),
                            queries.rows() - 1
                        );
                    }
                    Ok(r)
                })
                .collect::<Result<_>>()?,
            _ => (0..queries.rows()).collect(),
        };
        let searches = rows.len() * cases.len();
        if searches > MAX_SEARCHES {
            bail!(
                "{} query rows × {} results per row (edits × strengths) are {searches} searches, more than the {MAX_SEARCHES} one step runs; choose rows of `queries` (from {}) with `query_rows`, or fewer edits or strengths",
                rows.len(),
                cases.len(),
                queries_in.from
            );
        }
        let same = queries_in.hash == gallery_in.hash;
        let k = ctx.usize("k")?;
        let available = if same { g_rows - 1 } else { g_rows };
        if k > available {
            bail!(
                "`k` = {k} neighbours, but `gallery` (from {}) offers {available} rows to each query{}",
                gallery_in.from,
                if same { " (its own row left out: `queries` is the same matrix)" } else { "" }
            );
        }
        let residual = ctx
            .params
            .get("residual")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let relative = ctx.str("strength_unit")? == "relative";
        let batch = ctx.usize("batch_size")?;
        let source = stats_source(ctx.str("statistics")?, ctx.str("scale_rule")?);
        let std_q = standardization_for(&sae, &queries, source)?;
        let std_g = standardization_for(&sae, &gallery, source)?;
        let err = |e: crate::sae::SaeError| anyhow!("{e}");

        // Pass 1 over the gallery: every edited latent's activation in each row.
        let mut latents: Vec<usize> = edits.iter().map(|e| e.latent).collect();
        latents.sort_unstable();
        latents.dedup();
        let mut columns: BTreeMap<usize, Vec<f32>> = latents
            .iter()
            .map(|&j| (j, Vec::with_capacity(g_rows)))
            .collect();
        let bar = ctx.progress.bar(
            2 * g_rows as u64,
            &format!("concept_search {}", ctx.instance),
        );
        for start in (0..g_rows).step_by(batch) {
            let end = (start + batch).min(g_rows);
            let x = standardized_batch(&gallery, start, end, &std_g, &dev)?;
            let code = sae.sparse_code_host(&x).map_err(err)?;
            for (&j, column) in columns.iter_mut() {
                column.extend(code.chunks(n).map(|row| row[j]));
            }
            bar.set_position(end as u64);
        }
        let largest: BTreeMap<usize, f64> = columns
            .iter()
            .map(|(&j, c)| (j, c.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64))
            .collect();
        let mut units = Vec::with_capacity(edits.len());
        for edit in &edits {
            let unit = if relative && edit.op.uses_unit() {
                let max = largest[&edit.latent];
                if max <= 0.0 {
                    bail!(
                        "`edits`: latent {} (`{}`) never fires on `gallery` (from {}), so strengths relative to its largest activation there have no unit; use strength_unit = \"code\" or another latent",
                        edit.latent,
                        edit.concept,
                        gallery_in.from
                    );
                }
                max
            } else {
                1.0
            };
            units.push(unit);
        }

        // The queries: encoded in batches, every case's edited row built from the code.
        let decoder: Vec<f32> = sae.decoder.flatten_all()?.to_vec1()?;
        let pre_bias: Vec<f32> = sae.pre_bias.flatten_all()?.to_vec1()?;
        let space = EditSpace {
            decoder: MatRef::new(&decoder, n, d)?,
            pre_bias: &pre_bias,
            mean: &std_q.mean,
            scale: std_q.scale as f64,
        };
        let q = rows.len();
        let mut edited = vec![0f32; searches * d];
        // Per (case, query): the latent's value before and after the edit, and the cosine of
        // the edited query to the original.
        let mut before = vec![0f64; searches];
        let mut after = vec![0f64; searches];
        let mut kept = vec![0f64; searches];
        for start in (0..q).step_by(batch) {
            let end = (start + batch).min(q);
            let raw: Vec<f32> = rows[start..end]
                .iter()
                .flat_map(|&r| queries.row(r).iter().copied())
                .collect();
            let x = std_q
                .apply(&Tensor::from_slice(&raw, (end - start, d), &dev)?)
                .map_err(err)?;
            let code = sae.sparse_code_host(&x).map_err(err)?;
            for (i, qi) in (start..end).enumerate() {
                let xr = &raw[i * d..(i + 1) * d];
                let zr = &code[i * n..(i + 1) * n];
                for (c, case) in cases.iter().enumerate() {
                    let edit = &edits[case.edit];
                    let old = zr[edit.latent] as f64;
                    let new = edit
                        .op
                        .apply(old, case.strength.unwrap_or(0.0), units[case.edit]);
                    let row = space
                        .edited_row(xr, zr, edit.latent, new, residual)
                        .map_err(|e| anyhow!("{e}"))?;
                    let at = c * q + qi;
                    kept[at] = cosine(&row, xr);
                    before[at] = old;
                    after[at] = new;
                    edited[at * d..(at + 1) * d].copy_from_slice(&row);
                }
            }
        }

        // Pass 2 over the gallery: the cosine search.
        let excluded: Vec<Option<usize>> = (0..searches)
            .map(|at| if same { Some(rows[at % q]) } else { None })
            .collect();
        let mut nearest = NearestRows::new(MatRef::new(&edited, searches, d)?, excluded, k)
            .map_err(|e| anyhow!("{e}"))?;
        for start in (0..g_rows).step_by(batch) {
            let end = (start + batch).min(g_rows);
            nearest
                .scan(
                    MatRef::new(gallery.rows_slice(start, end), end - start, d)?,
                    start,
                )
                .map_err(|e| anyhow!("{e}"))?;
            bar.set_position((g_rows + end) as u64);
        }
        bar.finish_and_clear();
        drop(edited);
        let lists = nearest.finish();

        let mut edits_json = Vec::with_capacity(edits.len());
        let mut table: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (e, edit) in edits.iter().enumerate() {
            let column = &columns[&edit.latent];
            let mut results = Vec::new();
            for (c, case) in cases.iter().enumerate().filter(|(_, c)| c.edit == e) {
                let span = c * q..(c + 1) * q;
                let all = || lists[span.clone()].iter().flatten();
                let share = |hit: &dyn Fn(usize) -> bool| -> f64 {
                    mean(all().map(|nb| if hit(nb.row) { 1.0 } else { 0.0 }))
                };
                let activation = mean(all().map(|nb| column[nb.row] as f64));
                let label_share = match (&labels, &edit.word) {
                    (Some(l), Some(w)) => Some(share(&|r| label_matches(&l[r], w))),
                    _ => None,
                };
                let text_share = match (&texts, &edit.word) {
                    (Some(t), Some(w)) => Some(share(&|r| contains_word(&t[r], w))),
                    _ => None,
                };
                let kept_mean = mean(kept[span.clone()].iter().copied());
                let per_query: Vec<Json> = span
                    .clone()
                    .map(|at| {
                        let neighbours: Vec<Json> = lists[at]
                            .iter()
                            .map(|nb: &Neighbour| {
                                let mut o = json!({
                                    "row": nb.row,
                                    "cosine": nb.cosine,
                                    "activation": column[nb.row],
                                });
                                if let Some(l) = &labels {
                                    o["label"] = json!(l[nb.row]);
                                }
                                if let Some(t) = &texts {
                                    o["text"] = json!(t[nb.row]);
                                }
                                o
                            })
                            .collect();
                        json!({
                            "row": rows[at - span.start],
                            "activation": before[at],
                            "edited": after[at],
                            "kept": kept[at],
                            "neighbours": neighbours,
                        })
                    })
                    .collect();
                let suffix = match case.strength {
                    Some(s) => format!("@{s}"),
                    None => "@ablate".to_string(),
                };
                let mut push = |what: &str, v: Option<f64>| {
                    if let Some(v) = v.filter(|v| v.is_finite()) {
                        table.entry(format!("{what}{suffix}")).or_default().push(v);
                    }
                };
                push("activation", Some(activation));
                push("kept", Some(kept_mean));
                push("label_share", label_share);
                push("text_share", text_share);
                results.push(json!({
                    "strength": case.strength,
                    "mean_activation": activation,
                    "mean_cosine": mean(all().map(|nb| nb.cosine)),
                    "kept": kept_mean,
                    "label_share": label_share,
                    "text_share": text_share,
                    "queries": per_query,
                }));
            }
            edits_json.push(json!({
                "edit": edit.text,
                "op": edit.op.name(),
                "latent": edit.latent,
                "concept": edit.concept,
                "gallery_max": largest[&edit.latent],
                "unit": if edit.op.uses_unit() { Some(units[e]) } else { None },
                "results": results,
            }));
        }
        let report = json!({
            "query_rows": rows,
            "gallery_rows": g_rows,
            "k": k,
            "residual": residual,
            "strength_unit": if relative { "relative" } else { "code" },
            "strengths": strengths,
            "self_excluded": same,
            "edits": edits_json,
        });
        crate::sae::model::write_atomic(
            &ctx.output_path("results"),
            &serde_json::to_vec_pretty(&report)?,
        )?;

        let mut metrics = Metrics::new();
        metrics.insert("queries".into(), q.into());
        metrics.insert("gallery".into(), g_rows.into());
        metrics.insert("edits".into(), edits.len().into());
        for (key, values) in table {
            metrics.insert(key, mean(values.into_iter()).into());
        }
        Ok(metrics)
    }
}
