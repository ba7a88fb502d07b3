//! Outputs of finished instances copied next to the report page, so the page links to real files
//! that travel with the folder. Large outputs stay in the store; the page shows how to export them.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use crate::store::{ArtifactRecord, Objects};

/// Outputs up to this size (256 KiB: JSON reports, small matrices) are copied into the report
/// folder; models and large matrices stay in the store.
pub const COPY_LIMIT: u64 = 256 << 10;

/// A file extension from the first bytes of a stored output.
pub fn extension(path: &Path) -> &'static str {
    // A tar header is 512 bytes, with the ustar magic at offset 257.
    let mut head = [0u8; 512];
    let mut n = 0;
    if let Ok(mut f) = std::fs::File::open(path) {
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    }
    let is_tar = n == 512 && head[257..262] == *b"ustar";
    let head = &head[..n];
    if is_tar {
        "tar"
    } else if head.starts_with(b"\x93NUMPY") {
        "npy"
    } else if n >= 9 && head[8] == b'{' {
        // safetensors: a little-endian header length, then the JSON header.
        "safetensors"
    } else if head
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
    {
        "json"
    } else if head.starts_with(b"PK") {
        "zip"
    } else {
        "bin"
    }
}

/// Relative path (under the report folder) of a copied output.
pub fn relative_path(a: &ArtifactRecord, name: &str, ext: &str) -> String {
    format!("outputs/{}/{name}.{ext}", &a.hash[..16])
}

/// Copies one output if it is small enough; returns its relative path, or `None` when it stays
/// in the store. Folders are named by content hash, so an existing copy is never rewritten.
pub fn copy(
    objects: &Objects,
    dir: &Path,
    a: &ArtifactRecord,
    name: &str,
    kept: &mut BTreeSet<String>,
) -> Result<Option<String>> {
    if a.size > COPY_LIMIT {
        return Ok(None);
    }
    let src = objects.path(&a.hash);
    let rel = relative_path(a, name, extension(&src));
    let dst = dir.join(&rel);
    kept.insert(a.hash[..16].to_string());
    if dst.metadata().map(|m| m.len()).ok() != Some(a.size) {
        std::fs::create_dir_all(dst.parent().expect("has a parent"))?;
        let tmp = dst.with_extension("tmp");
        std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        std::fs::rename(&tmp, &dst)?;
    }
    Ok(Some(rel))
}

/// Removes copied outputs that no instance of the page refers to any more.
pub fn prune(dir: &Path, kept: &BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir.join("outputs")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !kept.contains(&name) {
            std::fs::remove_dir_all(e.path()).ok();
        }
    }
}
