//! Concept naming (docs/reference.md §8.3, Discover-then-Name style): every latent is
//! named by the vocabulary entry whose embedding is most cosine-similar to the
//! latent's decoder direction.
//!
//! The similarity matrix `S` ([N_v, n], `S_ij = cos(v_i, C_j)`) is computed in
//! blocks of vocabulary rows, so at most one block of `block_rows × n` scores
//! is in memory at a time. Each block is handed to a sink (for instance an
//! [`NpyWriter`] producing the same `.npy` file as the reference) while the
//! best and runner-up vocabulary entry of every latent (column-wise argmax) is
//! tracked.
//!
//! Two ways of building the compared vectors are offered, see [`Mode`].

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{AnalysisError, Result};
use crate::data::npy::NpyWriter;
use crate::metrics::MatRef;

/// Vocabulary rows per block, as in the reference script.
pub const DEFAULT_BLOCK_ROWS: usize = 4096;

/// Smallest norm used when normalising a row (PyTorch's `F.normalize` eps):
/// a zero row gets similarity 0 with everything instead of NaN.
const NORM_EPS: f64 = 1e-12;

/// Which vectors are compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Exactly the reference: concept vectors `C_j = W_dec[j]/s + μ` (with
    /// `use_bias`, `(W_dec[j] + b_pre)/s + μ`), i.e. decoder rows mapped back
    /// into the embedding space with the training statistics, compared with
    /// the raw vocabulary rows.
    Reference,
    /// msae's default: the decoder directions themselves (`W_dec[j]`, or
    /// `W_dec[j] + b_pre` with `use_bias`, no μ added) compared with the
    /// mean-centred vocabulary `v_i − mean(V)`.
    ///
    /// Why: on real embeddings the training mean μ is large compared with the
    /// scaled decoder rows `W_dec[j]/s` (CLIP embeddings share a big common
    /// component), so every reference concept vector points almost along μ
    /// and every latent receives (nearly) the same words. Removing the common
    /// component on both sides compares what distinguishes a latent with what
    /// distinguishes a word.
    #[default]
    Centered,
}

/// How to name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamingOptions {
    pub mode: Mode,
    /// Add the pre-encoder bias `b_pre` to every decoder row (the reference
    /// parses `--use-bias` but never forwards it, so its output is always
    /// without bias).
    pub use_bias: bool,
    /// Vocabulary rows per block (memory bound: `block_rows × n` scores).
    pub block_rows: usize,
}

impl Default for NamingOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Centered,
            use_bias: false,
            block_rows: DEFAULT_BLOCK_ROWS,
        }
    }
}

/// The trained dictionary and the statistics of its training data.
#[derive(Clone, Copy, Debug)]
pub struct Dictionary<'a> {
    /// Decoder rows `W_dec`, `[n, d]`: row j is latent j's direction.
    pub decoder: MatRef<'a>,
    /// Pre-encoder bias `b_pre`, `[d]` (needed only with `use_bias`).
    pub b_pre: Option<&'a [f32]>,
    /// Training mean μ, `[d]` (used in [`Mode::Reference`]).
    pub mean: &'a [f32],
    /// Training scaling factor s (used in [`Mode::Reference`]).
    pub scale: f64,
}

/// The name of one latent: best and runner-up vocabulary entry.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentName {
    /// Vocabulary row with the highest similarity (lowest index on ties).
    pub best: usize,
    pub best_score: f32,
    /// Second-best vocabulary row; `None` for a one-entry vocabulary.
    pub runner_up: Option<usize>,
    pub runner_up_score: Option<f32>,
}

/// Concept vectors `[n, d]` (before normalisation) as defined by the mode.
///
/// Reference mode computes `w/s + μ` per element in f64 and rounds once to
/// f32 (the reference does it in float32 arithmetic; the results agree to
/// within rounding).
pub fn concept_vectors(dict: &Dictionary<'_>, opts: &NamingOptions) -> Result<Vec<f32>> {
    let d = dict.decoder.cols();
    let bias = match (opts.use_bias, dict.b_pre) {
        (false, _) => None,
        (true, Some(b)) if b.len() == d => Some(b),
        (true, Some(b)) => {
            return Err(AnalysisError::invalid(
                "naming",
                format!("b_pre has {} entries, the decoder rows {d}", b.len()),
            ))
        }
        (true, None) => {
            return Err(AnalysisError::invalid(
                "naming",
                "use_bias is set but no b_pre was given",
            ))
        }
    };
    if opts.mode == Mode::Reference {
        if dict.mean.len() != d {
            return Err(AnalysisError::invalid(
                "naming",
                format!(
                    "the training mean has {} entries, the decoder rows {d}",
                    dict.mean.len()
                ),
            ));
        }
        if !(dict.scale.is_finite() && dict.scale != 0.0) {
            return Err(AnalysisError::invalid(
                "naming",
                format!(
                    "the scaling factor must be finite and non-zero, got {}",
                    dict.scale
                ),
            ));
        }
    }
    let mut out = dict.decoder.data().to_vec();
    if d == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(d).for_each(|row| {
        if let Some(b) = bias {
            match opts.mode {
                Mode::Reference => row.iter_mut().zip(b).for_each(|(v, &b)| {
                    *v = ((*v as f64 + b as f64) / dict.scale) as f32;
                }),
                Mode::Centered => row.iter_mut().zip(b).for_each(|(v, &b)| *v += b),
            }
        } else if opts.mode == Mode::Reference {
            row.iter_mut()
                .for_each(|v| *v = (*v as f64 / dict.scale) as f32);
        }
        if opts.mode == Mode::Reference {
            row.iter_mut()
                .zip(dict.mean)
                .for_each(|(v, &m)| *v = (*v as f64 + m as f64) as f32);
        }
    });
    Ok(out)
}

/// Column mean of a matrix, accumulated in f64, returned as f32.
pub fn column_mean(x: MatRef<'_>) -> Vec<f32> {
    let (n, d) = (x.rows(), x.cols());
    if n == 0 || d == 0 {
        return vec![0.0; d];
    }
    let sums = x
        .data()
        .par_chunks(1024 * d)
        .map(|block| {
            let mut s = vec![0.0f64; d];
            for row in block.chunks_exact(d) {
                s.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
            }
            s
        })
        .reduce(
            || vec![0.0f64; d],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    sums.into_iter().map(|s| (s / n as f64) as f32).collect()
}

/// Scales a row to unit L2 norm in place (norm in f64, floored at 1e-12).
fn normalize_row(row: &mut [f32]) {
    let norm = row
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
        .max(NORM_EPS);
    let inv = (1.0 / norm) as f32;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Best and second-best (score, index); lower index wins ties, NaN never wins.
#[derive(Clone, Copy, Debug)]
struct Top2 {
    best: (f32, usize),
    second: (f32, usize),
}

const EMPTY: (f32, usize) = (f32::NEG_INFINITY, usize::MAX);

impl Top2 {
    fn new() -> Self {
        Self {
            best: EMPTY,
            second: EMPTY,
        }
    }

    #[inline]
    fn beats(score: f32, idx: usize, other: (f32, usize)) -> bool {
        score > other.0 || (score == other.0 && idx < other.1)
    }

    #[inline]
    fn offer(&mut self, score: f32, idx: usize) {
        if Self::beats(score, idx, self.best) {
            self.second = self.best;
            self.best = (score, idx);
        } else if Self::beats(score, idx, self.second) {
            self.second = (score, idx);
        }
    }
}

/// Prepared concept directions; computes similarity blocks for vocabulary rows.
pub struct Namer {
    n: usize,
    d: usize,
    /// Unit-norm concept vectors, `[n, d]`.
    concepts: Vec<f32>,
    /// Subtracted from every vocabulary row before normalising (centred mode).
    vocab_shift: Option<Vec<f32>>,
}

impl Namer {
    /// Prepares the concept vectors of `dict` for comparison with `vocab`
    /// (the vocabulary is read once here in centred mode, for its mean).
    pub fn new(dict: &Dictionary<'_>, vocab: MatRef<'_>, opts: &NamingOptions) -> Result<Self> {
        let (n, d) = (dict.decoder.rows(), dict.decoder.cols());
        if d == 0 {
            return Err(AnalysisError::invalid(
                "naming",
                "the decoder rows have no dimensions",
            ));
        }
        if vocab.cols() != d {
            return Err(AnalysisError::invalid(
                "naming",
                format!(
                    "vocabulary rows have {} dimensions, decoder rows {d}; the vocabulary must come from the same embedding model",
                    vocab.cols()
                ),
            ));
        }
        let mut concepts = concept_vectors(dict, opts)?;
        if d > 0 {
            concepts.par_chunks_mut(d).for_each(normalize_row);
        }
        let vocab_shift = (opts.mode == Mode::Centered).then(|| column_mean(vocab));
        Ok(Self {
            n,
            d,
            concepts,
            vocab_shift,
        })
    }

    /// Number of latents (columns of the similarity matrix).
    pub fn latents(&self) -> usize {
        self.n
    }

    /// Similarities of `rows` vocabulary rows (row-major `[rows, d]`) with
    /// every concept, written row-major into `out` (`[rows, n]`).
    pub fn similarity_block(&self, vocab_rows: &[f32], out: &mut [f32]) -> Result<()> {
        let (n, d) = (self.n, self.d);
        let rows = vocab_rows.len() / d;
        if vocab_rows.len() != rows * d || out.len() != rows * n {
            return Err(AnalysisError::invalid(
                "naming",
                format!(
                    "a block of {} values is not whole rows of {d}, or the output ({} values) is not {rows}×{n}",
                    vocab_rows.len(),
                    out.len()
                ),
            ));
        }
        if n == 0 || rows == 0 {
            return Ok(());
        }
        let mut prepared = vocab_rows.to_vec();
        prepared.par_chunks_mut(d).for_each(|row| {
            if let Some(shift) = &self.vocab_shift {
                row.iter_mut().zip(shift).for_each(|(v, &m)| *v -= m);
            }
            normalize_row(row);
        });
        // Enough tasks for every thread, each large enough that repacking the
        // concept matrix inside sgemm stays a small part of its work.
        let threads = rayon::current_num_threads().max(1);
        let task_rows = rows.div_ceil(threads * 2).max(32);
        let concepts = &self.concepts;
        out.par_chunks_mut(task_rows * n)
            .zip(prepared.par_chunks(task_rows * d))
            .for_each(|(c, a)| {
                let m = a.len() / d;
                debug_assert_eq!(c.len(), m * n);
                // SAFETY: `a` holds m×d values (row stride d), the concepts
                // n×d values read as the d×n transpose (row stride 1, column
                // stride d), `c` holds m×n values (row stride n); all three
                // lengths were checked above, and `c` does not alias them.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        d,
                        n,
                        1.0,
                        a.as_ptr(),
                        d as isize,
                        1,
                        concepts.as_ptr(),
                        1,
                        d as isize,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            });
        Ok(())
    }

    /// Streams the whole similarity matrix through `sink` in blocks of at most
    /// `block_rows` vocabulary rows (`sink(first_row, block)`, block row-major
    /// `[rows, n]`) and returns every latent's best and runner-up entry.
    pub fn run(
        &self,
        vocab: MatRef<'_>,
        block_rows: usize,
        mut sink: impl FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<Vec<LatentName>> {
        if vocab.cols() != self.d {
            return Err(AnalysisError::invalid(
                "naming",
                format!(
                    "vocabulary rows have {} dimensions, the concepts {}",
                    vocab.cols(),
                    self.d
                ),
            ));
        }
        if vocab.rows() == 0 {
            return Err(AnalysisError::invalid("naming", "the vocabulary is empty"));
        }
        if block_rows == 0 {
            return Err(AnalysisError::invalid(
                "naming",
                "block_rows must be at least 1",
            ));
        }
        let n = self.n;
        let mut top = vec![Top2::new(); n];
        let mut block = vec![0.0f32; block_rows.min(vocab.rows()) * n];
        let mut start = 0;
        while start < vocab.rows() {
            let end = (start + block_rows).min(vocab.rows());
            let rows = end - start;
            let scores = &mut block[..rows * n];
            self.similarity_block(&vocab.data()[start * self.d..end * self.d], scores)?;
            let scores = &*scores;
            // Each task owns a range of columns and scans every row of the block.
            const COLS_PER_TASK: usize = 256;
            top.par_chunks_mut(COLS_PER_TASK)
                .enumerate()
                .for_each(|(t, cols)| {
                    let j0 = t * COLS_PER_TASK;
                    for r in 0..rows {
                        let row = &scores[r * n + j0..r * n + j0 + cols.len()];
                        for (tracker, &s) in cols.iter_mut().zip(row) {
                            tracker.offer(s, start + r);
                        }
                    }
                });
            sink(start, scores)?;
            start = end;
        }
        top.into_iter()
            .enumerate()
            .map(|(j, t)| {
                if t.best.1 == usize::MAX {
                    return Err(AnalysisError::invalid(
                        "naming",
                        format!("latent {j} has no finite similarity with any vocabulary entry (NaN in the inputs?)"),
                    ));
                }
                let second = (t.second.1 != usize::MAX).then_some(t.second);
                Ok(LatentName {
                    best: t.best.1,
                    best_score: t.best.0,
                    runner_up: second.map(|s| s.1),
                    runner_up_score: second.map(|s| s.0),
                })
            })
            .collect()
    }
}

/// Names every latent of `dict` against `vocab`; with `out`, also writes the
/// whole similarity matrix `[N_v, n]` there as a float32 `.npy`, streamed
/// block by block.
pub fn name_latents(
    dict: &Dictionary<'_>,
    vocab: MatRef<'_>,
    opts: &NamingOptions,
    out: Option<&Path>,
) -> Result<Vec<LatentName>> {
    let namer = Namer::new(dict, vocab, opts)?;
    match out {
        None => namer.run(vocab, opts.block_rows, |_, _| Ok(())),
        Some(path) => {
            let mut writer = NpyWriter::create(path, vocab.rows(), namer.latents())?;
            let names = namer.run(vocab, opts.block_rows, |_, block| {
                writer.write_rows(block).map_err(AnalysisError::from)
            })?;
            writer.finish()?;
            Ok(names)
        }
    }
}

/// The reference's output file name (docs/reference.md §8.3 step 4):
/// `Concept_Interpreter_{model}_{vocab}.npy` where `/` becomes `~` and the
/// substrings `.pth`, `.pt` and `.npy` are removed before `.npy` is appended.
pub fn reference_output_name(model_path: &str, vocab_path: &str) -> String {
    let base = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| p.to_string())
    };
    let name = format!(
        "Concept_Interpreter_{}_{}",
        base(model_path),
        base(vocab_path)
    );
    let name = name
        .replace('/', "~")
        .replace(".pth", "")
        .replace(".pt", "")
        .replace(".npy", "");
    format!("{name}.npy")
}

/// Fraction of latents whose best vocabulary entry is their true feature
/// (`best[j] == truth[j]`). Latents present in only one of the two lists
/// count as misses (the denominator is the longer length); NaN when both are
/// empty.
pub fn naming_accuracy(best: &[usize], truth: &[usize]) -> f64 {
    let total = best.len().max(truth.len());
    if total == 0 {
        return f64::NAN;
    }
    let hits = best.iter().zip(truth).filter(|(b, t)| b == t).count();
    hits as f64 / total as f64
}

/// Truth for [`naming_accuracy`] on a planted dictionary: a greedy one-to-one
/// matching of latents (rows of `decoder`, `[n, d]`) to true features (rows
/// of `features`, `[m, d]`) by decreasing cosine similarity (sign matters: a latent pointing away from
/// a feature does not represent it). Each latent and each feature is used at
/// most once; latents left without a feature (n > m) get `None`.
pub fn greedy_truth(decoder: MatRef<'_>, features: MatRef<'_>) -> Result<Vec<Option<usize>>> {
    let d = decoder.cols();
    if features.cols() != d {
        return Err(AnalysisError::invalid(
            "greedy matching",
            format!(
                "decoder rows have {d} dimensions, feature rows {}",
                features.cols()
            ),
        ));
    }
    let unit = |m: MatRef<'_>| -> Vec<f32> {
        let mut v = m.data().to_vec();
        if d > 0 {
            v.par_chunks_mut(d).for_each(normalize_row);
        }
        v
    };
    let (a, b) = (unit(decoder), unit(features));
    let (n, m) = (decoder.rows(), features.rows());
    let mut pairs: Vec<(f32, usize, usize)> = (0..n)
        .into_par_iter()
        .flat_map_iter(|j| {
            let aj = &a[j * d..(j + 1) * d];
            let b = &b;
            (0..m).map(move |k| {
                let bk = &b[k * d..(k + 1) * d];
                (aj.iter().zip(bk).map(|(x, y)| x * y).sum::<f32>(), j, k)
            })
        })
        .collect();
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut truth = vec![None; n];
    let mut used = vec![false; m];
    let mut left = n.min(m);
    for (_, j, k) in pairs {
        if left == 0 {
            break;
        }
        if truth[j].is_none() && !used[k] {
            truth[j] = Some(k);
            used[k] = true;
            left -= 1;
        }
    }
    Ok(truth)
}

/// One row of a "most frequent latents" listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedLatent {
    pub latent: usize,
    pub frequency: f64,
    pub word: String,
    pub score: f32,
    pub runner_up_word: Option<String>,
    pub runner_up_score: Option<f32>,
}

/// The `top` latents by activation frequency (highest first, NaN last, ties
/// by latent index) with their names looked up in the vocabulary's text list.
pub fn top_latents_by_frequency(
    frequencies: &[f64],
    names: &[LatentName],
    words: &[String],
    top: usize,
) -> Result<Vec<NamedLatent>> {
    if frequencies.len() != names.len() {
        return Err(AnalysisError::invalid(
            "naming",
            format!(
                "{} activation frequencies for {} named latents",
                frequencies.len(),
                names.len()
            ),
        ));
    }
    let word = |i: usize| {
        words.get(i).cloned().ok_or_else(|| {
            AnalysisError::invalid(
                "naming",
                format!(
                    "vocabulary entry {i} is missing from the text list ({} entries); the list and the embedding matrix do not match",
                    words.len()
                ),
            )
        })
    };
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (frequencies[a], frequencies[b]);
        match (fa.is_nan(), fb.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => fb.total_cmp(&fa).then(a.cmp(&b)),
        }
    });
    order
        .into_iter()
        .take(top)
        .map(|j| {
            let name = &names[j];
            Ok(NamedLatent {
                latent: j,
                frequency: frequencies[j],
                word: word(name.best)?,
                score: name.best_score,
                runner_up_word: name.runner_up.map(word).transpose()?,
                runner_up_score: name.runner_up_score,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mat(data: &[f32], rows: usize, cols: usize) -> MatRef<'_> {
        MatRef::new(data, rows, cols).unwrap()
    }

    fn cos(a: &[f64], b: &[f64]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    /// Runs the namer with one block and returns (S as rows, names).
    fn full(
        dict: &Dictionary<'_>,
        vocab: MatRef<'_>,
        opts: &NamingOptions,
    ) -> (Vec<f32>, Vec<LatentName>) {
        let namer = Namer::new(dict, vocab, opts).unwrap();
        let mut s = Vec::new();
        let names = namer
            .run(vocab, opts.block_rows, |_, b| {
                s.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        (s, names)
    }

    // Two latents in d = 3, two vocabulary rows.
    const W: [f32; 6] = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0];
    const MU: [f32; 3] = [0.0, 0.0, 1.0];
    const V: [f32; 6] = [1.0, 0.0, 1.0, 0.0, 1.0, 3.0];

    #[test]
    fn reference_mode_hand_example() {
        // s = 2: C_0 = (0.5, 0, 1), C_1 = (0, 1, 1).
        // S_00 = cos((1,0,1),(0.5,0,1)) = 1.5/(√2·√1.25) = 0.948683
        // S_01 = cos((1,0,1),(0,1,1)) = 1/(√2·√2) = 0.5
        // S_10 = cos((0,1,3),(0.5,0,1)) = 3/(√10·√1.25) = 0.848528
        // S_11 = cos((0,1,3),(0,1,1)) = 4/(√10·√2) = 0.894427
        let dict = Dictionary {
            decoder: mat(&W, 2, 3),
            b_pre: None,
            mean: &MU,
            scale: 2.0,
        };
        let opts = NamingOptions {
            mode: Mode::Reference,
            ..Default::default()
        };
        let (s, names) = full(&dict, mat(&V, 2, 3), &opts);
        let expect = [0.948683, 0.5, 0.848528, 0.894427];
        for (a, e) in s.iter().zip(expect) {
            assert!((*a as f64 - e).abs() < 1e-5, "{s:?}");
        }
        assert_eq!(names[0].best, 0);
        assert_eq!(names[0].runner_up, Some(1));
        assert_eq!(names[1].best, 1);
        assert!((names[1].best_score as f64 - 0.894427).abs() < 1e-5);
        assert!((names[1].runner_up_score.unwrap() as f64 - 0.5).abs() < 1e-5);
    }

    #[test]
    fn reference_mode_with_bias() {
        // b_pre = (1, 1, 0), s = 2: C_0 = ((1,0,0)+(1,1,0))/2 + μ = (1, 0.5, 1),
        // C_1 = ((0,2,0)+(1,1,0))/2 + μ = (0.5, 1.5, 1).
        let b = [1.0f32, 1.0, 0.0];
        let dict = Dictionary {
            decoder: mat(&W, 2, 3),
            b_pre: Some(&b),
            mean: &MU,
            scale: 2.0,
        };
        let opts = NamingOptions {
            mode: Mode::Reference,
            use_bias: true,
            ..Default::default()
        };
        let c = concept_vectors(&dict, &opts).unwrap();
        assert_eq!(c, vec![1.0, 0.5, 1.0, 0.5, 1.5, 1.0]);
        let (s, _) = full(&dict, mat(&V, 2, 3), &opts);
        let c0 = [1.0, 0.5, 1.0];
        let c1 = [0.5, 1.5, 1.0];
        let v0 = [1.0, 0.0, 1.0];
        let v1 = [0.0, 1.0, 3.0];
        let expect = [cos(&v0, &c0), cos(&v0, &c1), cos(&v1, &c0), cos(&v1, &c1)];
        for (a, e) in s.iter().zip(expect) {
            assert!((*a as f64 - e).abs() < 1e-6, "{s:?} vs {expect:?}");
        }
        // Without the flag the bias is ignored even when given.
        let plain = NamingOptions {
            mode: Mode::Reference,
            ..Default::default()
        };
        assert_eq!(
            concept_vectors(&dict, &plain).unwrap(),
            vec![0.5, 0.0, 1.0, 0.0, 1.0, 1.0]
        );
    }

    #[test]
    fn centered_mode_hand_example() {
        // mean(V) = (0.5, 0.5, 2): centred rows (0.5, −0.5, −1) and (−0.5, 0.5, 1).
        // C_0 = (1, 0, 0), C_1 = (0, 2, 0) (μ and s play no role).
        // S_00 = 0.5/√1.5 = 0.408248, S_01 = −0.408248, S_10 = −0.408248, S_11 = 0.408248.
        let dict = Dictionary {
            decoder: mat(&W, 2, 3),
            b_pre: None,
            mean: &MU,
            scale: 2.0,
        };
        let (s, names) = full(&dict, mat(&V, 2, 3), &NamingOptions::default());
        let k = 0.5 / 1.5f64.sqrt();
        for (a, e) in s.iter().zip([k, -k, -k, k]) {
            assert!((*a as f64 - e).abs() < 1e-6, "{s:?}");
        }
        assert_eq!((names[0].best, names[1].best), (0, 1));
        // With bias (1, 1, 0): C_0 = (2, 1, 0), C_1 = (1, 3, 0).
        let b = [1.0f32, 1.0, 0.0];
        let dict = Dictionary {
            b_pre: Some(&b),
            ..dict
        };
        let opts = NamingOptions {
            use_bias: true,
            ..Default::default()
        };
        let (s, _) = full(&dict, mat(&V, 2, 3), &opts);
        let v0 = [0.5, -0.5, -1.0];
        let v1 = [-0.5, 0.5, 1.0];
        let c0 = [2.0, 1.0, 0.0];
        let c1 = [1.0, 3.0, 0.0];
        let expect = [cos(&v0, &c0), cos(&v0, &c1), cos(&v1, &c0), cos(&v1, &c1)];
        for (a, e) in s.iter().zip(expect) {
            assert!((*a as f64 - e).abs() < 1e-6, "{s:?} vs {expect:?}");
        }
    }

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..rows * cols)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect()
    }

    #[test]
    fn blocks_give_the_same_matrix_and_names() {
        let (n, d, nv) = (37, 11, 103);
        let w = random(n, d, 1);
        let v = random(nv, d, 2);
        let mu = random(1, d, 3);
        for mode in [Mode::Reference, Mode::Centered] {
            let dict = Dictionary {
                decoder: mat(&w, n, d),
                b_pre: None,
                mean: &mu,
                scale: 0.7,
            };
            let one = NamingOptions {
                mode,
                use_bias: false,
                block_rows: 4096,
            };
            let (s1, n1) = full(&dict, mat(&v, nv, d), &one);
            for block_rows in [1, 7, 50, 103] {
                let opts = NamingOptions {
                    block_rows,
                    ..one.clone()
                };
                let (s2, n2) = full(&dict, mat(&v, nv, d), &opts);
                assert_eq!(s1, s2, "block_rows {block_rows}");
                assert_eq!(n1, n2);
            }
            // Against a direct f64 computation and a brute-force argmax.
            let vm = column_mean(mat(&v, nv, d));
            let c = concept_vectors(&dict, &one).unwrap();
            for j in 0..n {
                let cj: Vec<f64> = c[j * d..(j + 1) * d].iter().map(|&x| x as f64).collect();
                let mut col: Vec<(f64, usize)> = (0..nv)
                    .map(|i| {
                        let vi: Vec<f64> = (0..d)
                            .map(|k| {
                                let x = v[i * d + k] as f64;
                                if mode == Mode::Centered {
                                    x - vm[k] as f64
                                } else {
                                    x
                                }
                            })
                            .collect();
                        let e = cos(&vi, &cj);
                        assert!((s1[i * n + j] as f64 - e).abs() < 1e-5);
                        (s1[i * n + j] as f64, i)
                    })
                    .collect();
                col.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                assert_eq!(n1[j].best, col[0].1);
                assert_eq!(n1[j].runner_up, Some(col[1].1));
                assert_eq!(n1[j].best_score as f64, col[0].0);
            }
        }
    }

    #[test]
    fn ties_pick_the_lowest_index_and_single_entry_has_no_runner_up() {
        let w = [1.0f32, 0.0];
        let v = [2.0f32, 0.0, 1.0, 0.0, 3.0, 0.0];
        let dict = Dictionary {
            decoder: mat(&w, 1, 2),
            b_pre: None,
            mean: &[0.0, 0.0],
            scale: 1.0,
        };
        let opts = NamingOptions {
            mode: Mode::Reference,
            block_rows: 2,
            ..Default::default()
        };
        let (_, names) = full(&dict, mat(&v, 3, 2), &opts);
        assert_eq!(names[0].best, 0);
        assert_eq!(names[0].runner_up, Some(1));
        let (_, names) = full(&dict, mat(&v[..2], 1, 2), &opts);
        assert_eq!(names[0].runner_up, None);
    }

    #[test]
    fn writes_the_npy_file() {
        let (n, d, nv) = (5, 4, 9);
        let w = random(n, d, 4);
        let v = random(nv, d, 5);
        let mu = [0.1f32; 4];
        let dict = Dictionary {
            decoder: mat(&w, n, d),
            b_pre: None,
            mean: &mu,
            scale: 1.5,
        };
        let opts = NamingOptions {
            block_rows: 4,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npy");
        let names = name_latents(&dict, mat(&v, nv, d), &opts, Some(&p)).unwrap();
        let m = crate::data::npy::Matrix::open(&p).unwrap();
        assert_eq!((m.rows(), m.cols()), (nv, n));
        let (s, n2) = full(&dict, mat(&v, nv, d), &opts);
        assert_eq!(m.data(), &s[..]);
        assert_eq!(names, n2);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let w = [1.0f32, 0.0];
        let v = [1.0f32, 0.0, 0.0];
        let dict = Dictionary {
            decoder: mat(&w, 1, 2),
            b_pre: None,
            mean: &[0.0, 0.0],
            scale: 1.0,
        };
        assert!(Namer::new(&dict, mat(&v, 1, 3), &NamingOptions::default()).is_err());
        let opts = NamingOptions {
            use_bias: true,
            ..Default::default()
        };
        assert!(Namer::new(&dict, mat(&v[..2], 1, 2), &opts).is_err());
        let zero_scale = Dictionary { scale: 0.0, ..dict };
        let reference = NamingOptions {
            mode: Mode::Reference,
            ..Default::default()
        };
        assert!(Namer::new(&zero_scale, mat(&v[..2], 1, 2), &reference).is_err());
        let namer = Namer::new(&dict, mat(&v[..2], 1, 2), &NamingOptions::default()).unwrap();
        assert!(namer.run(mat(&[], 0, 2), 4, |_, _| Ok(())).is_err());
        assert!(namer.run(mat(&v[..2], 1, 2), 0, |_, _| Ok(())).is_err());
    }

    #[test]
    fn accuracy_and_frequency_listing() {
        assert_eq!(naming_accuracy(&[1, 2, 3, 4], &[1, 0, 3, 4]), 0.75);
        assert_eq!(naming_accuracy(&[1, 2], &[1, 2, 3, 4]), 0.5);
        assert!(naming_accuracy(&[], &[]).is_nan());

        let names = [
            LatentName {
                best: 0,
                best_score: 0.9,
                runner_up: Some(1),
                runner_up_score: Some(0.5),
            },
            LatentName {
                best: 2,
                best_score: 0.8,
                runner_up: None,
                runner_up_score: None,
            },
            LatentName {
                best: 1,
                best_score: 0.7,
                runner_up: Some(0),
                runner_up_score: Some(0.1),
            },
        ];
        let words: Vec<String> = ["cat", "dog", "car"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let top = top_latents_by_frequency(&[0.1, f64::NAN, 0.3], &names, &words, 2).unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].latent, top[0].word.as_str()), (2, "dog"));
        assert_eq!(top[0].runner_up_word.as_deref(), Some("cat"));
        assert_eq!((top[1].latent, top[1].word.as_str()), (0, "cat"));
        assert!(top_latents_by_frequency(&[0.1], &names, &words, 2).is_err());
        assert!(top_latents_by_frequency(&[0.1, 0.2, 0.3], &names, &words[..1], 3).is_err());
    }

    #[test]
    fn greedy_truth_matches_one_to_one() {
        // Latent 0 is closest to feature 1; latent 1 also prefers feature 1
        // but gets feature 0; latent 2 has nothing left.
        let w = [0.0f32, 1.0, 0.1, 1.0, -1.0, -1.0];
        let f = [1.0f32, 0.0, 0.0, 1.0];
        let t = greedy_truth(mat(&w, 3, 2), mat(&f, 2, 2)).unwrap();
        assert_eq!(t, vec![Some(1), Some(0), None]);
        assert!(greedy_truth(mat(&w, 3, 2), mat(&w[..3], 1, 3)).is_err());
    }

    #[test]
    fn reference_file_name() {
        assert_eq!(
            reference_output_name(
                "ckpt/6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth",
                "emb/laion_ViT-L~14_-1_text_52445_768.npy"
            ),
            "Concept_Interpreter_6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768_laion_ViT-L~14_-1_text_52445_768.npy"
        );
    }

    /// Real vocabulary (skipped when the shared data folder is absent): latents
    /// planted along `v_t − μ` (directions of vocabulary words in the
    /// standardised space of a training set) must be named after their words
    /// in centred mode; the reference mode's `W/s + μ` is dominated by μ.
    #[test]
    fn planted_words_on_real_vocabulary() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        let vocab_path = dir.join("disect_minilm_20000_384.npy");
        let train_path = dir.join("wordnet_lexname_train_14670_384.npy");
        if !vocab_path.exists() || !train_path.exists() {
            eprintln!("skipping: real data not found in {}", dir.display());
            return;
        }
        use crate::data::npy::Matrix;
        use crate::metrics::{dataset_stats, StatsOptions};
        use rand::{Rng, SeedableRng};
        let vocab = Matrix::open(&vocab_path).unwrap();
        let train = Matrix::open(&train_path).unwrap();
        let d = vocab.cols();
        let mut src = mat(train.data(), train.rows(), d);
        let stats = dataset_stats(&mut src, &StatsOptions::default()).unwrap();
        let n = 256;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let truth: Vec<usize> = (0..n).map(|_| rng.random_range(0..vocab.rows())).collect();
        let mut w = Vec::with_capacity(n * d);
        for &t in &truth {
            let mut row: Vec<f32> = vocab
                .row(t)
                .iter()
                .zip(&stats.mean)
                .map(|(v, m)| v - m)
                .collect();
            normalize_row(&mut row);
            w.extend(row);
        }
        let dict = Dictionary {
            decoder: mat(&w, n, d),
            b_pre: None,
            mean: &stats.mean,
            scale: stats.scale,
        };
        let v = mat(vocab.data(), vocab.rows(), d);
        let mut acc = [0.0; 2];
        let mut distinct = [0usize; 2];
        for (k, mode) in [Mode::Centered, Mode::Reference].into_iter().enumerate() {
            let opts = NamingOptions {
                mode,
                ..Default::default()
            };
            let t = std::time::Instant::now();
            let names = name_latents(&dict, v, &opts, None).unwrap();
            let best: Vec<usize> = names.iter().map(|x| x.best).collect();
            acc[k] = naming_accuracy(&best, &truth);
            let mut uniq = best.clone();
            uniq.sort_unstable();
            uniq.dedup();
            distinct[k] = uniq.len();
            eprintln!(
                "{mode:?}: accuracy {:.3}, {} distinct names of {n}, {:.2} s",
                acc[k],
                distinct[k],
                t.elapsed().as_secs_f64()
            );
        }
        assert!(acc[0] > 0.9, "{acc:?}");
        assert!(acc[1] < acc[0]);
    }
}
