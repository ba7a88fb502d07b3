//! Expanding the path patterns of an experiment file into a sorted list of files.
//!
//! A pattern is either a plain path or a glob (`*`, `?`, `[..]`, `**`), relative to a base
//! folder (the experiment file's folder) unless it is absolute. Matching is done by the `glob`
//! crate with shell-like rules: `*` and `?` never cross a `/` (only `**` does, as a whole path
//! component) and never match a leading dot, so hidden files are not picked up by accident.
//!
//! The result is sorted by the bytes of each path and deduplicated, so the order of shards (and
//! therefore of every item position) depends only on the names on disk, not on the order in
//! which the file system lists a folder or the patterns are written. A pattern that matches
//! nothing is an error: a typo would otherwise silently shrink a dataset.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

/// Expands `patterns` (paths or globs, relative to `base` unless absolute) into the sorted,
/// deduplicated list of the paths they name. Globs may match folders as well as files.
pub fn expand(base: &Path, patterns: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if patterns.is_empty() {
        bail!("no path or pattern given (relative to {})", base.display());
    }
    let mut paths = Vec::new();
    for pattern in patterns {
        let matched = expand_one(base, pattern)?;
        if matched.is_empty() {
            bail!(
                "`{pattern}` matches nothing (searched in {})",
                search_folder(base, pattern).display()
            );
        }
        paths.extend(matched);
    }
    // Byte order rather than `Path`'s component order: the same order `ls` and Python's
    // `sorted()` give for names, so "shard-10" sorts the way anyone reading the folder expects.
    paths.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    paths.dedup();
    Ok(paths)
}

/// The paths one pattern names, lexically normalised (so `a/./b` and `a/b` deduplicate).
fn expand_one(base: &Path, pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    if pattern.is_empty() {
        bail!("an empty path pattern (relative to {})", base.display());
    }
    if !is_glob(pattern) {
        let path = normalise(&base.join(pattern));
        // `exists` follows links, as opening the file later will.
        return Ok(if path.exists() { vec![path] } else { vec![] });
    }
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        let base = base.to_str().with_context(|| {
            format!(
                "the folder {} is not valid UTF-8, which glob patterns need",
                base.display()
            )
        })?;
        // The base folder is a literal path: characters such as `[` in it must not act as
        // pattern syntax.
        let base = glob::Pattern::escape(base);
        if base.is_empty() {
            pattern.to_string()
        } else if base.ends_with('/') {
            format!("{base}{pattern}")
        } else {
            format!("{base}/{pattern}")
        }
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths =
        glob::glob_with(&full, options).with_context(|| format!("bad path pattern `{pattern}`"))?;
    let mut matched = Vec::new();
    for entry in paths {
        // A folder that cannot be listed would silently hide matches: report it instead.
        let path = entry.map_err(|e| {
            anyhow::anyhow!(
                "while expanding `{pattern}`: cannot read {}: {}",
                e.path().display(),
                e.error()
            )
        })?;
        matched.push(normalise(&path));
    }
    Ok(matched)
}

/// Whether `pattern` uses glob syntax; a plain path is checked for existence instead.
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Drops `.` components and repeated separators without touching the file system (`..` is
/// kept: resolving it lexically would be wrong through symbolic links).
fn normalise(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The folder named in the no-match message: the part of the pattern before its first glob
/// component, where the user should look.
fn search_folder(base: &Path, pattern: &str) -> PathBuf {
    let joined = base.join(pattern);
    let mut folder = PathBuf::new();
    for component in joined.components() {
        if is_glob(&component.as_os_str().to_string_lossy()) {
            return normalise(&folder);
        }
        folder.push(component);
    }
    // A plain path: the folder it should be in.
    normalise(joined.parent().unwrap_or(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    fn strings(root: &Path, paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn pats(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_are_sorted_by_bytes_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "shards/b-10.tar",
            "shards/b-9.tar",
            "shards/B-1.tar",
            "shards/a.tar",
            "shards/a.txt",
            "shards/.hidden.tar",
            "shards/sub/c.tar",
        ] {
            touch(root, name);
        }
        let got = expand(
            root,
            &pats(&["shards/*.tar", "shards/a.tar", "./shards/b-9.tar"]),
        )
        .unwrap();
        // Upper case before lower case, "10" before "9": byte order. The hidden file and the
        // file in the subfolder are not matched by `*`; the repeated paths appear once.
        assert_eq!(
            strings(root, &got),
            [
                "shards/B-1.tar",
                "shards/a.tar",
                "shards/b-10.tar",
                "shards/b-9.tar"
            ]
        );
    }

    #[test]
    fn recursive_and_class_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "d/x1.tar",
            "d/x2.tar",
            "d/x3.tar",
            "d/e/x1.tar",
            "d/e/f/y.tar",
        ] {
            touch(root, name);
        }
        let got = expand(root, &pats(&["d/**/*.tar"])).unwrap();
        assert_eq!(
            strings(root, &got),
            [
                "d/e/f/y.tar",
                "d/e/x1.tar",
                "d/x1.tar",
                "d/x2.tar",
                "d/x3.tar"
            ]
        );
        let got = expand(root, &pats(&["d/x[13].tar", "d/x?.tar"])).unwrap();
        assert_eq!(strings(root, &got), ["d/x1.tar", "d/x2.tar", "d/x3.tar"]);
    }

    #[test]
    fn absolute_patterns_ignore_the_base() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "s/one.parquet");
        touch(dir.path(), "s/two.parquet");
        let other = tempfile::tempdir().unwrap();
        let pattern = format!("{}/s/*.parquet", dir.path().display());
        let plain = format!("{}/s/one.parquet", dir.path().display());
        let got = expand(other.path(), &[pattern, plain]).unwrap();
        assert_eq!(
            strings(dir.path(), &got),
            ["s/one.parquet", "s/two.parquet"]
        );
    }

    #[test]
    fn glob_characters_in_the_base_are_literal() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("data[1]");
        touch(&base, "a.tar");
        // Unescaped, `data[1]` would match a folder named `data1` and find nothing.
        let got = expand(&base, &pats(&["*.tar"])).unwrap();
        assert_eq!(got, [base.join("a.tar")]);
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_an_error_naming_it_and_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, "shards/a.tar");
        let err = expand(root, &pats(&["shards/*.tar", "shards/*.tgz"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`shards/*.tgz` matches nothing"), "{msg}");
        assert!(
            msg.contains(&root.join("shards").display().to_string()),
            "{msg}"
        );
        let err = expand(root, &pats(&["missing/file.tar"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`missing/file.tar` matches nothing"), "{msg}");
        assert!(
            msg.contains(&root.join("missing").display().to_string()),
            "{msg}"
        );
        assert!(expand(root, &[]).is_err());
        assert!(expand(root, &pats(&["shards/[.tar"])).is_err());
    }
}
