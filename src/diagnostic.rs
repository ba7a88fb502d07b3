//! User-facing error messages that point into the experiment file.
//!
//! A `Diagnostic` is a mistake the user can fix: it names the file, the line and column where the
//! problem sits, quotes that line, and says how to fix it. The CLI prints it without a backtrace
//! and exits with status 1.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where in a source file something was written (byte range into the file's text).
#[derive(Debug, Clone)]
pub struct SourceSpan {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub line_text: String,
    pub width: usize,
}

impl SourceSpan {
    /// Turns a byte range of `text` into a line/column position (both 1-based).
    pub fn new(file: &Path, text: &str, range: Range<usize>) -> Self {
        let start = range.start.min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = text[line_start..start].chars().count() + 1;
        let line_end = text[start..]
            .find('\n')
            .map(|i| start + i)
            .unwrap_or(text.len());
        let line_text = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let end = range.end.clamp(start, line_end);
        let width = text[start..end].chars().count().max(1);
        SourceSpan {
            file: file.to_path_buf(),
            line,
            column,
            line_text,
            width,
        }
    }
}

/// A mistake in the user's input, with its location and a suggested fix.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<SourceSpan>,
    pub file: Option<PathBuf>,
    pub help: Option<String>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span: None,
            file: None,
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn at(mut self, span: Option<SourceSpan>) -> Self {
        self.span = span;
        self
    }

    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)?;
        if let Some(span) = &self.span {
            writeln!(
                f,
                "  --> {}:{}:{}",
                span.file.display(),
                span.line,
                span.column
            )?;
            let gutter = span.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", span.line, span.line_text)?;
            let pad: String = span
                .line_text
                .chars()
                .take(span.column - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{:gutter$} | {}{}", "", pad, "^".repeat(span.width))?;
        } else if let Some(file) = &self.file {
            writeln!(f, "  --> {}", file.display())?;
        }
        for note in &self.notes {
            writeln!(f, "  = note: {note}")?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The closest candidate to a misspelled word, if one is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_reports_one_based_line_and_column() {
        let text = "a = 1\nbb = 2\n";
        let span = SourceSpan::new(Path::new("x.toml"), text, 6..8);
        assert_eq!((span.line, span.column, span.width), (2, 1, 2));
        assert_eq!(span.line_text, "bb = 2");
    }

    #[test]
    fn nearest_suggests_typos_only() {
        let keys = ["expansion", "epochs", "kind"];
        assert_eq!(nearest("expansin", keys), Some("expansion"));
        assert_eq!(nearest("zzzzzzzzzz", keys), None);
    }
}
