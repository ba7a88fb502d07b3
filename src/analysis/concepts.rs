//! Which named latents are concepts: three rules, each a pure function of the naming results
//! (docs/step-kinds.md, "concepts", states them for users).
//!
//! * `cosine`: the latent's name matches with cosine at least a threshold.
//! * `mutual`: the latent's best word has that latent as its own best latent (a mutual best
//!   match in the similarity matrix; ties go to the lower index).
//! * `round_trip`: the word's own embedding, encoded by the SAE, has the latent among its `m`
//!   strongest activations (and the activation is positive).

use crate::metrics::MatRef;

/// For every vocabulary row, the latent it is most similar to (`similarity` is
/// `[N_vocab, n]`; ties go to the lower latent index).
pub fn best_latent_per_word(similarity: MatRef<'_>) -> Vec<usize> {
    (0..similarity.rows())
        .map(|w| {
            let row = similarity.row(w);
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// `mutual`: latent j (named `word_of[j]`) is valid when that word's best latent is j.
pub fn mutual(word_of: &[usize], best_latent_of_word: &[usize]) -> Vec<bool> {
    word_of
        .iter()
        .enumerate()
        .map(|(j, &w)| best_latent_of_word.get(w) == Some(&j))
        .collect()
}

/// `cosine`: latent j is valid when its name's cosine reaches `min`.
pub fn by_cosine(cosines: &[f32], min: f32) -> Vec<bool> {
    cosines.iter().map(|&c| c >= min).collect()
}

/// Whether latent `j` is among the `m` strongest positive entries of `code` (ties with a lower
/// index rank first).
pub fn among_strongest(code: &[f32], j: usize, m: usize) -> bool {
    let v = code[j];
    if v <= 0.0 || m == 0 {
        return false;
    }
    let ahead = code
        .iter()
        .enumerate()
        .filter(|&(i, &u)| u > v || (u == v && i < j))
        .count();
    ahead < m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_on_a_hand_made_case() {
        // 3 words × 4 latents.
        let sim = [
            0.9, 0.1, 0.2, 0.9, //
            0.1, 0.8, 0.7, 0.0, //
            0.0, 0.1, 0.6, 0.1f32,
        ];
        let m = MatRef::new(&sim, 3, 4).unwrap();
        // Word 0 ties between latents 0 and 3: the lower index wins.
        assert_eq!(best_latent_per_word(m), vec![0, 1, 2]);
        // Latents named: 0 → word 0, 1 → word 1, 2 → word 1 (its best word, but word 1's best
        // latent is 1), 3 → word 0 (word 0's best latent is 0).
        assert_eq!(
            mutual(&[0, 1, 1, 0], &[0, 1, 2]),
            vec![true, true, false, false]
        );
        assert_eq!(
            by_cosine(&[0.9, 0.8, 0.7, 0.9], 0.75),
            vec![true, true, false, true]
        );
        let code = [0.0, 2.0, 1.0, 2.0, -1.0];
        assert!(among_strongest(&code, 1, 1));
        assert!(!among_strongest(&code, 3, 1), "the tie goes to latent 1");
        assert!(among_strongest(&code, 3, 2));
        assert!(!among_strongest(&code, 2, 2) && among_strongest(&code, 2, 3));
        assert!(
            !among_strongest(&code, 0, 5),
            "a silent latent is never valid"
        );
        assert!(!among_strongest(&code, 4, 5));
    }
}
