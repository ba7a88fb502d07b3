//! The latent names a `name` step wrote, read back, and latents chosen by the user — by index or
//! by concept name — resolved against them. Shared by the kinds that take concepts as
//! parameters (`concepts`, `concept_search`, `bias`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// One latent's name as the `name` step wrote it.
pub struct Named {
    /// The best-matching vocabulary word.
    pub word: String,
    /// Its row in the vocabulary.
    pub index: usize,
    /// Its cosine to the latent's decoder direction.
    pub score: f32,
}

/// Reads a `name` step's names list (`from` is the reference it came through, for errors) and
/// checks it names the `n` latents of the SAE it is used with.
pub fn read_names(path: &Path, from: &str, n: usize) -> Result<Vec<Named>> {
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("`names` (from {from}) is not JSON"))?;
    let rows = doc
        .as_array()
        .ok_or_else(|| anyhow!("`names` (from {from}) is not a `name` step's names list"))?;
    if rows.len() != n {
        bail!(
            "`names` (from {from}) names {} latents but the SAE has {n}; give the names of this SAE",
            rows.len()
        );
    }
    rows.iter()
        .map(|r| {
            Some(Named {
                word: r["word"].as_str()?.to_string(),
                index: r["index"].as_u64()? as usize,
                score: r["score"].as_f64()? as f32,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("`names` (from {from}) lacks a word, index or score"))
}

/// A latent the user chose: its index and the name it goes by in outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub latent: usize,
    pub name: String,
}

/// Resolves `what` — a latent index (`"1234"`, also `"#1234"`) or a concept name — to a latent.
/// A name matches the latents whose best word it is (case-insensitively); when several latents
/// carry it, the one whose decoder direction is closest to the word (highest cosine) is the
/// concept. `param` names the parameter for errors; `names` may be absent when only indices are
/// used.
pub fn resolve(what: &str, names: Option<&[Named]>, n: usize, param: &str) -> Result<Chosen> {
    let trimmed = what.trim();
    let digits = trimmed.strip_prefix('#').unwrap_or(trimmed);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let latent: usize = digits
            .parse()
            .map_err(|_| anyhow!("`{param}`: latent `{what}` is not a valid index"))?;
        if latent >= n {
            bail!(
                "`{param}`: latent {latent} does not exist; the SAE has {n} latents (0 to {})",
                n - 1
            );
        }
        let name = names
            .map(|all| all[latent].word.clone())
            .unwrap_or_else(|| format!("#{latent}"));
        return Ok(Chosen { latent, name });
    }
    let Some(all) = names else {
        bail!("`{param}`: `{what}` is not a latent index, and concept names need `names` (a `name` step's names of this SAE, e.g. names = \"names.names\")");
    };
    let wanted = trimmed.to_lowercase();
    let best = all
        .iter()
        .enumerate()
        .filter(|(_, n)| n.word.to_lowercase() == wanted)
        .max_by(|a, b| a.1.score.total_cmp(&b.1.score).then(b.0.cmp(&a.0)));
    match best {
        Some((latent, named)) => Ok(Chosen {
            latent,
            name: named.word.clone(),
        }),
        None => {
            let nearest = all
                .iter()
                .map(|n| {
                    (
                        strsim::jaro_winkler(&n.word.to_lowercase(), &wanted),
                        &n.word,
                    )
                })
                .filter(|(s, _)| *s > 0.85)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match nearest {
                Some((_, w)) => format!("; did you mean `{w}`?"),
                None => String::new(),
            };
            bail!("`{param}`: no latent of this SAE is named `{what}` (names are the `name` step's best words){hint}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(words: &[(&str, f32)]) -> Vec<Named> {
        words
            .iter()
            .enumerate()
            .map(|(i, (w, s))| Named {
                word: w.to_string(),
                index: i,
                score: *s,
            })
            .collect()
    }

    #[test]
    fn indices_and_names_resolve() {
        let all = named(&[("dog", 0.4), ("cat", 0.5), ("Dog", 0.6), ("tree", 0.2)]);
        let r = |w: &str| resolve(w, Some(&all), 4, "edits");
        assert_eq!(
            r("1").unwrap(),
            Chosen {
                latent: 1,
                name: "cat".into()
            }
        );
        assert_eq!(
            r("#3").unwrap(),
            Chosen {
                latent: 3,
                name: "tree".into()
            }
        );
        // Two latents are named dog: the closer one (cosine 0.6) is the concept.
        assert_eq!(r("dog").unwrap().latent, 2);
        let e = r("dgo").unwrap_err().to_string();
        assert!(e.contains("no latent of this SAE is named `dgo`"), "{e}");
        let e = r("doge").unwrap_err().to_string();
        assert!(e.contains("did you mean `Dog`"), "{e}");
        let e = r("4").unwrap_err().to_string();
        assert!(e.contains("latent 4 does not exist"), "{e}");
        let e = resolve("dog", None, 4, "concepts").unwrap_err().to_string();
        assert!(
            e.contains("`concepts`") && e.contains("need `names`"),
            "{e}"
        );
        assert_eq!(resolve("2", None, 4, "c").unwrap().name, "#2");
    }
}
