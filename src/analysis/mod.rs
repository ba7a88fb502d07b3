//! Downstream analyses of a trained dictionary: which named latents are concepts
//! ([`concepts`]), concept naming against a
//! vocabulary ([`naming`], docs/reference.md §8.3), alignment of two dictionaries
//! ([`alignment`], docs/reference.md §8.4) and semantic preservation measured with a linear probe
//! ([`probe`], docs/reference.md §8.5), and the rows that activate each latent most
//! ([`top_examples`]), and which concepts a linear classifier leans on ([`bias`]); similarity
//! search with a concept edited into the queries ([`concept_search`]); how well a dictionary
//! recovers known true features ([`ground_truth`]).

pub mod alignment;
pub mod bias;
pub mod concept_search;
pub mod concepts;
pub mod ground_truth;
pub mod naming;
pub mod probe;
pub mod top_examples;
pub mod zero_shot;

use crate::metrics::MetricsError;

/// What can go wrong in an analysis. Bad caller data becomes a message here,
/// never a panic.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// Shapes or arguments that do not fit together.
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
    /// An evaluation label that the training labels never mention.
    #[error("evaluation label `{label}` (row {row}) does not occur in the training labels; the probe has no class for it")]
    UnknownLabel { label: String, row: usize },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl AnalysisError {
    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            message: message.into(),
        }
    }
}

/// Result alias of the analysis modules.
pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;

/// Reads a text list with one entry per line (vocabulary words, class labels).
/// Line endings (`\n` or `\r\n`) are removed; empty lines are kept as empty
/// entries so that line numbers stay aligned with matrix rows. With `trim`,
/// surrounding whitespace is stripped too (the probe's label files are read
/// stripped by the reference).
pub fn read_lines(path: &std::path::Path, trim: bool) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AnalysisError::Other(anyhow::anyhow!("cannot read {}: {e}", path.display()))
    })?;
    Ok(text
        .lines()
        .map(|l| if trim { l.trim() } else { l }.to_string())
        .collect())
}
