//! Why an instance will run: typed reasons with old and new values.
//!
//! `plan --json` and `why --json` serialise these as data (`{"type": "parameter", "name": "lr",
//! "old": 0.0005, "new": 0.0001}`); the text commands print their [`std::fmt::Display`] form.

use std::fmt;

use serde::Serialize;

use crate::store::FileComponent;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reason {
    /// No successful run under this instance name.
    NeverRan,
    /// The step's kind differs from its last run.
    Kind { old: String, new: String },
    /// msae changed how the step computes its results.
    Version { kind: String, old: u32, new: u32 },
    /// A keyed parameter (absent = not set).
    Parameter {
        name: String,
        old: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    },
    /// An input artifact's content (absent = no such input).
    Input {
        name: String,
        old: Option<String>,
        new: Option<String>,
        old_from: Option<String>,
        new_from: Option<String>,
    },
    /// An external file or resource group: path as written and content hash.
    File {
        name: String,
        old: Option<FileComponent>,
        new: Option<FileComponent>,
    },
    /// The record exists but an output object is missing or damaged.
    MissingOutput { output: String, hash: String },
    /// Its key is known only after this upstream instance runs.
    Upstream { instance: String },
    /// It cannot run as written.
    Error { message: String },
}

fn show(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "(not set)".into(),
        Some(serde_json::Value::String(s)) => s.strip_prefix("f:").unwrap_or(s).to_string(),
        Some(other) => other.to_string(),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NeverRan => write!(f, "never ran"),
            Reason::Kind { old, new } => write!(f, "step kind {old} → {new}"),
            Reason::Version { kind, old, new } => write!(
                f,
                "step version {old} → {new} (msae changed how `{kind}` computes its results)"
            ),
            Reason::Parameter { name, old, new } => {
                write!(f, "param {name}: {} → {}", show(old), show(new))
            }
            Reason::Input {
                name,
                old,
                new,
                old_from,
                new_from,
            } => match (old, new) {
                (Some(a), Some(b)) => {
                    let o = old_from.as_deref().unwrap_or("?");
                    let n = new_from.as_deref().unwrap_or("?");
                    let source = if o == n {
                        format!("from {n}")
                    } else {
                        format!("from {o} → {n}")
                    };
                    write!(
                        f,
                        "input {name}: new content ({source}; {} → {})",
                        short(a),
                        short(b)
                    )
                }
                (None, _) => write!(f, "input {name}: added"),
                (_, None) => write!(f, "input {name}: removed"),
            },
            Reason::File { name, old, new } => match (old, new) {
                (Some(a), Some(b)) => {
                    let mut parts = Vec::new();
                    if a.path != b.path {
                        parts.push(format!("file {name}: path {} → {}", a.path, b.path));
                    }
                    if a.hash != b.hash {
                        parts.push(format!(
                            "file {name}: content changed ({} → {})",
                            short(&a.hash),
                            short(&b.hash)
                        ));
                    }
                    write!(f, "{}", parts.join("; "))
                }
                (None, Some(b)) => write!(f, "file {name}: added ({})", b.path),
                (Some(a), None) => write!(f, "file {name}: removed ({})", a.path),
                (None, None) => write!(f, "file {name}"),
            },
            Reason::MissingOutput { output, hash } => write!(
                f,
                "output `{output}` of its last run ({}) is missing from the store",
                short(hash)
            ),
            Reason::Upstream { instance } => write!(f, "waits for {instance}"),
            Reason::Error { message } => write!(f, "{message}"),
        }
    }
}
