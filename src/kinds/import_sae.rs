//! `import_sae`: brings an SAE from elsewhere into the store as an msae model, so every downstream
//! step (extract, score_topk, name, align, linear_probe, …) works on it exactly as on a trained
//! one. Two formats: a checkpoint of the reference code (a `.pth` file, docs/reference.md §4.9),
//! given as `path` or `file`, and a SAELens folder (`cfg.json` + `sae_weights.safetensors`),
//! given as `folder` (docs/interop.md).
//!
//! Either comes from a local path (its content enters the key) or from a Hugging Face model
//! repository (repository, file or folder, and revision enter the key; pin a commit hash as the
//! revision for reproducible keys — a branch name keeps its first resolution cached).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::interop::saelens_read::{self, Folder};
use crate::interop::{hub, pth, reference_name};
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Metrics, Resource, Step, StepContext};

pub struct ImportSae;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "path",
        ty: ParamType::Str,
        role: Role::File,
        default: Default::Absent,
        gridable: true,
        doc: "a local reference checkpoint (.pth), named as the reference names them",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "repo",
        ty: ParamType::Str,
        default: Default::Absent,
        gridable: true,
        doc: "a Hugging Face model repository holding the checkpoint (instead of `path`)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "file",
        ty: ParamType::Str,
        default: Default::Absent,
        gridable: true,
        doc: "the checkpoint's path inside `repo`",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "folder",
        ty: ParamType::Str,
        role: Role::Locator,
        default: Default::Absent,
        gridable: true,
        doc: "a SAELens SAE: a folder with cfg.json and sae_weights.safetensors, local (relative to the experiment file) or, with `repo`, inside the repository (\".\" for its root)",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "norm_scaling_factor",
        ty: ParamType::Float,
        default: Default::Absent,
        min: Some(0.0),
        doc: "SAELens folders with normalize_activations = \"expected_average_only_in\": the factor rows are scaled by (SAELens lists it with its releases); a training checkpoint's activation_scaler.json gives it too",
        ..ParamSpec::BASE
    },
    ParamSpec {
        name: "revision",
        ty: ParamType::Str,
        default: Default::Str("main"),
        doc: "branch, tag or commit of `repo`",
        ..ParamSpec::BASE
    },
];

static OUTPUTS: &[OutputSpec] = &[OutputSpec {
    name: "model",
    optional: false,
    doc: "the SAE as msae stores trained ones: weights, μ, s, target norm, activation counts, config (safetensors)",
}];

impl Step for ImportSae {
    step_info!(kind: "import_sae", version: 1, about: "import an SAE (a reference .pth checkpoint or a SAELens folder) from a local path or a Hugging Face repository");

    fn resources(&self, params: &BTreeMap<String, Value>, base: &Path) -> Result<Vec<Resource>> {
        let text = |name: &str| params.get(name).and_then(Value::as_str);
        let Some(folder) = text("folder") else {
            return Ok(Vec::new());
        };
        // (`path` is a file parameter, checked when the step runs.)
        if text("file").is_some() {
            bail!("`folder` names a SAELens folder; `path` and `file` name reference checkpoints: give one of them");
        }
        // A hub folder is fetched when the step runs: repository and revision are keyed
        // parameters, the folder inside it is its identity here.
        if let Some(repo) = text("repo") {
            return Ok(vec![Resource {
                name: "saelens".into(),
                described: format!("{repo}:{folder}"),
                files: Vec::new(),
                identities: vec![("folder".into(), hub_folder(folder).to_string())],
            }]);
        }
        let dir = base.join(folder);
        let found = Folder::local(&dir)?;
        let mut files = vec![
            (saelens_read::CFG.to_string(), found.cfg),
            (saelens_read::WEIGHTS.to_string(), found.weights),
        ];
        if let Some(scaler) = found.scaler {
            files.push((saelens_read::SCALER.to_string(), scaler));
        }
        Ok(vec![Resource {
            name: "saelens".into(),
            described: folder.to_string(),
            files,
            identities: Vec::new(),
        }])
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        if ctx.params.contains_key("folder") {
            return import_saelens(ctx);
        }
        if ctx.params.contains_key("norm_scaling_factor") {
            bail!("`norm_scaling_factor` belongs to SAELens folders (`folder`), not to reference checkpoints");
        }
        let repo = ctx.params.get("repo").and_then(|v| v.as_str());
        let file = ctx.params.get("file").and_then(|v| v.as_str());
        let (path, name, source) = match (ctx.file("path"), repo, file) {
            (Some(p), None, None) => {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (p.to_path_buf(), name, p.display().to_string())
            }
            (None, Some(repo), Some(file)) => {
                let revision = ctx.str("revision")?;
                let fetched = hub::fetch(repo, file, revision)?;
                let source = format!("{repo}@{}", fetched.commit.as_deref().unwrap_or(revision));
                (fetched.path, file.to_string(), source)
            }
            (Some(_), _, _) => bail!("give either `path` or `repo` + `file`, not both"),
            (None, Some(_), None) => {
                bail!("`repo` needs `file`: the checkpoint's path inside the repository")
            }
            (None, None, Some(_)) => {
                bail!("`file` needs `repo`: the Hugging Face repository that holds it")
            }
            (None, None, None) => bail!(
                "give the SAE as `path` (a local reference checkpoint), `repo` + `file` (one on Hugging Face) or `folder` (a SAELens folder, local or with `repo`)"
            ),
        };
        let parsed = reference_name::parse(&name).map_err(anyhow::Error::msg)?;
        let checkpoint = pth::read(&path)?;
        let sae = pth::to_sae(&checkpoint, &parsed, &path, &candle_core::Device::Cpu)?;
        sae.save(&ctx.output_path("model"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut metrics = Metrics::new();
        metrics.insert(
            "arch".into(),
            format!("{:?}", parsed.arch).to_lowercase().into(),
        );
        metrics.insert("n_latents".into(), sae.n.into());
        metrics.insert("d".into(), sae.d.into());
        if let Some(k) = parsed.k {
            metrics.insert("k".into(), k.into());
        }
        metrics.insert("scale".into(), checkpoint.scaling_factor.into());
        metrics.insert("target_norm".into(), checkpoint.target_norm.into());
        metrics.insert("source".into(), source.into());
        Ok(metrics)
    }
}

/// A folder inside a repository as the hub names its files: no leading `./`, none for the root.
fn hub_folder(folder: &str) -> &str {
    let f = folder.trim_matches('/');
    let f = f.strip_prefix("./").unwrap_or(f);
    if f == "." {
        ""
    } else {
        f
    }
}

/// The files of the SAELens folder this instance names, fetching a hub folder now.
fn saelens_files(ctx: &StepContext) -> Result<(Folder, String)> {
    let r = ctx
        .resources
        .get("saelens")
        .context("the SAELens folder was not located")?;
    let Some(repo) = ctx.params.get("repo").and_then(Value::as_str) else {
        let file = |name: &str| {
            r.files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p.clone())
        };
        let folder = Folder {
            cfg: file(saelens_read::CFG).context("cfg.json was not located")?,
            weights: file(saelens_read::WEIGHTS).context("the weights were not located")?,
            scaler: file(saelens_read::SCALER),
        };
        return Ok((folder, r.described.clone()));
    };
    let revision = ctx.str("revision")?;
    let folder = hub_folder(ctx.str("folder")?);
    let in_repo = |name: &str| {
        if folder.is_empty() {
            name.to_string()
        } else {
            format!("{folder}/{name}")
        }
    };
    let cfg = hub::fetch(repo, &in_repo(saelens_read::CFG), revision)?;
    let weights = hub::fetch(repo, &in_repo(saelens_read::WEIGHTS), revision)?;
    let scaler = hub::fetch_optional(
        hub::Kind::Model,
        repo,
        &in_repo(saelens_read::SCALER),
        revision,
    )?;
    let commit = cfg.commit.clone().unwrap_or_else(|| revision.to_string());
    let source = if folder.is_empty() {
        format!("{repo}@{commit}")
    } else {
        format!("{repo}@{commit}:{folder}")
    };
    Ok((
        Folder {
            cfg: cfg.path,
            weights: weights.path,
            scaler: scaler.map(|f| f.path),
        },
        source,
    ))
}

fn import_saelens(ctx: &mut StepContext) -> Result<Metrics> {
    if ctx.file("path").is_some() {
        bail!("`folder` names a SAELens folder; `path` and `file` name reference checkpoints: give one of them");
    }
    let (folder, source) = saelens_files(ctx)?;
    let factor = ctx
        .params
        .get("norm_scaling_factor")
        .and_then(Value::as_float);
    let imported = saelens_read::read(&folder, factor, &candle_core::Device::Cpu)?;
    let sae = &imported.sae;
    sae.save(&ctx.output_path("model"))
        .map_err(|e| anyhow!("{e}"))?;
    let mut metrics = Metrics::new();
    metrics.insert(
        "arch".into(),
        format!("{:?}", sae.config.arch).to_lowercase().into(),
    );
    metrics.insert("n_latents".into(), sae.n.into());
    metrics.insert("d".into(), sae.d.into());
    metrics.insert("scale".into(), sae.standardization.scale.into());
    metrics.insert("target_norm".into(), sae.target_norm.into());
    metrics.insert("source".into(), source.into());
    let k = match sae.config.arch {
        crate::sae::Arch::Topk | crate::sae::Arch::Batchtopk => Some(sae.config.k()),
        crate::sae::Arch::Msae => sae.levels.first().copied(),
        _ => None,
    };
    if let Some(k) = k {
        metrics.insert("k".into(), k.into());
    }
    for (k, v) in imported.info {
        metrics.entry(k).or_insert(v);
    }
    Ok(metrics)
}
