//! `import`: registers an existing embedding matrix (and optional text and label lists).
//!
//! The matrix is checked (shape against the file size, every value finite, optionally the column
//! count) and stored as a NumPy `.npy` file, so every downstream step reads one format. Both
//! NumPy `.npy` files and the reference code's headerless `_<N>_<D>.npy` files are accepted; they
//! are told apart by the NumPy magic bytes.
//!
//! A file that already holds exactly the bytes msae would write (a float32 `.npy` with the header
//! NumPy writes) is not rewritten: it is hard-linked into the store when nobody may write it (no
//! write permission bits), so a later edit of the original cannot change a cached result behind
//! msae's back, and otherwise copied by the kernel (`copy_file_range`, which btrfs, XFS and other
//! file systems with shared extents turn into a copy-on-write clone). Either way the content check
//! then reads what is stored; where neither works (another file system, no rights) it is written
//! block by block as any other file.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::data::npy::{header_bytes, Layout, Matrix, NpyWriter};
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
        let out = ctx.output_path("matrix");
        let (bad, first_bad, norm_sum) = match place(&m, &path, &out)? {
            Some(how) => {
                tracing::info!("import: {} {how} into the store", path.display());
                let stored = Matrix::open(&out)?;
                let bar = ctx
                    .progress
                    .bar(m.rows() as u64, &format!("import: checking the {how}"));
                let found = check(&stored, None, &bar)?;
                bar.finish_and_clear();
                found
            }
            None => {
                let bar = ctx
                    .progress
                    .bar(m.rows() as u64, "import: checking and copying");
                let mut w = NpyWriter::create(&out, m.rows(), m.cols())?;
                let found = check(&m, Some(&mut w), &bar)?;
                bar.finish_and_clear();
                if found.1.is_none() {
                    w.finish()?;
                }
                found
            }
        };
        if let Some((r, c, x)) = first_bad {
            bail!(
                "{} contains {bad} non-finite value(s) (NaN or infinity); the first is {x} at row {r}, column {c}. Clean the data before importing it",
                path.display()
            );
        }
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

/// The first non-finite value (row, column, value), if any.
type FirstBad = Option<(usize, usize, f32)>;

/// Reads every row of `m` (positioned reads rather than the map, so the resident set stays at
/// one block), counting non-finite values and summing row norms; copies the rows to `copy_to`
/// when given. Returns (non-finite count, the first of them, sum of row norms).
fn check(
    m: &Matrix,
    mut copy_to: Option<&mut NpyWriter>,
    bar: &indicatif::ProgressBar,
) -> Result<(usize, FirstBad, f64)> {
    let mut bad = 0usize;
    let mut first_bad = None;
    let mut norm_sum = 0f64;
    let mut reader = RowReader::new(m)?;
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
        if let Some(w) = copy_to.as_deref_mut() {
            w.write_rows(block)?;
        }
        bar.set_position(end as u64);
    }
    Ok((bad, first_bad, norm_sum))
}

/// When `source` already holds the bytes msae would store (a `.npy` with msae's float32 header
/// and nothing after the data), puts them at `out` without rewriting them: a hard link when no
/// one may write the source, else a kernel copy. Returns how, or `None` when the file must be
/// converted (or could be neither linked nor copied).
fn place(m: &Matrix, source: &Path, out: &Path) -> Result<Option<&'static str>> {
    let header = header_bytes(m.rows(), m.cols());
    let expected_len = header.len() as u64 + (m.rows() * m.cols() * 4) as u64;
    // The link must name the file itself, not a symbolic link to it.
    let source = std::fs::canonicalize(source)
        .with_context(|| format!("cannot resolve {}", source.display()))?;
    let meta = std::fs::metadata(&source)?;
    let canonical = matches!(m.layout, Layout::Npy { data_offset } if data_offset == header.len())
        && meta.len() == expected_len
        && {
            use std::io::Read;
            let mut head = vec![0u8; header.len()];
            std::fs::File::open(&source)?.read_exact(&mut head)?;
            head == header
        };
    if !canonical {
        return Ok(None);
    }
    if read_only(&meta) && std::fs::hard_link(&source, out).is_ok() {
        return Ok(Some("hard link"));
    }
    Ok(std::fs::copy(&source, out).is_ok().then_some("copy"))
}

/// Whether no one may write the file (by its permission bits).
fn read_only(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o222 == 0
    }
    #[cfg(not(unix))]
    {
        meta.permissions().readonly()
    }
}
