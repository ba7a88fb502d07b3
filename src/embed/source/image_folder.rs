//! A folder of images: every image file below it, in byte order of the relative path.
//!
//! The folder an image lies in, relative to the root, is its label (class sub-folders:
//! `dog/001.jpg` → `dog`; nested folders give `animals/birds`); an image directly in the root has
//! none. A caption file beside an image — the same name with `.txt` — gives its text: the first
//! line, stripped (caption files with translations on the following lines, as Tux Paint's stamps
//! have, keep their first-line English caption). Files are read when their entry is reached.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Entry, Item, Source};

/// File extensions taken as images (compared case-insensitively). Formats that cannot be decoded
/// are still listed, so that they are reported as skipped rather than silently ignored.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"];

pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() || (ty.is_symlink() && path.is_dir()) {
            collect(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Every image file below `root`, sorted by relative path.
pub fn image_files(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        bail!("{} is not a folder", root.display());
    }
    let mut files = Vec::new();
    collect(root, &mut files)?;
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    if files.is_empty() {
        bail!(
            "the folder {} holds no image files ({})",
            root.display(),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    Ok(files)
}

impl ImageFolder {
    pub fn open(root: &Path) -> Result<ImageFolder> {
        Ok(ImageFolder {
            root: root.to_path_buf(),
            files: image_files(root)?,
            next: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")
    }
}

/// The first line of a caption file, stripped; `None` without a file.
fn caption(image: &Path) -> Result<Option<String>, String> {
    let path = image.with_extension("txt");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("caption file {} is not UTF-8 text", path.display()))?;
            Ok(Some(text.lines().next().unwrap_or("").trim().to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read caption file {}: {e}", path.display())),
    }
}

impl Source for ImageFolder {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some(path) = self.files.get(self.next).cloned() else {
            return Ok(None);
        };
        self.next += 1;
        let key = self.relative(&path);
        let label = path
            .parent()
            .map(|p| self.relative(p))
            .filter(|l| !l.is_empty());
        let image = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                return Ok(Some(Entry::Unreadable {
                    key,
                    reason: format!("cannot read the file: {e}"),
                }))
            }
        };
        let text = match caption(&path) {
            Ok(t) => t,
            Err(reason) => return Ok(Some(Entry::Unreadable { key, reason })),
        };
        Ok(Some(Entry::Item(Item {
            key,
            image: Some(image),
            text,
            label,
            group: None,
        })))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        self.next = (self.next + n).min(self.files.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_folders_captions_from_text_files_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (name, body) in [
            ("b/2.png", &b"png2"[..]),
            ("a/x/1.JPG", b"jpg1"),
            ("a/x/1.txt", b"a red ball\nfr.utf8=une balle rouge\n"),
            ("top.png", b"top"),
            ("a/notes.md", b"not an image"),
        ] {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let mut src = ImageFolder::open(root).unwrap();
        assert_eq!(src.len(), 3);
        let mut items = Vec::new();
        while let Some(Entry::Item(i)) = src.next_entry().unwrap() {
            items.push(i);
        }
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].key, "a/x/1.JPG");
        assert_eq!(items[0].label.as_deref(), Some("a/x"));
        assert_eq!(items[0].text.as_deref(), Some("a red ball"));
        assert_eq!(items[0].image.as_deref(), Some(&b"jpg1"[..]));
        assert_eq!(
            (
                items[1].key.as_str(),
                items[1].label.as_deref(),
                items[1].text.as_deref()
            ),
            ("b/2.png", Some("b"), None)
        );
        assert_eq!(items[2].label, None);
        let mut again = ImageFolder::open(root).unwrap();
        again.skip(2).unwrap();
        match again.next_entry().unwrap().unwrap() {
            Entry::Item(i) => assert_eq!(i.key, "top.png"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = ImageFolder::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("no image files"), "{e}");
    }
}
