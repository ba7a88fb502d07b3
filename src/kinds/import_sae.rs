//! `import_sae`: brings an SAE checkpoint of the reference code (a `.pth` file,
//! docs/reference.md §4.9) into the store as an msae model, so every downstream step (extract,
//! score_topk, name, align, linear_probe, …) works on it exactly as on a trained one.
//!
//! The checkpoint comes from a local path (its content enters the key) or from a Hugging Face
//! model repository (repository, file and revision enter the key; pin a commit hash as the
//! revision for reproducible keys — a branch name keeps its first resolution cached).

use anyhow::{bail, Result};

use crate::interop::{hub, pth, reference_name};
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::{Metrics, Step, StepContext};

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
    step_info!(kind: "import_sae", version: 1, about: "import a reference .pth SAE checkpoint from a local path or a Hugging Face repository");

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
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
                "give the checkpoint as `path` (a local file) or as `repo` + `file` (Hugging Face)"
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
