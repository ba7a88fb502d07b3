//! Files from a Hugging Face model repository, through the hub's local cache.
//!
//! The cache is the one the Python tools share: `HF_HUB_CACHE` if set, else `HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`. With `HF_HUB_OFFLINE` set (1/true/yes/on) nothing is
//! downloaded and a file missing from the cache is an error that says where msae looked;
//! otherwise a cached file is used as it is and a missing one is downloaded (`HF_ENDPOINT` and
//! `HF_TOKEN` are honoured).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use hf_hub::{Cache, Repo, RepoType};

/// A resolved hub file: where it lies locally and which commit it came from.
pub struct HubFile {
    pub path: PathBuf,
    /// The commit the revision pointed to in the cache, when known.
    pub commit: Option<String>,
}

/// Whether the environment asks for no network access.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The hub cache folder the environment selects.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => Cache::from_env().path().clone(),
    }
}

/// The local path of `file` in model repository `repo` at `revision`.
pub fn fetch(repo: &str, file: &str, revision: &str) -> Result<HubFile> {
    let cache = Cache::new(cache_dir());
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let cached = cache.repo(hub_repo.clone()).get(file);
    let path = match cached {
        Some(p) => p,
        None if offline() => {
            return Err(anyhow!(
                "`{file}` of Hugging Face repository `{repo}` (revision `{revision}`) is not in the hub cache {} and HF_HUB_OFFLINE is set; download it once with network access or unset HF_HUB_OFFLINE",
                cache.path().display()
            ))
        }
        None => download(cache, hub_repo, repo, file, revision)?,
    };
    Ok(HubFile {
        commit: commit_of(&path),
        path,
    })
}

fn download(
    cache: Cache,
    hub_repo: Repo,
    repo: &str,
    file: &str,
    revision: &str,
) -> Result<PathBuf> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| anyhow!("cannot set up the Hugging Face client: {e}"))?;
    api.repo(hub_repo).get(file).map_err(|e| {
        anyhow!("cannot download `{file}` from Hugging Face repository `{repo}` (revision `{revision}`): {e}; set HF_HUB_OFFLINE=1 to use only the local cache")
    })
}

/// The commit folder a cached file lies in (`…/snapshots/<commit>/<file>`).
fn commit_of(path: &std::path::Path) -> Option<String> {
    let mut parts = path
        .components()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let mut prev = parts.next()?;
    for part in parts {
        if part == "snapshots" {
            return Some(prev);
        }
        prev = part;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_is_the_folder_under_snapshots() {
        let p = PathBuf::from("/c/models--a--b/snapshots/abc123/sub/f.pth");
        assert_eq!(commit_of(&p).as_deref(), Some("abc123"));
        assert_eq!(commit_of(&PathBuf::from("/tmp/f.pth")), None);
    }
}
