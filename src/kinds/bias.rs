//! `bias`: which concepts a linear classifier leans on, measured through an SAE (the CelebA study
//! of "Interpreting CLIP with Hierarchical Sparse Autoencoders"). The classifier is a
//! `linear_probe` step's `probe`; the concepts are latents, given by name or index (`concepts`)
//! or chosen automatically (`select`). For every concept and every factor in `scales`, each row
//! of `data` is standardised with the SAE's statistics and encoded (sparse code), the concept's
//! code entry is multiplied by the factor, and the row moves by the change of the decoder's output
//! (`x' = x + dec(z') − dec(z)`, the reconstruction error kept, so a factor of 1 changes nothing);
//! back in the original space the probe classifies it. The report gives the mean change of each
//! class's probability, the flip rate and the change of accuracy, over all rows and per group,
//! with percentile bootstrap intervals, beside the same numbers for random latents of the same
//! firing frequency (the control). The arithmetic is `analysis::bias`.

use std::collections::{BTreeSet, HashMap};

use anyhow::{anyhow, bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

use crate::analysis::bias::{
    add_code_rows, bootstrap, group_correlation, intervene, matched_controls, probe_alignment,
    rows_by_group, top_by_score, Baseline, BootstrapOptions, Comparand, Comparison, Estimates,
    HostProbe, Interval, RowChanges,
};
use crate::data::npy::Matrix;
use crate::kinds::import::read_lines;
use crate::kinds::latent_names::{read_names, resolve, Chosen, Named};
use crate::kinds::linear_probe::load_probe;
use crate::kinds::sae_common::{device, open_sae_matrix};
use crate::kinds::sae_eval::standardized_batch;
use crate::kinds::train::load_model;
use crate::metrics::MatRef;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Step, StepContext};

pub struct Bias;

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "sae", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the SAE whose concepts are tested, e.g. \"sae\"", ..ParamSpec::BASE },
    ParamSpec { name: "probe", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the classifier: a `linear_probe` step's probe, e.g. \"probe.probe\" (trained on embeddings of the SAE's space)", ..ParamSpec::BASE },
    ParamSpec { name: "data", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the evaluation embeddings, e.g. \"test\" (an import's matrix)", ..ParamSpec::BASE },
    ParamSpec { name: "labels", ty: ParamType::Str, role: Role::Input, default: Default::Required, doc: "the true class of each row of `data`, one per line, e.g. \"test.labels\"; every one must be among the probe's classes", ..ParamSpec::BASE },
    ParamSpec { name: "groups", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "the group value of each row, one per line (e.g. an attribute such as `male`/`female`), e.g. \"attr.labels\": every number is also reported per group", ..ParamSpec::BASE },
    ParamSpec { name: "names", ty: ParamType::Str, role: Role::Input, default: Default::Absent, doc: "the `name` step's names of this SAE, e.g. \"names.names\" (for concepts given by name, and names in the report)", ..ParamSpec::BASE },
    ParamSpec { name: "concepts", ty: ParamType::StrList, default: Default::Absent, doc: "the concepts to test: latent indices (\"12\" or \"#12\") or names (needs `names`); or leave out and set `select`", ..ParamSpec::BASE },
    ParamSpec { name: "select", ty: ParamType::Choice(&["probe", "group"]), default: Default::Absent, doc: "choose `n_concepts` concepts automatically: `probe` — decoder direction most aligned (cosine) with the probe's weight of class `target` minus the mean class weight; `group` — activation most correlated with membership of group `target` (needs `groups`)", ..ParamSpec::BASE },
    ParamSpec { name: "target", ty: ParamType::Str, default: Default::Absent, doc: "with `select`: the probe class (`probe`) or the group value (`group`) the concepts are chosen for", ..ParamSpec::BASE },
    ParamSpec { name: "n_concepts", ty: ParamType::Int, default: Default::Int(5), min: Some(1.0), doc: "with `select`: how many concepts", ..ParamSpec::BASE },
    ParamSpec { name: "scales", ty: ParamType::FloatList, default: Default::FloatList(&[0.0]), doc: "factors applied to a concept's code entry: 0 ablates, 2 doubles, 1 changes nothing", ..ParamSpec::BASE },
    ParamSpec { name: "bootstrap", ty: ParamType::Int, default: Default::Int(1000), min: Some(1.0), doc: "bootstrap replicates of the 95 % percentile intervals (rows resampled with replacement)", ..ParamSpec::BASE },
    ParamSpec { name: "controls", ty: ParamType::Int, default: Default::Int(20), min: Some(1.0), doc: "random control latents per concept, matched in firing frequency on `data`", ..ParamSpec::BASE },
    ParamSpec { name: "seed", ty: ParamType::Int, default: Default::ExperimentSeed, gridable: true, min: Some(0.0), doc: "seed of the control draws and the bootstrap (defaults to the experiment's seed)", ..ParamSpec::BASE },
    ParamSpec { name: "batch_size", ty: ParamType::Int, default: Default::Int(4096), min: Some(1.0), doc: "rows encoded per batch (reference BatchTopK inference uses the batch)", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "report",
    optional: false,
    doc: "per concept and scale: probability change of each class, flip rate and accuracy change, over all rows and per group, with bootstrap intervals, for the concept, its frequency-matched control and their difference (JSON)",
}];

/// Two-sided coverage of the bootstrap intervals.
const CONFIDENCE: f64 = 0.95;

/// Where the controls' random numbers come from; each population's bootstrap uses the stream
/// after it (1 for all rows, 2… for the groups in sorted order).
const CONTROL_STREAM: u64 = 0;

/// The SAE's sparse code of every row of `data`, by latent (`(row, code)` pairs where non-zero).
fn code_columns(
    sae: &crate::sae::Sae,
    m: &Matrix,
    batch: usize,
    dev: &candle_core::Device,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let mut columns = vec![Vec::new(); sae.n];
    for start in (0..m.rows()).step_by(batch) {
        let end = (start + batch).min(m.rows());
        let x = standardized_batch(m, start, end, &sae.standardization, dev)?;
        let code = sae.sparse_code_host(&x).map_err(|e| anyhow!("{e}"))?;
        add_code_rows(&mut columns, &code, start);
    }
    Ok(columns)
}

/// The probe class index of every label; a label that is not a class is an error naming the row,
/// the label and both inputs.
fn class_indices(
    labels: &[String],
    classes: &[String],
    labels_from: &str,
    probe_from: &str,
) -> Result<Vec<u32>> {
    let index: HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(c, name)| (name.as_str(), c as u32))
        .collect();
    labels
        .iter()
        .enumerate()
        .map(|(row, label)| {
            index.get(label.as_str()).copied().ok_or_else(|| {
                let shown: Vec<&str> = classes.iter().take(8).map(String::as_str).collect();
                let more = if classes.len() > 8 { ", …" } else { "" };
                anyhow!(
                    "label `{label}` (row {row} of `labels`, from {labels_from}) is not among the probe's {} classes (`probe` from {probe_from}: {}{more}); the labels must name classes the probe was trained on",
                    classes.len(),
                    shown.join(", ")
                )
            })
        })
        .collect()
}

/// The concepts chosen by the user or by `select`, with each one's selection score (if any).
struct Selection {
    mode: &'static str,
    target: Option<String>,
    chosen: Vec<(Chosen, Option<f64>)>,
}

fn name_of(latent: usize, names: Option<&[Named]>) -> String {
    names
        .map(|all| all[latent].word.clone())
        .unwrap_or_else(|| format!("#{latent}"))
}

#[allow(clippy::too_many_arguments)]
fn select_concepts(
    ctx: &StepContext,
    names: Option<&[Named]>,
    sae_n: usize,
    decoder: MatRef<'_>,
    probe: &HostProbe,
    classes: &[String],
    columns: &[Vec<(u32, f32)>],
    groups: Option<&[String]>,
) -> Result<Selection> {
    let listed = match ctx.params.get("concepts") {
        Some(Value::List(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect::<Vec<_>>(),
        ),
        _ => None,
    };
    let select = ctx.params.get("select").and_then(Value::as_str);
    let target = ctx.params.get("target").and_then(Value::as_str);
    if let (Some(t), None) = (target, select) {
        bail!("`target` = `{t}` only chooses concepts with `select`; set `select = \"probe\"` (a probe class) or `\"group\"` (a group value), or leave `target` out");
    }
    match (listed, select) {
        (Some(_), Some(mode)) => bail!(
            "`concepts` and `select = \"{mode}\"` both choose the concepts; give one of them"
        ),
        (None, None) => bail!(
            "`bias` needs concepts: list them (`concepts = [\"dog\", \"12\"]`, names need `names`) or choose them with `select = \"probe\"` or `\"group\"` and `target`"
        ),
        (Some(list), None) => {
            let mut seen = HashMap::new();
            let mut chosen = Vec::new();
            for what in &list {
                let c = resolve(what, names, sae_n, "concepts")?;
                if let Some(first) = seen.insert(c.latent, what.clone()) {
                    bail!(
                        "`concepts`: `{first}` and `{what}` are the same latent ({}); list each concept once",
                        c.latent
                    );
                }
                chosen.push((c, None));
            }
            Ok(Selection {
                mode: "list",
                target: None,
                chosen,
            })
        }
        (None, Some(mode)) => {
            let Some(target) = target else {
                bail!("`select = \"{mode}\"` needs `target`: the {} the concepts are chosen for", if mode == "probe" { "probe class" } else { "group value" });
            };
            let n = ctx.usize("n_concepts")?;
            let scores = if mode == "probe" {
                let Some(t) = classes.iter().position(|c| c == target) else {
                    bail!(
                        "`target` = `{target}` is not among the probe's classes ({}); `select = \"probe\"` needs one of them",
                        classes.join(", ")
                    );
                };
                probe_alignment(decoder, probe, t).map_err(|e| anyhow!("{e}"))?
            } else {
                let Some(groups) = groups else {
                    bail!("`select = \"group\"` needs `groups` (the group value of each row, e.g. groups = \"attr.labels\")");
                };
                let member: Vec<bool> = groups.iter().map(|g| g == target).collect();
                let count = member.iter().filter(|&&m| m).count();
                if count == 0 || count == member.len() {
                    bail!(
                        "`target` = `{target}`: {count} of the {} rows of `groups` are in it; `select = \"group\"` needs a group that holds some rows but not all",
                        member.len()
                    );
                }
                group_correlation(columns, &member)
            };
            // A latent that never fires on `data` cannot change anything: never a concept.
            let eligible: Vec<bool> = columns.iter().map(|c| !c.is_empty()).collect();
            let chosen = top_by_score(&scores, &eligible, n)
                .into_iter()
                .map(|j| {
                    (
                        Chosen {
                            latent: j,
                            name: name_of(j, names),
                        },
                        Some(scores[j]),
                    )
                })
                .collect();
            Ok(Selection {
                mode: if mode == "probe" { "probe" } else { "group" },
                target: Some(target.to_string()),
                chosen,
            })
        }
    }
}

fn interval_json(i: &Interval) -> Json {
    json!({ "mean": i.mean, "low": i.low, "high": i.high })
}

fn estimates_json(e: &Estimates, classes: &[String]) -> Json {
    let probability: serde_json::Map<String, Json> = classes
        .iter()
        .zip(&e.probability)
        .map(|(c, i)| (c.clone(), interval_json(i)))
        .collect();
    json!({
        "probability_change": probability,
        "flip_rate": interval_json(&e.flip_rate),
        "accuracy_change": interval_json(&e.accuracy),
    })
}

fn comparison_json(rows: usize, c: &Comparison, classes: &[String]) -> Json {
    json!({
        "rows": rows,
        "concept": estimates_json(&c.concept, classes),
        "control": estimates_json(&c.control, classes),
        "difference": estimates_json(&c.difference, classes),
    })
}

impl Step for Bias {
    step_info!(kind: "bias", version: 1, about: "which SAE concepts a linear probe leans on: class probability changes, flip rate and accuracy change when a concept's code is scaled, against frequency-matched random latents, with bootstrap intervals");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::DEVICE
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let dev = device(ctx.device)?;
        let sae = load_model(&ctx.input("sae")?.path, &dev)?;
        let (m, data_in) = open_sae_matrix(ctx, "data", sae.d)?;
        let probe_in = ctx.input("probe")?;
        let saved = load_probe(&probe_in.path, &probe_in.from)?;
        if saved.dim() != m.cols() {
            bail!(
                "`probe` (from {}) classifies rows of {} dimensions but `data` (from {}) and the SAE have {}: a probe from other data; train the `linear_probe` on embeddings of this SAE's space",
                probe_in.from,
                saved.dim(),
                data_in.from,
                m.cols()
            );
        }
        let probe = HostProbe::new(
            &saved.weight,
            &saved.bias,
            &saved.mean,
            saved.scale,
            saved.norm_eps,
        )
        .map_err(|e| anyhow!("`probe` (from {}): {e}", probe_in.from))?;
        let classes = saved.classes.clone();
        let labels_in = ctx.input("labels")?;
        let labels = read_lines(&labels_in.path)?;
        if labels.len() != m.rows() {
            bail!(
                "`labels` (from {}) has {} labels but `data` (from {}) has {} rows; they must match one to one",
                labels_in.from,
                labels.len(),
                data_in.from,
                m.rows()
            );
        }
        let truth = class_indices(&labels, &classes, &labels_in.from, &probe_in.from)?;
        let groups = match ctx.inputs.get("groups") {
            Some(g) => {
                let lines = read_lines(&g.path)?;
                if lines.len() != m.rows() {
                    bail!(
                        "`groups` (from {}) has {} values but `data` (from {}) has {} rows; they must match one to one",
                        g.from,
                        lines.len(),
                        data_in.from,
                        m.rows()
                    );
                }
                Some(lines)
            }
            None => None,
        };
        let names = match ctx.inputs.get("names") {
            Some(n) => Some(read_names(&n.path, &n.from, sae.n)?),
            None => None,
        };
        let scales: Vec<f64> = match ctx.params.get("scales") {
            Some(Value::List(items)) => items.iter().filter_map(Value::as_float).collect(),
            _ => vec![0.0],
        };
        let seed = ctx.int("seed")? as u64;
        let n_controls = ctx.usize("controls")?;
        let opts = BootstrapOptions {
            resamples: ctx.usize("bootstrap")?,
            confidence: CONFIDENCE,
            seed,
        };

        let (d, n_lat, rows) = (sae.d, sae.n, m.rows());
        let bar = ctx.progress.bar(3, &format!("bias {}", ctx.instance));
        let columns = code_columns(&sae, &m, ctx.usize("batch_size")?, &dev)?;
        bar.set_position(1);
        let frequency: Vec<f64> = columns
            .iter()
            .map(|c| c.len() as f64 / rows as f64)
            .collect();
        let decoder: Vec<f32> = sae.decoder.flatten_all()?.to_vec1()?;
        let decoder = MatRef::new(&decoder, n_lat, d)?;
        let selection = select_concepts(
            ctx,
            names.as_deref(),
            n_lat,
            decoder,
            &probe,
            &classes,
            &columns,
            groups.as_deref(),
        )?;
        if selection.chosen.is_empty() {
            bail!(
                "no latent of the SAE fires on `data` (from {}): nothing to test",
                data_in.from
            );
        }

        let x = MatRef::new(m.data(), rows, d)?;
        let base = Baseline::new(&probe, x, &truth).map_err(|e| anyhow!("{e}"))?;
        let mut excluded = vec![false; n_lat];
        for (c, _) in &selection.chosen {
            excluded[c.latent] = true;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(CONTROL_STREAM);
        let controls: Vec<Vec<usize>> = selection
            .chosen
            .iter()
            .map(|(c, _)| matched_controls(&frequency, c.latent, &excluded, n_controls, &mut rng))
            .collect();
        if let Some(i) = controls.iter().position(Vec::is_empty) {
            bail!(
                "no latent other than the concepts fires on `data` (from {}): concept `{}` has no control",
                data_in.from,
                selection.chosen[i].0.name
            );
        }

        // Every intervention once: (latent, scale index) → its row changes.
        let mut changes: HashMap<(usize, usize), RowChanges> = HashMap::new();
        let sae_scale = sae.standardization.scale as f64;
        for ((c, _), ctrl) in selection.chosen.iter().zip(&controls) {
            for latent in std::iter::once(c.latent).chain(ctrl.iter().copied()) {
                for (s, &factor) in scales.iter().enumerate() {
                    if let std::collections::hash_map::Entry::Vacant(e) = changes.entry((latent, s))
                    {
                        e.insert(
                            intervene(
                                &probe,
                                &base,
                                x,
                                decoder.row(latent),
                                sae_scale,
                                &columns[latent],
                                factor,
                            )
                            .map_err(|e| anyhow!("{e}"))?,
                        );
                    }
                }
            }
        }
        bar.set_position(2);

        // Populations: all rows, then each group (sorted by value).
        let all: Vec<u32> = (0..rows as u32).collect();
        let group_names: Vec<String> = groups
            .as_ref()
            .map(|g| {
                g.iter()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        let group_rows = groups
            .as_ref()
            .map(|g| rows_by_group(g, &group_names))
            .unwrap_or_default();
        let populations: Vec<&[u32]> = std::iter::once(all.as_slice())
            .chain(group_rows.iter().map(Vec::as_slice))
            .collect();
        let comparands: Vec<Comparand> = selection
            .chosen
            .iter()
            .zip(&controls)
            .flat_map(|((c, _), ctrl)| {
                let changes = &changes;
                (0..scales.len()).map(move |s| Comparand {
                    concept: &changes[&(c.latent, s)],
                    controls: ctrl.iter().map(|&j| &changes[&(j, s)]).collect(),
                })
            })
            .collect();
        let results: Vec<Vec<Comparison>> = populations
            .iter()
            .enumerate()
            .map(|(p, pop)| {
                bootstrap(pop, rows, &comparands, &opts, CONTROL_STREAM + 1 + p as u64)
                    .map_err(|e| anyhow!("{e}"))
            })
            .collect::<Result<_>>()?;
        bar.finish_and_clear();

        // The report.
        let baseline_all = base.summary(&all);
        let baseline_json = |s: &crate::analysis::bias::BaselineSummary| {
            let p: serde_json::Map<String, Json> = classes
                .iter()
                .zip(&s.probability)
                .map(|(c, v)| (c.clone(), json!(v)))
                .collect();
            json!({ "rows": s.rows, "accuracy": s.accuracy, "probability": p })
        };
        let mut group_baselines = serde_json::Map::new();
        for (g, r) in group_names.iter().zip(&group_rows) {
            group_baselines.insert(g.clone(), baseline_json(&base.summary(r)));
        }
        let mut concept_entries = Vec::new();
        let mut metrics = Metrics::new();
        let mut largest: Option<(f64, usize, usize, usize)> = None; // (|Δp|, concept, scale, class)
        let mut largest_flip: Option<(f64, usize, usize)> = None;
        let mut flips_beyond = 0usize;
        for (i, ((c, score), ctrl)) in selection.chosen.iter().zip(&controls).enumerate() {
            let mut effects = Vec::new();
            for (s, &factor) in scales.iter().enumerate() {
                let k = i * scales.len() + s;
                let overall = &results[0][k];
                for (class, iv) in overall.concept.probability.iter().enumerate() {
                    if largest.is_none_or(|l| iv.mean.abs() > l.0) {
                        largest = Some((iv.mean.abs(), i, s, class));
                    }
                }
                let flip = overall.concept.flip_rate.mean;
                if largest_flip.is_none_or(|l| flip > l.0) {
                    largest_flip = Some((flip, i, s));
                }
                let diff = overall.difference.flip_rate;
                if diff.low > 0.0 || diff.high < 0.0 {
                    flips_beyond += 1;
                }
                let mut per_group = serde_json::Map::new();
                for (g, name) in group_names.iter().enumerate() {
                    per_group.insert(
                        name.clone(),
                        comparison_json(group_rows[g].len(), &results[g + 1][k], &classes),
                    );
                }
                effects.push(json!({
                    "scale": factor,
                    "all": comparison_json(rows, overall, &classes),
                    "groups": per_group,
                }));
            }
            let control_list: Vec<Json> = ctrl
                .iter()
                .map(|&j| {
                    json!({ "latent": j, "name": name_of(j, names.as_deref()), "frequency": frequency[j] })
                })
                .collect();
            concept_entries.push(json!({
                "latent": c.latent,
                "name": c.name,
                "frequency": frequency[c.latent],
                "score": score,
                "controls": control_list,
                "effects": effects,
            }));
        }
        let report = json!({
            "rows": rows,
            "classes": classes,
            "probe": probe_in.from,
            "scales": scales,
            "bootstrap": opts.resamples,
            "confidence": CONFIDENCE,
            "controls_per_concept": n_controls,
            "control_pool": crate::analysis::bias::CONTROL_POOL_FACTOR * n_controls,
            "seed": seed,
            "selection": { "mode": selection.mode, "target": selection.target },
            "groups": group_names,
            "baseline": { "all": baseline_json(&baseline_all), "groups": group_baselines },
            "concepts": concept_entries,
        });
        std::fs::write(
            ctx.output_path("report"),
            serde_json::to_vec_pretty(&report)?,
        )?;

        metrics.insert("rows".into(), rows.into());
        metrics.insert("concepts".into(), selection.chosen.len().into());
        metrics.insert("accuracy".into(), baseline_all.accuracy.into());
        if let Some((_, i, s, class)) = largest {
            let k = i * scales.len() + s;
            let r = &results[0][k];
            metrics.insert(
                "largest_shift".into(),
                r.concept.probability[class].mean.into(),
            );
            metrics.insert(
                "largest_shift_control".into(),
                r.control.probability[class].mean.into(),
            );
            metrics.insert("largest_shift_class".into(), classes[class].clone().into());
            metrics.insert(
                "largest_shift_concept".into(),
                selection.chosen[i].0.name.clone().into(),
            );
            metrics.insert("largest_shift_scale".into(), scales[s].into());
        }
        if let Some((flip, i, _)) = largest_flip {
            metrics.insert("largest_flip_rate".into(), flip.into());
            metrics.insert(
                "largest_flip_concept".into(),
                selection.chosen[i].0.name.clone().into(),
            );
        }
        metrics.insert("flips_beyond_control".into(), flips_beyond.into());
        Ok(metrics)
    }
}
