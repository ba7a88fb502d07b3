//! `msae export`: results out of the store, either as stored or as a SAELens folder.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};

use super::args::{ExportArgs, ExportFormat, Global};
use super::shared::{find_instance, load, open_read};
use crate::interop::saelens;
use crate::runner::plan::{plan, PlanStatus};

pub fn export(g: &Global, args: &ExportArgs) -> Result<ExitCode> {
    let (exp, p) = load(&args.experiment)?;
    let name = args.instance.as_str();
    let inst = find_instance(&exp, &p, name)?;
    let output = match &args.output {
        Some(o) => o.clone(),
        None => inst.kind.outputs()[0].name.to_string(),
    };
    if args.level.is_some() && args.format != ExportFormat::Saelens {
        bail!("--level picks the Matryoshka level of a SAELens export (--format saelens)");
    }
    let store = open_read(g, "msae export")?;
    let entry = plan(&exp, &p, &store)?
        .into_iter()
        .find(|e| e.name == name)
        .expect("instance of the plan");
    let (PlanStatus::Cached, Some(key)) = (&entry.status, &entry.key) else {
        bail!(
            "`{name}` has no up-to-date result ({:?}); run `msae run {}` first",
            entry.status,
            args.experiment.display()
        );
    };
    let record = store
        .index
        .record(key)?
        .ok_or_else(|| anyhow!("the record of `{name}` disappeared from the store"))?;
    let artifact = record.outputs.get(&output).ok_or_else(|| {
        let have: Vec<&str> = record.outputs.keys().map(String::as_str).collect();
        anyhow!(
            "`{name}` has no output `{output}` (it has: {})",
            have.join(", ")
        )
    })?;
    let source = store.objects.path(&artifact.hash);
    std::fs::create_dir_all(&args.to)
        .with_context(|| format!("cannot create {}", args.to.display()))?;
    match args.format {
        ExportFormat::Raw => {
            let dest = match file_extension(&source) {
                Some(ext) => args.to.join(format!("{output}.{ext}")),
                None => args.to.join(&output),
            };
            std::fs::copy(&source, &dest)
                .with_context(|| format!("cannot copy to {}", dest.display()))?;
            println!("wrote {}", dest.display());
        }
        ExportFormat::Saelens => {
            let sae = crate::sae::Sae::load(&source, &candle_core::Device::Cpu)
                .map_err(|e| anyhow!("output `{output}` of `{name}` is not an SAE model: {e}"))?;
            let provenance = saelens::Provenance {
                model_name: args.model_name.clone(),
                hook_name: args.hook_name.clone(),
                dataset_path: None,
            };
            let target = saelens::export(&sae, &args.to, &provenance, args.level)?;
            println!("exported {}", target.describe(&sae));
            println!(
                "wrote {} and {}",
                args.to.join("cfg.json").display(),
                args.to.join("sae_weights.safetensors").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The extension of a stored file's format, read from its first bytes: NumPy's magic string,
/// a safetensors header (its length, then a JSON object), a tar archive, a JSON document, or
/// plain text.
fn file_extension(path: &std::path::Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    let len = std::fs::metadata(path).ok()?.len();
    if head.starts_with(b"\x93NUMPY") {
        return Some("npy");
    }
    // A tar archive (e.g. `embed`'s thumbnails): the ustar magic at offset 257 of its first
    // 512-byte header.
    if head.len() >= 512 && head[257..262] == *b"ustar" {
        return Some("tar");
    }
    if head.len() > 8 && head[8] == b'{' {
        let header = u64::from_le_bytes(head[..8].try_into().unwrap());
        if header.checked_add(8).is_some_and(|end| end <= len) {
            return Some("safetensors");
        }
    }
    // Text, possibly cut inside a character at the end of the first bytes.
    let text = match std::str::from_utf8(&head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    if text.trim_start().starts_with(['{', '[']) {
        let bytes = std::fs::read(path).ok()?;
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() {
            return Some("json");
        }
    }
    Some("txt")
}
