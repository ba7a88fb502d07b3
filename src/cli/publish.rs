//! `msae publish`: an SAE of the store as a folder ready to upload to a Hugging Face model
//! repository as it is: the SAELens layout (`cfg.json`, `sae_weights.safetensors`) and a model
//! card (`README.md`) whose metadata header says what the SAE is, how it was trained, on which
//! data, and how the experiment's evaluation steps scored it.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};

use super::args::{Global, PublishArgs};
use super::shared::{find_instance, load, open_read};
use crate::experiment::{Instance, Plan};
use crate::interop::model_card::Card;
use crate::interop::saelens::{self, Target};
use crate::runner::plan::{plan, PlanEntry, PlanStatus};
use crate::sae::{Arch, Sae};
use crate::store::{Record, Store};

/// Parameters of the step that made the training data that say where it came from.
const ORIGIN_PARAMS: &[&str] = &[
    "dataset",
    "files",
    "revision",
    "model",
    "model_revision",
    "source",
    "path",
    "split",
    "holdout",
    "tower",
    "normalize",
    "limit",
];

pub fn publish(g: &Global, args: &PublishArgs) -> Result<ExitCode> {
    let (exp, p) = load(&args.experiment)?;
    let name = args.instance.as_str();
    let inst = find_instance(&exp, &p, name)?;
    let store = open_read(g, "msae publish")?;
    let entries = plan(&exp, &p, &store)?;
    let record = cached_record(&entries, &store, name)?.ok_or_else(|| {
        let status = entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| format!("{:?}", e.status).to_lowercase())
            .unwrap_or_default();
        anyhow!(
            "`{name}` has not been computed yet (it is {status}); run `msae run {}` first",
            args.experiment.display()
        )
    })?;
    let Some(model) = record.outputs.get("model") else {
        bail!(
            "`{name}` is an instance of a `{}` step, which makes no SAE model; publish an instance of a `train` or `import_sae` step",
            inst.kind.kind()
        );
    };
    let sae = Sae::load(&store.objects.path(&model.hash), &candle_core::Device::Cpu)
        .map_err(|e| anyhow!("output `model` of `{name}` is not an SAE model: {e}"))?;
    let data = training_data(&p, inst, &record, &entries, &store)?;
    let upstream_model = data
        .as_ref()
        .and_then(|d| d.get("model"))
        .and_then(Json::as_str)
        .map(str::to_string);
    let dataset = data
        .as_ref()
        .and_then(|d| d.get("dataset"))
        .and_then(Json::as_str)
        .map(str::to_string);
    let provenance = saelens::Provenance {
        model_name: args.model_name.clone().or_else(|| upstream_model.clone()),
        hook_name: args.hook_name.clone(),
        dataset_path: dataset.clone(),
    };
    std::fs::create_dir_all(&args.to)
        .with_context(|| format!("cannot create {}", args.to.display()))?;
    let target = saelens::export(&sae, &args.to, &provenance, args.level)?;
    let metrics = downstream_metrics(&p, inst, &entries, &store)?;
    let card = card(&exp.name, inst, &record, &sae, &target, data, metrics);
    let card = Card {
        datasets: dataset.into_iter().collect(),
        base_model: upstream_model.filter(|m| looks_like_hub_id(&p, m)),
        ..card
    };
    let readme = args.to.join("README.md");
    std::fs::write(&readme, card.render())
        .with_context(|| format!("cannot write {}", readme.display()))?;
    println!("exported {}", target.describe(&sae));
    println!(
        "wrote {}, {} and {}",
        args.to.join("cfg.json").display(),
        args.to.join("sae_weights.safetensors").display(),
        readme.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The record of `name` when its result is up to date.
fn cached_record(entries: &[PlanEntry], store: &Store, name: &str) -> Result<Option<Record>> {
    let Some(PlanEntry {
        status: PlanStatus::Cached,
        key: Some(key),
        ..
    }) = entries.iter().find(|e| e.name == name)
    else {
        return Ok(None);
    };
    store.index.record(key)
}

/// Where the SAE's training matrix came from: its content hash, the instance and output that
/// made it, that step's kind and the parameters that name its source. `None` for an imported
/// SAE (it has no training matrix in the experiment).
fn training_data(
    p: &Plan,
    inst: &Instance,
    record: &Record,
    entries: &[PlanEntry],
    store: &Store,
) -> Result<Option<Json>> {
    let (Some(input), Some(hash)) = (
        inst.inputs.get("data"),
        record.components.inputs.get("data"),
    ) else {
        return Ok(None);
    };
    let up = &p.instances[input.instance];
    let mut out = json!({
        "hash": hash,
        "from": format!("{}.{}", up.name, input.output),
        "kind": up.kind.kind(),
    });
    for key in ORIGIN_PARAMS {
        if let Some(v) = up.params.get(*key) {
            out[*key] = v.canonical();
        }
    }
    // A file the step read (an imported matrix): the path as written and its content hash.
    if let Some(up_record) = cached_record(entries, store, &up.name)? {
        for (param, file) in &up_record.components.files {
            if !file.path.is_empty() {
                out[param.as_str()] = json!(file.path);
                out[format!("{param}_hash")] = json!(file.hash);
            }
        }
    }
    Ok(Some(out))
}

/// The metrics of every finished instance that reads this SAE directly.
fn downstream_metrics(
    p: &Plan,
    inst: &Instance,
    entries: &[PlanEntry],
    store: &Store,
) -> Result<Vec<Json>> {
    let mut out = Vec::new();
    for down in &p.instances {
        let Some((param, _)) = down.inputs.iter().find(|(_, i)| i.instance == inst.index) else {
            continue;
        };
        let Some(r) = cached_record(entries, store, &down.name)? else {
            continue;
        };
        let data: Vec<String> = down
            .inputs
            .iter()
            .filter(|(_, i)| i.instance != inst.index)
            .map(|(k, i)| format!("{k} = {}.{}", p.instances[i.instance].name, i.output))
            .collect();
        out.push(json!({
            "instance": down.name,
            "kind": down.kind.kind(),
            "reads_sae_as": param,
            "inputs": data,
            "key": r.key,
            "values": r.metrics,
        }));
    }
    Ok(out)
}

/// Whether `model` names a Hugging Face repository rather than a folder beside the experiment.
fn looks_like_hub_id(p: &Plan, model: &str) -> bool {
    let parts: Vec<&str> = model.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|s| !s.is_empty() && !s.starts_with('.'))
        && !p.base_dir.join(model).exists()
}

fn arch_tag(sae: &Sae) -> &'static str {
    match sae.config.arch {
        Arch::Relu => "relu",
        Arch::Topk => "topk",
        Arch::Batchtopk => "batchtopk",
        Arch::Jumprelu => "jumprelu",
        Arch::Msae => "matryoshka",
    }
}

fn card(
    experiment: &str,
    inst: &Instance,
    record: &Record,
    sae: &Sae,
    target: &Target,
    data: Option<Json>,
    metrics: Vec<Json>,
) -> Card {
    let arch = format!("{:?}", sae.config.arch).to_lowercase();
    let mut fields = json!({
        "version": record.msae_version,
        "published_with": env!("CARGO_PKG_VERSION"),
        "experiment": experiment,
        "instance": inst.name,
        "step": inst.step,
        "kind": inst.kind.kind(),
        "key": record.key,
        "architecture": arch,
        "saelens_architecture": target.architecture,
        "d_in": sae.d,
        "d_sae": sae.n,
        "standardisation": {"mean": "folded into the weights", "scale": sae.standardization.scale, "target_norm": sae.target_norm},
        "parameters": record.components.params,
        "evaluations": metrics,
    });
    if let Some(k) = target.k {
        fields["k"] = json!(k);
    }
    if let Some(l) = target.level {
        fields["matryoshka_level"] = json!(l);
        fields["nesting_levels"] = json!(sae.levels);
    }
    if let Some(t) = sae.batchtopk_threshold {
        fields["batchtopk_threshold"] = json!(t);
    }
    if let Some(d) = &data {
        fields["training_data"] = d.clone();
    }
    if let Some(source) = record.metrics.get("source") {
        fields["imported_from"] = source.clone();
    }
    Card {
        library_name: "saelens".into(),
        tags: vec![
            "sparse-autoencoder".into(),
            "saelens".into(),
            "msae".into(),
            arch_tag(sae).into(),
        ],
        datasets: Vec::new(),
        base_model: None,
        body: body(
            experiment,
            inst,
            record,
            sae,
            target,
            data.as_ref(),
            &fields["evaluations"],
        ),
        fields: vec![("msae".into(), fields)],
    }
}

fn body(
    experiment: &str,
    inst: &Instance,
    record: &Record,
    sae: &Sae,
    target: &Target,
    data: Option<&Json>,
    evaluations: &Json,
) -> String {
    let mut b = format!(
        "# {experiment}: {}\n\nA sparse autoencoder ({}) with {} latents on {}-dimensional inputs, made by msae {} (instance `{}` of experiment `{experiment}`, key `{}`). The files are in the SAELens layout: {}.\n\n",
        inst.name,
        arch_tag(sae),
        sae.n,
        sae.d,
        record.msae_version,
        inst.name,
        record.key,
        target.describe(sae),
    );
    b += "It reads raw inputs: msae's standardisation `(x − μ)·s` is folded into `W_enc`, `W_dec` and `b_dec`, so SAELens needs no normalisation (`normalize_activations = \"none\"`).\n\n";
    b += "```python\nfrom sae_lens import SAE\n\nsae = SAE.load_from_disk(\"path/to/this/folder\")\ncodes = sae.encode(x)\nreconstruction = sae.decode(codes)\n```\n\n";
    b += "msae reads the folder back with an `import_sae` step (`folder = \"…\"`, or `repo` + `folder` on the hub).\n\n";
    if let Some(d) = data {
        b += &format!(
            "## Training data\n\nThe matrix `{}` (a `{}` step), content hash (BLAKE3) `{}`.",
            d["from"].as_str().unwrap_or("?"),
            d["kind"].as_str().unwrap_or("?"),
            d["hash"].as_str().unwrap_or("?")
        );
        for key in ["dataset", "model", "split", "path"] {
            if let Some(v) = d.get(key) {
                b += &format!(
                    " {key}: `{}`.",
                    v.as_str().map(str::to_string).unwrap_or(v.to_string())
                );
            }
        }
        b += "\n\n";
    }
    b += "## Training parameters\n\n| parameter | value |\n|---|---|\n";
    for (k, v) in &record.components.params {
        b += &format!("| {k} | {} |\n", cell(v));
    }
    if let Some(evals) = evaluations.as_array().filter(|e| !e.is_empty()) {
        b += "\n## Evaluations\n";
        for e in evals {
            b += &format!(
                "\n### `{}` ({})\n\n| metric | value |\n|---|---|\n",
                e["instance"].as_str().unwrap_or("?"),
                e["kind"].as_str().unwrap_or("?")
            );
            if let Some(values) = e["values"].as_object() {
                for (k, v) in values {
                    b += &format!("| {k} | {} |\n", cell(v));
                }
            }
        }
    }
    b
}

/// A table cell: strings as they are, other values as JSON, pipes escaped.
fn cell(v: &Json) -> String {
    let text = match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.replace('|', "\\|")
}
