//! The one error type of the metrics module.
//!
//! Every function that receives caller data checks shapes and arguments and
//! reports problems here instead of panicking, so a bad configuration or a
//! truncated matrix file becomes a readable message at the edge of the program.

use std::error::Error as StdError;

/// What can go wrong when computing a metric or a dataset statistic.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A flat buffer does not hold `rows × cols` values.
    #[error("{what}: buffer holds {len} values, but {rows} rows × {cols} columns need {expected}")]
    BadLength {
        what: &'static str,
        len: usize,
        rows: usize,
        cols: usize,
        expected: usize,
    },
    /// `rows × cols` does not fit in memory addressing.
    #[error("{what}: {rows} rows × {cols} columns overflows the address space")]
    TooLarge {
        what: &'static str,
        rows: usize,
        cols: usize,
    },
    /// Two matrices that must describe the same samples (or features) disagree.
    #[error("{what}: {left} is {left_rows}×{left_cols} but {right} is {right_rows}×{right_cols}")]
    ShapeMismatch {
        what: &'static str,
        left: &'static str,
        left_rows: usize,
        left_cols: usize,
        right: &'static str,
        right_rows: usize,
        right_cols: usize,
    },
    /// An argument is outside the range the metric is defined for.
    #[error("{what}: {message}")]
    InvalidArgument { what: &'static str, message: String },
    /// The data make the quantity undefined (for example a dataset whose rows
    /// are all equal has no spread to scale by).
    #[error("{what}: {message}")]
    Degenerate { what: &'static str, message: String },
    /// The caller's row source failed while reading rows `start..end`.
    #[error("reading rows {start}..{end}: {source}")]
    Source {
        start: usize,
        end: usize,
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
}

impl MetricsError {
    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            what,
            message: message.into(),
        }
    }

    pub(crate) fn degenerate(what: &'static str, message: impl Into<String>) -> Self {
        Self::Degenerate {
            what,
            message: message.into(),
        }
    }
}

/// Result alias used throughout the metrics module.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;
