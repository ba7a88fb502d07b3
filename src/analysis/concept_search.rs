//! Concept-based similarity search: a query embedding is encoded by an SAE, one latent of its
//! code is edited (set, increased, scaled or removed), the code is decoded back into the
//! embedding space, and the rows of a gallery most cosine-similar to the edited embedding are
//! its neighbours. The `concept_search` step runs this; what is here is the arithmetic, as pure
//! functions on host rows:
//!
//! * the edit itself ([`EditOp`], [`parse_edit`], [`EditOp::apply`]);
//! * the edited embedding in the original space ([`EditSpace::edited_row`]): with the
//!   residual, `x' = x + dec(z') − dec(z)` taken back through the standardisation, which — the
//!   decoder being affine and only latent j changing — is `x + (z'_j − z_j)·W_dec[j] / s`
//!   exactly; without it, `x' = (z'·W_dec + b_pre) / s + μ`. Both in float64;
//! * the k nearest gallery rows by cosine, streamed over blocks of the gallery
//!   ([`NearestRows`]), ties to the lower row;
//! * the two relevance tests of a neighbour: a label equal to the concept's name
//!   ([`label_matches`]) and a text holding the concept word as a whole word
//!   ([`contains_word`]), both case-insensitive.
//!
//! Conventions: a row of zero norm has cosine 0 with every row; a NaN cosine never enters a
//! neighbour list.

use super::{AnalysisError, Result};
use crate::metrics::MatRef;

/// What an edit does to the chosen latent's code entry `z_j`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOp {
    /// `z_j = strength · unit`.
    Set,
    /// `z_j = z_j + strength · unit`.
    Add,
    /// `z_j = z_j · strength` (a factor: the unit does not apply).
    Scale,
    /// `z_j = 0` (the strength does not apply).
    Ablate,
}

/// The operations as they are written in an edit, in [`EditOp`]'s order.
pub const OPS: [&str; 4] = ["set", "add", "scale", "ablate"];

impl EditOp {
    pub fn name(self) -> &'static str {
        match self {
            EditOp::Set => OPS[0],
            EditOp::Add => OPS[1],
            EditOp::Scale => OPS[2],
            EditOp::Ablate => OPS[3],
        }
    }

    fn from_name(op: &str) -> Option<EditOp> {
        match op.to_lowercase().as_str() {
            "set" => Some(EditOp::Set),
            "add" => Some(EditOp::Add),
            "scale" => Some(EditOp::Scale),
            "ablate" => Some(EditOp::Ablate),
            _ => None,
        }
    }

    /// Whether the result depends on the strength (all but `ablate`).
    pub fn uses_strength(self) -> bool {
        self != EditOp::Ablate
    }

    /// Whether the strength is measured in a unit (set and add; scale's is a factor).
    pub fn uses_unit(self) -> bool {
        matches!(self, EditOp::Set | EditOp::Add)
    }

    /// The new value of the code entry `current` for `strength` measured in `unit` code units.
    pub fn apply(self, current: f64, strength: f64, unit: f64) -> f64 {
        match self {
            EditOp::Set => strength * unit,
            EditOp::Add => current + strength * unit,
            EditOp::Scale => current * strength,
            EditOp::Ablate => 0.0,
        }
    }
}

/// Splits an edit `"<op> <latent>"` (e.g. `"add dog"`, `"ablate 12"`) into its operation and
/// the latent as written (everything after the first run of whitespace, so concept names of
/// several words stay whole). `param` names the parameter for errors.
pub fn parse_edit<'a>(text: &'a str, param: &str) -> Result<(EditOp, &'a str)> {
    let trimmed = text.trim();
    let (op, rest) = match trimmed.split_once(char::is_whitespace) {
        Some((op, rest)) => (op, rest.trim()),
        None => (trimmed, ""),
    };
    let ops = OPS
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some(parsed) = EditOp::from_name(op) else {
        return Err(AnalysisError::Other(anyhow::anyhow!(
            "`{param}`: `{text}` has the unknown operation `{op}`; an edit is \"<op> <latent>\" with op one of {ops} (e.g. \"add dog\", \"ablate 12\")"
        )));
    };
    if rest.is_empty() {
        return Err(AnalysisError::Other(anyhow::anyhow!(
            "`{param}`: `{text}` names no latent; an edit is \"<op> <latent>\" with the latent an index or a concept name (e.g. \"{op} dog\", \"{op} 12\")"
        )));
    }
    Ok((parsed, rest))
}

/// The SAE's decoder and the standardisation of the queries, on the host: what taking an edited
/// code back into the embedding space needs.
pub struct EditSpace<'a> {
    /// `W_dec`, [n, d] row-major.
    pub decoder: MatRef<'a>,
    /// `b_pre`, `[d]`.
    pub pre_bias: &'a [f32],
    /// The standardisation's μ, `[d]`.
    pub mean: &'a [f32],
    /// The standardisation's s.
    pub scale: f64,
}

impl EditSpace<'_> {
    /// The edited embedding of the original row `x` whose code is `code` (`[n]`) when latent
    /// `latent` takes the value `new_value`; computed in float64 (see the module doc for both
    /// formulas).
    pub fn edited_row(
        &self,
        x: &[f32],
        code: &[f32],
        latent: usize,
        new_value: f64,
        residual: bool,
    ) -> Result<Vec<f32>> {
        let (n, d) = (self.decoder.rows(), self.decoder.cols());
        if x.len() != d || code.len() != n || latent >= n || self.pre_bias.len() != d {
            return Err(AnalysisError::invalid(
                "concept edit",
                format!(
                    "a row of {} values, a code of {} and latent {latent} do not fit a decoder of {n} × {d}",
                    x.len(),
                    code.len()
                ),
            ));
        }
        if self.mean.len() != d || self.scale == 0.0 || !self.scale.is_finite() {
            return Err(AnalysisError::invalid(
                "concept edit",
                format!(
                    "the standardisation (μ of {} values, s = {}) does not fit rows of {d}",
                    self.mean.len(),
                    self.scale
                ),
            ));
        }
        let inv_s = 1.0 / self.scale;
        if residual {
            let delta = (new_value - code[latent] as f64) * inv_s;
            let w = self.decoder.row(latent);
            return Ok(x
                .iter()
                .zip(w)
                .map(|(&xi, &wi)| (xi as f64 + delta * wi as f64) as f32)
                .collect());
        }
        let mut acc: Vec<f64> = self.pre_bias.iter().map(|&b| b as f64).collect();
        for (i, &zi) in code.iter().enumerate() {
            let zi = if i == latent { new_value } else { zi as f64 };
            if zi == 0.0 {
                continue;
            }
            for (a, &w) in acc.iter_mut().zip(self.decoder.row(i)) {
                *a += zi * w as f64;
            }
        }
        Ok(acc
            .iter()
            .zip(self.mean)
            .map(|(&a, &m)| (a * inv_s + m as f64) as f32)
            .collect())
    }
}

fn norm(row: &[f32]) -> f64 {
    row.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// The cosine of two rows in float64 (0 when either has zero norm).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    dot / (na * nb)
}

/// One neighbour of a query: a gallery row and its cosine to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub row: usize,
    pub cosine: f64,
}

/// Edited queries scored against the gallery per block, at most this many at once (the block of
/// dot products is this many × the gallery block's rows).
const QUERY_CHUNK: usize = 1024;

/// The k most cosine-similar gallery rows of every query, gathered over blocks of the gallery
/// given in row order. Ties go to the lower row: a row only displaces a kept one with a
/// strictly larger cosine, and rows arrive in ascending order.
pub struct NearestRows {
    k: usize,
    queries: Vec<f32>,
    d: usize,
    inv_norms: Vec<f64>,
    excluded: Vec<Option<usize>>,
    lists: Vec<Vec<Neighbour>>,
}

impl NearestRows {
    /// `queries` is [rows, d]; `excluded[i]` is a gallery row that query i never takes (itself,
    /// when queries and gallery are one matrix).
    pub fn new(queries: MatRef<'_>, excluded: Vec<Option<usize>>, k: usize) -> Result<Self> {
        if excluded.len() != queries.rows() {
            return Err(AnalysisError::invalid(
                "nearest rows",
                format!(
                    "{} exclusions for {} queries",
                    excluded.len(),
                    queries.rows()
                ),
            ));
        }
        let inv_norms = (0..queries.rows())
            .map(|i| {
                let n = norm(queries.row(i));
                if n > 0.0 {
                    1.0 / n
                } else {
                    0.0
                }
            })
            .collect();
        Ok(NearestRows {
            k,
            queries: queries.data().to_vec(),
            d: queries.cols(),
            inv_norms,
            excluded,
            lists: vec![Vec::with_capacity(k + 1); queries.rows()],
        })
    }

    /// Scores every query against `block`, gallery rows `first_row..first_row + block.rows()`.
    pub fn scan(&mut self, block: MatRef<'_>, first_row: usize) -> Result<()> {
        let d = self.d;
        if block.cols() != d {
            return Err(AnalysisError::invalid(
                "nearest rows",
                format!(
                    "gallery rows of {} values against queries of {d}",
                    block.cols()
                ),
            ));
        }
        let b = block.rows();
        let unit = super::zero_shot::unit_rows(block);
        let rows = self.inv_norms.len();
        let mut dots = vec![0f32; QUERY_CHUNK.min(rows) * b];
        for start in (0..rows).step_by(QUERY_CHUNK) {
            let end = (start + QUERY_CHUNK).min(rows);
            let m = end - start;
            let dots = &mut dots[..m * b];
            // dots = Q · Uᵀ: element (t, j) of the right operand is unit[j·d + t].
            crate::matmul::matmul_into(
                m,
                b,
                d,
                &self.queries[start * d..end * d],
                (d, 1),
                &unit,
                (1, d),
                dots,
            );
            for i in 0..m {
                let q = start + i;
                let inv = self.inv_norms[q];
                let skip = self.excluded[q];
                let list = &mut self.lists[q];
                for (j, &dot) in dots[i * b..(i + 1) * b].iter().enumerate() {
                    let row = first_row + j;
                    if skip == Some(row) {
                        continue;
                    }
                    let c = dot as f64 * inv;
                    if c.is_nan() {
                        continue;
                    }
                    if list.len() == self.k && list.last().is_none_or(|w| c <= w.cosine) {
                        continue;
                    }
                    let at = list.partition_point(|n| n.cosine >= c);
                    list.insert(at, Neighbour { row, cosine: c });
                    list.truncate(self.k);
                }
            }
        }
        Ok(())
    }

    /// The neighbour lists, best first, one per query.
    pub fn finish(self) -> Vec<Vec<Neighbour>> {
        self.lists
    }
}

/// Whether `label` is the concept's name (both trimmed, case-insensitive).
pub fn label_matches(label: &str, concept: &str) -> bool {
    label.trim().to_lowercase() == concept.trim().to_lowercase()
}

/// Whether `text` holds `word` as a whole word, case-insensitively: an occurrence counts when
/// the characters on either side of it are not letters or digits ("dog" is in "a dog's bone",
/// not in "dogs" or "hotdog"). A word of several words matches as written, spaces included.
pub fn contains_word(text: &str, word: &str) -> bool {
    let word = word.trim().to_lowercase();
    if word.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    let mut from = 0;
    while let Some(at) = text[from..].find(&word) {
        let start = from + at;
        let end = start + word.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric) {
            return true;
        }
        // Step past the first character of this occurrence and look again.
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_parse_and_apply() {
        assert_eq!(
            parse_edit("add dog", "edits").unwrap(),
            (EditOp::Add, "dog")
        );
        assert_eq!(
            parse_edit("  Scale   ice cream ", "edits").unwrap(),
            (EditOp::Scale, "ice cream")
        );
        assert_eq!(
            parse_edit("ablate #12", "edits").unwrap(),
            (EditOp::Ablate, "#12")
        );
        let e = parse_edit("boost dog", "edits").unwrap_err().to_string();
        assert!(
            e.contains("`edits`")
                && e.contains("unknown operation `boost`")
                && e.contains("`set`, `add`, `scale`, `ablate`"),
            "{e}"
        );
        let e = parse_edit("add", "edits").unwrap_err().to_string();
        assert!(e.contains("names no latent"), "{e}");
        assert_eq!(EditOp::Set.apply(5.0, 2.0, 1.5), 3.0);
        assert_eq!(EditOp::Add.apply(5.0, 2.0, 1.5), 8.0);
        assert_eq!(EditOp::Scale.apply(5.0, 2.0, 1.5), 10.0);
        assert_eq!(EditOp::Ablate.apply(5.0, 2.0, 1.5), 0.0);
    }

    #[test]
    fn residual_edit_is_the_difference_of_two_decodes() {
        // n = 3 latents, d = 2.
        let dec = [1.0f32, 2.0, -1.0, 0.5, 0.25, 4.0];
        let space = EditSpace {
            decoder: MatRef::new(&dec, 3, 2).unwrap(),
            pre_bias: &[0.1, -0.2],
            mean: &[1.0, 2.0],
            scale: 2.0,
        };
        let x = [3.0f32, -1.0];
        let code = [0.5f32, 0.0, 2.0];
        let plain = space.edited_row(&x, &code, 1, 3.0, false).unwrap();
        let recon = space.edited_row(&x, &code, 1, 0.0, false).unwrap();
        let with = space.edited_row(&x, &code, 1, 3.0, true).unwrap();
        for i in 0..2 {
            let want = x[i] as f64 + plain[i] as f64 - recon[i] as f64;
            assert!((with[i] as f64 - want).abs() < 1e-6, "{with:?}");
        }
        // dec(z) = z·W + b: (0.5·1 + 2·0.25 + 0.1, 0.5·2 + 2·4 − 0.2) = (1.1, 8.8); / 2 + μ.
        assert!((recon[0] - 1.55).abs() < 1e-6 && (recon[1] - 6.4).abs() < 1e-6);
        // An edit that changes nothing gives back x with the residual.
        assert_eq!(space.edited_row(&x, &code, 2, 2.0, true).unwrap(), x);
    }

    #[test]
    fn nearest_rows_equal_a_sort_and_skip_the_excluded_row() {
        // Gallery rows with duplicated directions (ties) and a zero row.
        let gallery: Vec<f32> = vec![
            1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, -1.0, 0.0, 3.0, 0.0,
        ];
        let queries = vec![1.0f32, 0.0, 0.0, 2.0, 0.0, 0.0];
        let qm = MatRef::new(&queries, 3, 2).unwrap();
        let mut nn = NearestRows::new(qm, vec![None, Some(6), None], 4).unwrap();
        // Two blocks of unequal size.
        nn.scan(MatRef::new(&gallery[..6], 3, 2).unwrap(), 0)
            .unwrap();
        nn.scan(MatRef::new(&gallery[6..], 5, 2).unwrap(), 3)
            .unwrap();
        let lists = nn.finish();
        let rows = |l: &Vec<Neighbour>| l.iter().map(|n| n.row).collect::<Vec<_>>();
        // Query 0 is (1, 0): rows 0, 2, 7 have cosine 1 (ties: lower rows first), then row 4.
        assert_eq!(rows(&lists[0]), vec![0, 2, 7, 4]);
        // Query 1 is (0, 2): rows 1 and 5, then row 4, then row 0 (cosine 0, like row 6,
        // which it may not take anyway).
        assert_eq!(rows(&lists[1]), vec![1, 5, 4, 0]);
        // A zero query: cosine 0 everywhere, the lowest rows.
        assert_eq!(rows(&lists[2]), vec![0, 1, 2, 3]);
        assert!((lists[0][3].cosine - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn whole_words_only() {
        assert!(contains_word("A dog's bone", "dog"));
        assert!(contains_word("the DOG", "dog"));
        assert!(contains_word("dog", "Dog"));
        assert!(!contains_word("dogs bark", "dog"));
        assert!(!contains_word("a hotdog", "dog"));
        assert!(contains_word("hotdog, then dog", "dog"));
        assert!(contains_word("sweet ice cream.", "ice cream"));
        assert!(!contains_word("anything", ""));
        assert!(contains_word("naïve café", "café"));
        assert!(label_matches(" Animal", "animal"));
        assert!(!label_matches("noun.animal", "animal"));
    }
}
