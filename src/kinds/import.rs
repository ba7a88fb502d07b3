//! `import`: registers an existing embedding matrix (and optional text and label lists).
//!
//! The matrix is checked (shape against the file size, every value finite, optionally the column
//! count) and copied into the store as a NumPy `.npy` file, so every downstream step reads one
//! format and a later edit of the original file can never change a cached result behind msae's
//! back. Both NumPy `.npy` files and the reference code's headerless `_<N>_<D>.npy` files are
//! accepted; they are told apart by the NumPy magic bytes.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::data::npy::{Layout, Matrix, NpyWriter};
use crate::data::reader::RowReader;
use crate::step::spec::{Default, OutputSpec, ParamSpec, ParamType, Role};
use crate::step::{Metrics, Step, StepContext};

pub struct Import;

static PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "path", ty: ParamType::Str, role: Role::File, default: Default::Required, gridable: true, doc: "the embedding matrix: a NumPy .npy file or a headerless float32 file named ..._<rows>_<cols>.npy", ..ParamSpec::BASE },
    ParamSpec { name: "texts", ty: ParamType::Str, role: Role::File, default: Default::Absent, doc: "optional text file with one entry per matrix row", ..ParamSpec::BASE },
    ParamSpec { name: "labels", ty: ParamType::Str, role: Role::File, default: Default::Absent, doc: "optional text file with one class label per matrix row", ..ParamSpec::BASE },
    ParamSpec { name: "cols", ty: ParamType::Int, default: Default::Absent, min: Some(1.0), doc: "expected number of columns (the embedding width); a mismatch is an error", ..ParamSpec::BASE },
];

static OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "matrix",
        optional: false,
        doc: "the embedding matrix as float32 .npy",
    },
    OutputSpec {
        name: "texts",
        optional: true,
        doc: "one text per row (newline-terminated lines)",
    },
    OutputSpec {
        name: "labels",
        optional: true,
        doc: "one label per row (newline-terminated lines)",
    },
];

/// Rows copied per block: bounds memory to a few MB whatever the matrix size.
const BLOCK_ROWS: usize = 4096;

/// The entries of a line list: one per line, surrounding whitespace stripped; a final newline
/// does not start an extra (empty) entry.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    Ok(body.split('\n').map(|l| l.trim().to_string()).collect())
}

fn copy_lines(ctx: &StepContext, param: &str, rows: usize) -> Result<Option<usize>> {
    let Some(path) = ctx.file(param) else {
        return Ok(None);
    };
    let lines = read_lines(path)?;
    if lines.len() != rows {
        bail!(
            "`{param}` file {} has {} lines but the matrix has {rows} rows; they must match one to one",
            path.display(),
            lines.len()
        );
    }
    let mut out = lines.join("\n");
    if !lines.is_empty() {
        out.push('\n');
    }
    std::fs::write(ctx.output_path(param), out)?;
    Ok(Some(lines.len()))
}

impl Step for Import {
    step_info!(kind: "import", version: 1, about: "register an existing embedding matrix (.npy or headerless), with optional texts and labels");

    fn needs(&self) -> crate::step::Needs {
        crate::step::Needs::LIGHT
    }

    fn run(&self, ctx: &mut StepContext) -> Result<Metrics> {
        let path = ctx
            .file("path")
            .context("`path` is required")?
            .to_path_buf();
        let m = Matrix::open(&path)?;
        if let Some(expected) = ctx.params.get("cols").and_then(|v| v.as_int()) {
            if m.cols() as i64 != expected {
                bail!(
                    "{} has {} columns, but `cols = {expected}` was expected (is it an embedding of another model?)",
                    path.display(),
                    m.cols()
                );
            }
        }
        if m.rows() == 0 {
            bail!("{} has no rows", path.display());
        }
        let bar = ctx
            .progress
            .bar(m.rows() as u64, "import: checking and copying");
        let mut w = NpyWriter::create(&ctx.output_path("matrix"), m.rows(), m.cols())?;
        let mut bad = 0usize;
        let mut first_bad: Option<(usize, usize, f32)> = None;
        let mut norm_sum = 0f64;
        // Positioned reads rather than the map: the resident set stays at one block.
        let mut reader = RowReader::new(&m)?;
        for start in (0..m.rows()).step_by(BLOCK_ROWS) {
            let end = (start + BLOCK_ROWS).min(m.rows());
            let block = reader.chunk(start, end)?;
            for (i, row) in block.chunks(m.cols()).enumerate() {
                let mut sq = 0f64;
                for (j, &x) in row.iter().enumerate() {
                    if !x.is_finite() {
                        bad += 1;
                        first_bad.get_or_insert((start + i, j, x));
                    }
                    sq += (x as f64) * (x as f64);
                }
                norm_sum += sq.sqrt();
            }
            w.write_rows(block)?;
            bar.set_position(end as u64);
        }
        bar.finish_and_clear();
        if let Some((r, c, x)) = first_bad {
            bail!(
                "{} contains {bad} non-finite value(s) (NaN or infinity); the first is {x} at row {r}, column {c}. Clean the data before importing it",
                path.display()
            );
        }
        w.finish()?;
        copy_lines(ctx, "texts", m.rows())?;
        copy_lines(ctx, "labels", m.rows())?;
        let mut metrics = Metrics::new();
        metrics.insert("rows".into(), m.rows().into());
        metrics.insert("cols".into(), m.cols().into());
        metrics.insert("mean_norm".into(), (norm_sum / m.rows() as f64).into());
        metrics.insert(
            "format".into(),
            match m.layout {
                Layout::Npy { .. } => "npy",
                Layout::Headerless => "headerless",
            }
            .into(),
        );
        Ok(metrics)
    }
}
