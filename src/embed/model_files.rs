//! Finding a pretrained encoder's files: a local folder, or a Hugging Face model repository
//! through the hub cache.
//!
//! `model` names a folder when one exists at that path (relative to the experiment file), else a
//! hub repository id (`org/name`) at `revision`. Either way the result is the same list of files
//! under their names inside the model (`config.json`, `model.safetensors`, `tokenizer.json`,
//! `1_Pooling/config.json`, …), so a folder and the hub copy of the same model give the same key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::interop::hub::{self, Kind};

/// Weight files in order of preference.
const WEIGHTS: &[&str] = &["model.safetensors", "pytorch_model.bin"];
/// Files read when present: tokenizer and sentence-transformers pipeline settings.
const OPTIONAL: &[&str] = &[
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// A located model: its files by name, and where they came from.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The folder as written, or `org/name@commit` for a hub model.
    pub described: String,
    pub files: BTreeMap<String, PathBuf>,
}

impl ModelFiles {
    pub fn get(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    /// The weight file (safetensors preferred).
    pub fn weights(&self) -> Result<&Path> {
        WEIGHTS
            .iter()
            .find_map(|w| self.get(w))
            .ok_or_else(|| anyhow::anyhow!("model {} has no weight file", self.described))
    }

    pub fn config_json(&self) -> Result<serde_json::Value> {
        read_json(
            self.get("config.json")
                .expect("config.json is always located"),
        )
    }
}

pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))
}

/// Whether `model` could be a hub repository id rather than a path.
fn looks_like_repo_id(model: &str) -> bool {
    let parts: Vec<&str> = model.split('/').collect();
    parts.len() <= 2
        && !model.starts_with('.')
        && !model.starts_with('/')
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Locates `model` (a folder, or a hub repository at `revision`).
pub fn locate(model: &str, revision: &str, base: &Path) -> Result<ModelFiles> {
    let folder = if Path::new(model).is_absolute() {
        PathBuf::from(model)
    } else {
        base.join(model)
    };
    if folder.is_dir() {
        return from_folder(model, &folder);
    }
    if !looks_like_repo_id(model) {
        bail!(
            "model `{model}`: there is no folder {} and `{model}` is not a Hugging Face repository id (`org/name`)",
            folder.display()
        );
    }
    from_hub(model, revision, &folder)
}

fn from_folder(model: &str, folder: &Path) -> Result<ModelFiles> {
    let mut files = BTreeMap::new();
    let config = folder.join("config.json");
    if !config.is_file() {
        bail!(
            "model folder {} has no config.json; a model folder holds config.json, the weights (model.safetensors) and, for text, tokenizer.json",
            folder.display()
        );
    }
    files.insert("config.json".to_string(), config);
    let Some(weights) = WEIGHTS.iter().find(|w| folder.join(w).is_file()) else {
        bail!(
            "model folder {} has no weights: expected one of {}",
            folder.display(),
            WEIGHTS.join(", ")
        );
    };
    files.insert(weights.to_string(), folder.join(weights));
    for name in OPTIONAL {
        let p = folder.join(name);
        if p.is_file() {
            files.insert(name.to_string(), p);
        }
    }
    Ok(ModelFiles {
        described: model.to_string(),
        files,
    })
}

fn from_hub(model: &str, revision: &str, folder: &Path) -> Result<ModelFiles> {
    let not_found = |e: anyhow::Error| {
        anyhow::anyhow!(
            "model `{model}` was not found.\n  looked for: the folder {}; the Hugging Face hub cache {} (repository `{model}`, revision `{revision}`)\n  reason: {e:#}\n  = help: to run offline, download it once where there is network (`msae` does this on first use, or the Python tools: `huggingface-cli download {model}`) and keep the hub cache (HF_HOME or HF_HUB_CACHE), or copy the model's files (config.json, model.safetensors, tokenizer.json) into a folder and set `model` to that folder",
            folder.display(),
            hub::cache_dir().display()
        )
    };
    let config = hub::fetch_from(Kind::Model, model, "config.json", revision).map_err(not_found)?;
    let commit = config.commit.clone();
    let mut files = BTreeMap::new();
    files.insert("config.json".to_string(), config.path);
    let mut found_weights = false;
    for w in WEIGHTS {
        if let Some(f) = hub::fetch_optional(Kind::Model, model, w, revision)? {
            files.insert(w.to_string(), f.path);
            found_weights = true;
            break;
        }
    }
    if !found_weights {
        return Err(not_found(anyhow::anyhow!(
            "the repository (or its cached copy) has none of {}",
            WEIGHTS.join(", ")
        )));
    }
    for name in OPTIONAL {
        if let Some(f) = hub::fetch_optional(Kind::Model, model, name, revision)? {
            files.insert(name.to_string(), f.path);
        }
    }
    Ok(ModelFiles {
        described: format!("{model}@{}", commit.as_deref().unwrap_or(revision)),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths_are_told_apart() {
        assert!(looks_like_repo_id("openai/clip-vit-base-patch32"));
        assert!(looks_like_repo_id("bert-base-uncased"));
        assert!(!looks_like_repo_id("./models/clip"));
        assert!(!looks_like_repo_id("models/clip/v1"));
        assert!(!looks_like_repo_id("/abs/path"));
    }

    #[test]
    fn a_folder_without_config_or_weights_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir(&m).unwrap();
        let e = locate("m", "main", dir.path()).unwrap_err().to_string();
        assert!(e.contains("no config.json"), "{e}");
        std::fs::write(m.join("config.json"), "{}").unwrap();
        let e = locate("m", "main", dir.path()).unwrap_err().to_string();
        assert!(e.contains("no weights"), "{e}");
        std::fs::write(m.join("model.safetensors"), "x").unwrap();
        std::fs::write(m.join("tokenizer.json"), "{}").unwrap();
        let found = locate("m", "main", dir.path()).unwrap();
        assert_eq!(
            found.files.keys().cloned().collect::<Vec<_>>(),
            ["config.json", "model.safetensors", "tokenizer.json"]
        );
    }
}
