//! Files from a Hugging Face repository (model or dataset), through the hub's local cache.
//!
//! The cache is the one the Python tools share: `HF_HUB_CACHE` if set, else `HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`. With `HF_HUB_OFFLINE` set (1/true/yes/on) nothing is
//! downloaded and a file missing from the cache is an error that says where msae looked;
//! otherwise a cached file is used as it is and a missing one is downloaded (`HF_ENDPOINT` and
//! `HF_TOKEN` are honoured).

use std::path::{Path, PathBuf};

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

/// Which kind of repository a name refers to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Model,
    Dataset,
}

impl Kind {
    fn repo_type(self) -> RepoType {
        match self {
            Kind::Model => RepoType::Model,
            Kind::Dataset => RepoType::Dataset,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Model => "repository",
            Kind::Dataset => "dataset repository",
        }
    }
}

fn repo(kind: Kind, name: &str, revision: &str) -> Repo {
    Repo::with_revision(name.to_string(), kind.repo_type(), revision.to_string())
}

/// The local path of `file` in model repository `repo` at `revision`.
pub fn fetch(repo: &str, file: &str, revision: &str) -> Result<HubFile> {
    fetch_from(Kind::Model, repo, file, revision)
}

/// The commit `revision` stands for in the cache: what `refs/<revision>` holds, else the revision
/// itself, taken as a commit. The Python tools write refs only for branches and tags, so a
/// revision pinned to a commit (or a commit resolved from `refs/main`) has no ref of its own.
fn cached_commit(repo_dir: &Path, revision: &str) -> String {
    std::fs::read_to_string(repo_dir.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string())
}

/// The cached copy of `file` at `revision`, if the cache holds it.
fn cached_file(
    cache: &Cache,
    kind: Kind,
    name: &str,
    revision: &str,
    file: &str,
) -> Option<PathBuf> {
    let repo_dir = cache.path().join(repo(kind, name, revision).folder_name());
    let path = repo_dir
        .join("snapshots")
        .join(cached_commit(&repo_dir, revision))
        .join(file);
    path.exists().then_some(path)
}

/// The local path of `file` in a repository of either kind; downloaded unless offline.
pub fn fetch_from(kind: Kind, name: &str, file: &str, revision: &str) -> Result<HubFile> {
    let cache = Cache::new(cache_dir());
    let hub_repo = repo(kind, name, revision);
    let cached = cached_file(&cache, kind, name, revision, file);
    let path = match cached {
        Some(p) => p,
        None if offline() => {
            return Err(anyhow!(
                "`{file}` of Hugging Face {} `{name}` (revision `{revision}`) is not in the hub cache {} and HF_HUB_OFFLINE is set; download it once with network access or unset HF_HUB_OFFLINE",
                kind.noun(),
                cache.path().display()
            ))
        }
        None => download(cache, hub_repo, kind, name, file, revision)?,
    };
    Ok(HubFile {
        commit: commit_of(&path),
        path,
    })
}

/// Like [`fetch_from`], but `None` when the repository does not have the file (optional files
/// such as a sentence-transformers pooling configuration). Offline, "not in the cache" counts as
/// not having it only if the cache holds the revision at all.
pub fn fetch_optional(
    kind: Kind,
    name: &str,
    file: &str,
    revision: &str,
) -> Result<Option<HubFile>> {
    let cache = Cache::new(cache_dir());
    let hub_repo = repo(kind, name, revision);
    if let Some(path) = cached_file(&cache, kind, name, revision, file) {
        return Ok(Some(HubFile {
            commit: commit_of(&path),
            path,
        }));
    }
    if offline() {
        return Ok(None);
    }
    let api = client(cache)?;
    match api.repo(hub_repo).get(file) {
        Ok(path) => Ok(Some(HubFile {
            commit: commit_of(&path),
            path,
        })),
        Err(hf_hub::api::sync::ApiError::RequestError(e))
            if matches!(*e, ureq::Error::Status(404, _)) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow!(
            "cannot download `{file}` from Hugging Face {} `{name}` (revision `{revision}`): {e}",
            kind.noun()
        )),
    }
}

/// Every file of a repository at `revision`: from the hub's listing when online, else from the
/// cached snapshot of that revision (which holds only what was downloaded before).
pub fn list(kind: Kind, name: &str, revision: &str) -> Result<(Vec<String>, Option<String>)> {
    let cache = Cache::new(cache_dir());
    let hub_repo = repo(kind, name, revision);
    if !offline() {
        let api = client(Cache::new(cache_dir()))?;
        let info = api.repo(hub_repo).info().map_err(|e| {
            anyhow!("cannot list Hugging Face {} `{name}` (revision `{revision}`): {e}; set HF_HUB_OFFLINE=1 to use only the local cache", kind.noun())
        })?;
        let mut files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        files.sort();
        return Ok((files, Some(info.sha)));
    }
    let repo_dir = cache.path().join(hub_repo.folder_name());
    let commit = cached_commit(&repo_dir, revision);
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(anyhow!(
            "Hugging Face {} `{name}` (revision `{revision}`) is not in the hub cache {} (looked for {}) and HF_HUB_OFFLINE is set; download it once with network access or unset HF_HUB_OFFLINE",
            kind.noun(),
            cache.path().display(),
            snapshot.display()
        ));
    }
    let mut files = Vec::new();
    walk(&snapshot, &snapshot, &mut files)?;
    files.sort();
    Ok((files, Some(commit)))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

fn client(cache: Cache) -> Result<hf_hub::api::sync::Api> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    builder
        .build()
        .map_err(|e| anyhow!("cannot set up the Hugging Face client: {e}"))
}

fn download(
    cache: Cache,
    hub_repo: Repo,
    kind: Kind,
    name: &str,
    file: &str,
    revision: &str,
) -> Result<PathBuf> {
    let api = client(cache)?;
    api.repo(hub_repo).get(file).map_err(|e| {
        anyhow!("cannot download `{file}` from Hugging Face {} `{name}` (revision `{revision}`): {e}; set HF_HUB_OFFLINE=1 to use only the local cache", kind.noun())
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

    #[test]
    fn a_cached_file_is_found_by_branch_and_by_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo_dir = dir.path().join("datasets--org--name");
        let snapshot = repo_dir.join("snapshots").join(commit).join("data");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), format!("{commit}\n")).unwrap();
        std::fs::write(snapshot.join("a.parquet"), b"x").unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        let find = |revision: &str, file: &str| {
            cached_file(&cache, Kind::Dataset, "org/name", revision, file)
        };
        let expected = Some(snapshot.join("a.parquet"));
        assert_eq!(find("main", "data/a.parquet"), expected);
        // No `refs/<commit>` exists: the commit names its snapshot directly.
        assert_eq!(find(commit, "data/a.parquet"), expected);
        assert_eq!(find("v2", "data/a.parquet"), None);
        assert_eq!(find("main", "data/b.parquet"), None);
        assert_eq!(
            find("main", "data/a.parquet")
                .and_then(|p| commit_of(&p))
                .as_deref(),
            Some(commit)
        );
        // A model repository of the same name is another folder.
        assert_eq!(
            cached_file(&cache, Kind::Model, "org/name", "main", "data/a.parquet"),
            None
        );
    }
}
