//! A text file with one entry per line (vocabularies, class names, captions).
//!
//! Entries are the lines with surrounding whitespace stripped, as the reference loads its
//! vocabularies; a final newline does not start an extra entry, while an empty line in the middle
//! is an entry (the empty string; `mscoco_unigram.txt` has one). A line that is not UTF-8 is an
//! unreadable entry, so the line numbers of the others stay their positions.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Entry, Item, Source};

pub struct TextLines {
    path: PathBuf,
    name: String,
    reader: BufReader<File>,
    line: usize,
    buf: Vec<u8>,
}

impl TextLines {
    pub fn open(path: &Path) -> Result<TextLines> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(TextLines {
            path: path.to_path_buf(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            buf: Vec::new(),
        })
    }

    /// Reads the next raw line (without its newline); `None` at the end.
    fn next_line(&mut self) -> Result<Option<&[u8]>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        Ok(Some(&self.buf))
    }
}

impl Source for TextLines {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some(raw) = self.next_line()? else {
            return Ok(None);
        };
        let raw = raw.to_vec();
        let (name, line) = (&self.name, self.line);
        Ok(Some(match std::str::from_utf8(&raw) {
            Ok(text) => Entry::Item(Item {
                key: format!("{name}:{line}"),
                text: Some(text.trim().to_string()),
                ..Item::default()
            }),
            Err(e) => Entry::Unreadable {
                key: format!("{name}:{line}"),
                reason: format!("line is not UTF-8 text ({e})"),
            },
        }))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            if self.next_line()?.is_none() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(content: &[u8]) -> Vec<Result<String, String>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.txt");
        std::fs::write(&p, content).unwrap();
        let mut src = TextLines::open(&p).unwrap();
        let mut out = Vec::new();
        while let Some(e) = src.next_entry().unwrap() {
            out.push(match e {
                Entry::Item(i) => Ok(i.text.unwrap()),
                Entry::Unreadable { reason, .. } => Err(reason),
            });
        }
        out
    }

    #[test]
    fn lines_are_stripped_and_a_final_newline_adds_nothing() {
        let got = texts(b" cat \n\ndog\r\nbird");
        assert_eq!(
            got,
            vec![
                Ok("cat".into()),
                Ok("".into()),
                Ok("dog".into()),
                Ok("bird".into())
            ]
        );
        assert_eq!(texts(b"a\nb\n").len(), 2);
        assert!(texts(b"").is_empty());
    }

    #[test]
    fn a_line_that_is_not_utf8_is_unreadable_and_keeps_its_position() {
        let got = texts(b"a\n\xff\xfe\nc\n");
        assert_eq!(got.len(), 3);
        assert!(got[1].as_ref().unwrap_err().contains("UTF-8"));
        assert_eq!(got[2], Ok("c".into()));
    }

    #[test]
    fn skipping_equals_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.txt");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        let mut src = TextLines::open(&p).unwrap();
        src.skip(2).unwrap();
        match src.next_entry().unwrap().unwrap() {
            Entry::Item(i) => {
                assert_eq!(i.text.as_deref(), Some("c"));
                assert_eq!(i.key, "v.txt:3");
            }
            other => panic!("{other:?}"),
        }
    }
}
