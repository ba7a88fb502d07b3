//! The SynthSAEBench-like feature model of the `synth` step (`firing = "bernoulli"`), after the
//! data model of SAELens's synthetic benchmark:
//!
//! * every feature j fires independently with probability `p_j`, Zipfian in its index:
//!   `r_j = (j+1)^-zipf`, `p_j = min_prob + (max_prob − min_prob)·(r_j − r_min)/(r_max − r_min)`;
//! * or, with `correlation_rank` k > 0, through a Gaussian copula of low rank: `F` (features × k)
//!   has N(0, correlation_scale²) entries, `d_j = 1 − ‖F_j‖²` (F scaled down so that every
//!   `d_j ≥ 0.01`), `z = F·g + √d ⊙ e` with g, e standard normal, and j fires where
//!   `z_j > Φ⁻¹(1 − p_j)`: each feature keeps its marginal probability, pairs correlate as `F Fᵀ`;
//! * a firing feature has activation `max(0, μ_j + σ_j·N(0, 1))`, `μ_j` linear in j from
//!   `magnitude_first` to `magnitude_last`, `σ_j = |magnitude_std_mean + magnitude_std_spread·N(0,1)|`
//!   drawn once per feature (a folded normal);
//! * with `hierarchy_roots` R > 0, a forest over the first features, numbered breadth-first: R
//!   roots, each node above `depth` with `branching` children. Level by level from the roots, a
//!   child whose parent's activation is 0 is switched off (with `scale_children`, a live child is
//!   multiplied by its parent's activation over the parent's mean μ), then among the live children
//!   of a live parent whose children are mutually exclusive (a random `exclusive` share of the
//!   parents with at least two children) one, drawn uniformly, stays on. With `compensate`, the
//!   probabilities are raised first so that the effective firing rates come out near `p_j`: a
//!   child's by `1/p_parent`, a mutually exclusive child's further by
//!   `1 + (Σ of its siblings' p)/p_parent`, capped at 1.

use anyhow::{bail, Result};
use rand::seq::index::sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// What a `firing = "bernoulli"` synth step asks for.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub n_features: usize,
    pub zipf: f64,
    pub max_prob: f64,
    pub min_prob: f64,
    pub correlation_rank: usize,
    pub correlation_scale: f64,
    pub hierarchy: Option<HierarchyConfig>,
    pub magnitude_first: f64,
    pub magnitude_last: f64,
    pub magnitude_std_mean: f64,
    pub magnitude_std_spread: f64,
}

#[derive(Debug, Clone)]
pub struct HierarchyConfig {
    pub roots: usize,
    pub branching: usize,
    pub depth: usize,
    pub exclusive: f64,
    pub compensate: bool,
    pub scale_children: bool,
}

/// `p_j` of the module documentation (`n ≥ 1`; needs `zipf > 0` and `min < max` for `n > 1`).
pub fn zipf_probabilities(n: usize, zipf: f64, max_prob: f64, min_prob: f64) -> Vec<f64> {
    if n == 1 {
        return vec![max_prob];
    }
    let r: Vec<f64> = (0..n).map(|j| ((j + 1) as f64).powf(-zipf)).collect();
    let (lo, hi) = (r[n - 1], r[0]);
    r.iter()
        .map(|&x| min_prob + (max_prob - min_prob) * (x - lo) / (hi - lo))
        .collect()
}

/// The standard normal quantile Φ⁻¹(p) (±∞ at 0 and 1), by Acklam's rational approximation:
/// relative error below 1.2e-9, far below what a firing probability needs.
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        let s = (-2.0 * q.ln()).sqrt();
        (((((C[0] * s + C[1]) * s + C[2]) * s + C[3]) * s + C[4]) * s + C[5])
            / ((((D[0] * s + D[1]) * s + D[2]) * s + D[3]) * s + 1.0)
    };
    if p < 0.02425 {
        tail(p)
    } else if p > 1.0 - 0.02425 {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The feature forest: per feature its parent, the features of each level, the mutually
/// exclusive sibling groups by the level of their parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    pub parent: Vec<Option<usize>>,
    /// `levels[l]`: the features at depth l (roots at 0), in index order.
    pub levels: Vec<Vec<usize>>,
    /// `(parent, children)` of every parent whose children are mutually exclusive, grouped by
    /// the parent's depth.
    pub exclusive: Vec<Vec<(usize, Vec<usize>)>>,
}

impl Forest {
    /// `roots` trees over the first features, numbered breadth-first, each node above `depth`
    /// with `branching` children, until the features run out; a random `share` of the parents
    /// with two or more children (`floor(share × their number)`) get mutually exclusive children.
    pub fn generate(n_features: usize, cfg: &HierarchyConfig, rng: &mut ChaCha8Rng) -> Forest {
        let mut parent = vec![None; n_features];
        let mut depth_of = Vec::new();
        let mut children: Vec<Vec<usize>> = Vec::new();
        let mut next = 0;
        let mut frontier: Vec<usize> = Vec::new();
        while next < n_features && frontier.len() < cfg.roots {
            frontier.push(next);
            depth_of.push(0);
            children.push(Vec::new());
            next += 1;
        }
        let mut parents_in_order = frontier.clone();
        let mut depth = 0;
        while depth < cfg.depth && !frontier.is_empty() {
            let mut level = Vec::new();
            for &p in &frontier {
                for _ in 0..cfg.branching {
                    if next >= n_features {
                        break;
                    }
                    parent[next] = Some(p);
                    children[p].push(next);
                    children.push(Vec::new());
                    depth_of.push(depth + 1);
                    level.push(next);
                    next += 1;
                }
            }
            depth += 1;
            if depth < cfg.depth {
                parents_in_order.extend(&level);
            }
            frontier = level;
        }
        let mut levels = vec![Vec::new(); depth + 1];
        for (f, &d) in depth_of.iter().enumerate() {
            levels[d].push(f);
        }
        let eligible: Vec<usize> = parents_in_order
            .into_iter()
            .filter(|&p| children[p].len() >= 2)
            .collect();
        let chosen = (eligible.len() as f64 * cfg.exclusive).floor() as usize;
        let mut picked: Vec<usize> = sample(rng, eligible.len(), chosen)
            .into_iter()
            .map(|i| eligible[i])
            .collect();
        picked.sort_unstable();
        let mut exclusive = vec![Vec::new(); depth + 1];
        for p in picked {
            exclusive[depth_of[p]].push((p, children[p].clone()));
        }
        Forest {
            parent,
            levels,
            exclusive,
        }
    }

    /// The compensated probabilities: a child's `p` divided by its parent's (uncompensated) `p`,
    /// a mutually exclusive child's further multiplied by `1 + (Σ siblings' p)/p_parent`, all
    /// capped at 1.
    pub fn compensate(&self, p: &[f64]) -> Vec<f64> {
        let mut factor = vec![1.0; p.len()];
        for (f, parent) in self.parent.iter().enumerate() {
            if let Some(q) = parent {
                if p[*q] > 0.0 {
                    factor[f] = 1.0 / p[*q];
                }
            }
        }
        for (q, kids) in self.exclusive.iter().flatten() {
            if p[*q] <= 0.0 {
                continue;
            }
            let total: f64 = kids.iter().map(|&c| p[c]).sum();
            for &c in kids {
                factor[c] *= 1.0 + (total - p[c]).max(0.0) / p[*q];
            }
        }
        p.iter()
            .zip(&factor)
            .map(|(p, f)| (p * f).min(1.0))
            .collect()
    }

    /// Applies the forest to one sample's activations `a` (indexed by feature), level by level:
    /// children of silent parents off (or, with `means`, live children scaled by parent / mean
    /// of the parent), then one uniformly drawn survivor among the live children of each live
    /// mutually exclusive parent.
    pub fn apply(&self, a: &mut [f32], means: Option<&[f64]>, rng: &mut ChaCha8Rng) {
        let mut live = Vec::new();
        for (level, groups) in self.levels.iter().zip(&self.exclusive) {
            for &f in level {
                let Some(q) = self.parent[f] else { continue };
                if a[q] <= 0.0 {
                    a[f] = 0.0;
                } else if let Some(m) = means {
                    a[f] = (a[f] as f64 * a[q] as f64 / m[q]) as f32;
                }
            }
            for (q, kids) in groups {
                if a[*q] <= 0.0 {
                    continue;
                }
                live.clear();
                live.extend(kids.iter().copied().filter(|&c| a[c] > 0.0));
                if live.len() > 1 {
                    let keep = live[rng.random_range(0..live.len())];
                    for &c in &live {
                        if c != keep {
                            a[c] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// The Gaussian copula of correlated firing.
struct Copula {
    /// `Φ⁻¹(1 − p_j)`.
    thresholds: Vec<f64>,
    /// `F`, `[features, rank]`.
    factor: Vec<f64>,
    /// `√δ_j`.
    diag_sqrt: Vec<f64>,
    rank: usize,
}

/// The fixed parts of the model (drawn once per step) and its sampler.
pub struct BenchModel {
    probs: Vec<f64>,
    copula: Option<Copula>,
    means: Vec<f64>,
    stds: Vec<f64>,
    forest: Option<(Forest, bool)>,
}

impl BenchModel {
    /// Checks `cfg` and draws the model's fixed parts from `rng`.
    pub fn new(cfg: &BenchConfig, rng: &mut ChaCha8Rng) -> Result<BenchModel> {
        let n = cfg.n_features;
        if n > 1 && cfg.zipf <= 0.0 {
            bail!("`firing = \"bernoulli\"` needs `zipf` > 0 (the Zipf exponent of the firing probabilities)");
        }
        if !(cfg.min_prob > 0.0 && cfg.min_prob < cfg.max_prob && cfg.max_prob <= 1.0) {
            bail!(
                "the firing probabilities need 0 < `min_prob` < `max_prob` ≤ 1 (got {} and {})",
                cfg.min_prob,
                cfg.max_prob
            );
        }
        if cfg.magnitude_first <= 0.0 || cfg.magnitude_last <= 0.0 {
            bail!("`magnitude_first` and `magnitude_last` must be positive");
        }
        let mut probs = zipf_probabilities(n, cfg.zipf, cfg.max_prob, cfg.min_prob);
        let forest = match &cfg.hierarchy {
            Some(h) => {
                let forest = Forest::generate(n, h, rng);
                if h.compensate {
                    probs = forest.compensate(&probs);
                }
                Some((forest, h.scale_children))
            }
            None => None,
        };
        let copula = (cfg.correlation_rank > 0).then(|| {
            let k = cfg.correlation_rank;
            let mut factor: Vec<f64> = (0..n * k)
                .map(|_| cfg.correlation_scale * rng.sample::<f64, _>(StandardNormal))
                .collect();
            let sq = |f: &[f64]| -> Vec<f64> {
                f.chunks(k).map(|r| r.iter().map(|v| v * v).sum()).collect()
            };
            let mut sums = sq(&factor);
            let largest = sums.iter().copied().fold(0.0, f64::max);
            if sums.iter().any(|&s| 1.0 - s < 0.01) {
                let scale = (0.99 / largest).sqrt();
                factor.iter_mut().for_each(|v| *v *= scale);
                sums = sq(&factor);
            }
            Copula {
                thresholds: probs.iter().map(|&p| normal_quantile(1.0 - p)).collect(),
                factor,
                diag_sqrt: sums.iter().map(|s| (1.0 - s).max(0.0).sqrt()).collect(),
                rank: k,
            }
        });
        let means: Vec<f64> = if n == 1 {
            vec![cfg.magnitude_first]
        } else {
            (0..n)
                .map(|j| {
                    cfg.magnitude_first
                        + (cfg.magnitude_last - cfg.magnitude_first) * j as f64 / (n - 1) as f64
                })
                .collect()
        };
        let stds = (0..n)
            .map(|_| {
                let z: f64 = rng.sample(StandardNormal);
                (cfg.magnitude_std_mean + cfg.magnitude_std_spread * z).abs()
            })
            .collect();
        Ok(BenchModel {
            probs,
            copula,
            means,
            stds,
            forest,
        })
    }

    /// The firing probabilities each feature is drawn with (after compensation).
    pub fn probabilities(&self) -> &[f64] {
        &self.probs
    }

    /// One sample's activations into `a` (length = features, overwritten).
    pub fn sample(&self, rng: &mut ChaCha8Rng, a: &mut [f32], g: &mut Vec<f64>) {
        match &self.copula {
            None => {
                for (x, &p) in a.iter_mut().zip(&self.probs) {
                    *x = if rng.random::<f64>() < p { 1.0 } else { 0.0 };
                }
            }
            Some(Copula {
                thresholds,
                factor,
                diag_sqrt,
                rank: k,
            }) => {
                g.clear();
                g.extend((0..*k).map(|_| rng.sample::<f64, _>(StandardNormal)));
                for (j, x) in a.iter_mut().enumerate() {
                    let shared: f64 = factor[j * k..(j + 1) * k]
                        .iter()
                        .zip(g.iter())
                        .map(|(f, g)| f * g)
                        .sum();
                    let e: f64 = rng.sample(StandardNormal);
                    *x = if shared + diag_sqrt[j] * e > thresholds[j] {
                        1.0
                    } else {
                        0.0
                    };
                }
            }
        }
        for (j, x) in a.iter_mut().enumerate() {
            if *x > 0.0 {
                let delta = if self.stds[j] > 0.0 {
                    self.stds[j] * rng.sample::<f64, _>(StandardNormal)
                } else {
                    0.0
                };
                *x = (self.means[j] + delta).max(0.0) as f32;
            }
        }
        if let Some((forest, scale)) = &self.forest {
            forest.apply(a, scale.then_some(&self.means[..]), rng);
        }
    }
}

#[cfg(test)]
// Index loops mirror the formulas the tests check against.
#[allow(
    clippy::needless_range_loop,
    clippy::type_complexity,
    clippy::useless_vec
)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn hierarchy(roots: usize, branching: usize, depth: usize, exclusive: f64) -> HierarchyConfig {
        HierarchyConfig {
            roots,
            branching,
            depth,
            exclusive,
            compensate: false,
            scale_children: false,
        }
    }

    #[test]
    fn zipf_probabilities_by_hand() {
        // r = 1, 1/2, 1/3: p = min + (max − min)·(r − 1/3)/(2/3).
        let p = zipf_probabilities(3, 1.0, 0.4, 0.1);
        let want = [0.4, 0.1 + 0.3 * (0.5 - 1.0 / 3.0) / (2.0 / 3.0), 0.1];
        for (g, w) in p.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{p:?}");
        }
        assert_eq!(zipf_probabilities(1, 1.0, 0.4, 0.1), vec![0.4]);
    }

    #[test]
    fn normal_quantiles_match_known_values() {
        // Φ⁻¹ at 0.5, 0.975, 0.9, 1e-4 and 0.02 (both sides of the tail switch), from tables.
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959963984540054),
            (0.9, 1.2815515655446004),
            (1e-4, -3.719016485455709),
            (0.02, -2.053748910631823),
            (0.03, -1.880793608151251),
        ] {
            let got = normal_quantile(p);
            assert!((got - z).abs() < 1e-8, "Φ⁻¹({p}) = {got}, want {z}");
            assert!((normal_quantile(1.0 - p) + z).abs() < 1e-8);
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
    }

    #[test]
    fn the_forest_is_numbered_breadth_first_and_stops_with_the_features() {
        // 2 roots, 2 children each, 2 levels: 0, 1 | 2, 3 (of 0), 4, 5 (of 1) | 6, 7 (of 2), …
        let f = Forest::generate(14, &hierarchy(2, 2, 2, 1.0), &mut rng(1));
        let parent: Vec<Option<usize>> = [
            None,
            None,
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            Some(3),
            Some(3),
            Some(4),
            Some(4),
            Some(5),
            Some(5),
        ]
        .to_vec();
        assert_eq!(f.parent, parent);
        assert_eq!(
            f.levels,
            vec![vec![0, 1], vec![2, 3, 4, 5], (6..14).collect()]
        );
        // Every parent (6 of them) has mutually exclusive children with `exclusive` = 1.
        assert_eq!(f.exclusive[0], vec![(0, vec![2, 3]), (1, vec![4, 5])]);
        assert_eq!(f.exclusive[1].len(), 4);
        assert!(f.exclusive[2].is_empty());
        // Too few features: the numbering stops; features past the forest have no parent.
        let f = Forest::generate(6, &hierarchy(2, 3, 2, 0.5), &mut rng(1));
        assert_eq!(
            f.parent,
            vec![None, None, Some(0), Some(0), Some(0), Some(1)]
        );
        // Parents with two or more children: only 0, so floor(0.5 · 1) = 0 exclusive groups.
        assert!(f.exclusive.iter().all(Vec::is_empty));
    }

    #[test]
    fn compensation_by_hand() {
        // Root 0 (p 0.5) with exclusive children 1 (p 0.2) and 2 (p 0.1): child 1 gets
        // (1/0.5)·(1 + 0.1/0.5) = 2.4 → 0.48, child 2 (1/0.5)·(1 + 0.2/0.5) = 2.8 → 0.28.
        let f = Forest::generate(3, &hierarchy(1, 2, 1, 1.0), &mut rng(2));
        let p = f.compensate(&[0.5, 0.2, 0.1]);
        for (g, w) in p.iter().zip([0.5, 0.48, 0.28]) {
            assert!((g - w).abs() < 1e-15, "{p:?}");
        }
        // Capped at 1.
        assert_eq!(f.compensate(&[0.1, 0.2, 0.3])[1..], [1.0, 1.0]);
    }

    #[test]
    fn silent_parents_switch_children_off_and_scaling_uses_the_parent_mean() {
        let f = Forest::generate(7, &hierarchy(1, 2, 2, 0.0), &mut rng(3));
        // 0 → 1, 2; 1 → 3, 4; 2 → 5, 6. Parent 2 silent: 5 and 6 go; 1 live at 3 with mean 2:
        // its children are multiplied by 1.5.
        let mut a = [4.0, 3.0, 0.0, 1.0, 2.0, 7.0, 7.0];
        let means = [4.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        f.apply(&mut a, Some(&means), &mut rng(4));
        assert_eq!(a, [4.0, 3.0, 0.0, 1.5, 3.0, 0.0, 0.0]);
        let mut a = [0.0, 3.0, 1.0, 1.0, 2.0, 7.0, 7.0];
        f.apply(&mut a, None, &mut rng(4));
        assert_eq!(a, [0.0; 7], "a silent root silences its whole tree");
    }

    fn config(n: usize) -> BenchConfig {
        BenchConfig {
            n_features: n,
            zipf: 0.5,
            max_prob: 0.4,
            min_prob: 0.05,
            correlation_rank: 0,
            correlation_scale: 0.1,
            hierarchy: None,
            magnitude_first: 2.0,
            magnitude_last: 1.0,
            magnitude_std_mean: 0.0,
            magnitude_std_spread: 0.0,
        }
    }

    /// Firing counts per feature and co-firing counts of pairs over `rows` samples.
    fn counts(m: &BenchModel, n: usize, rows: usize) -> (Vec<f64>, Vec<f64>, Vec<Vec<f32>>) {
        let (mut r, mut a, mut g) = (rng(9), vec![0f32; n], Vec::new());
        let mut fired = vec![0f64; n];
        let mut both = vec![0f64; n * n];
        let mut first = Vec::new();
        for t in 0..rows {
            m.sample(&mut r, &mut a, &mut g);
            if t < 50 {
                first.push(a.clone());
            }
            for i in 0..n {
                if a[i] > 0.0 {
                    fired[i] += 1.0;
                    for j in 0..n {
                        if a[j] > 0.0 {
                            both[i * n + j] += 1.0;
                        }
                    }
                }
            }
        }
        (fired, both, first)
    }

    #[test]
    fn independent_features_fire_at_their_probabilities_with_their_mean_magnitudes() {
        let (n, rows) = (6, 40_000);
        let m = BenchModel::new(&config(n), &mut rng(5)).unwrap();
        let (fired, _, first) = counts(&m, n, rows);
        for j in 0..n {
            let p = m.probabilities()[j];
            let se = (p * (1.0 - p) / rows as f64).sqrt();
            let freq = fired[j] / rows as f64;
            assert!((freq - p).abs() < 5.0 * se, "feature {j}: {freq} vs {p}");
        }
        // Without spread every activation is its feature's mean, linear from 2 to 1.
        for a in &first {
            for (j, &v) in a.iter().enumerate() {
                assert!(v == 0.0 || (v as f64 - (2.0 - j as f64 / 5.0)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn the_copula_keeps_the_marginals_and_correlates_pairs_as_its_factor() {
        let (n, rows) = (8, 60_000);
        let mut cfg = config(n);
        cfg.correlation_rank = 2;
        cfg.correlation_scale = 0.6;
        let m = BenchModel::new(&cfg, &mut rng(6)).unwrap();
        let (fired, both, _) = counts(&m, n, rows);
        let freq: Vec<f64> = fired.iter().map(|c| c / rows as f64).collect();
        for j in 0..n {
            let p = m.probabilities()[j];
            let se = (p * (1.0 - p) / rows as f64).sqrt();
            assert!(
                (freq[j] - p).abs() < 5.0 * se,
                "feature {j}: {} vs {p}",
                freq[j]
            );
        }
        // The pairs of the most positive and most negative latent correlation co-fire more,
        // respectively less, often than independent features would.
        let c = m.copula.as_ref().unwrap();
        let (factor, k) = (&c.factor, &c.rank);
        let rho = |i: usize, j: usize| -> f64 {
            (0..*k).map(|t| factor[i * k + t] * factor[j * k + t]).sum()
        };
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect();
        let hi = *pairs
            .iter()
            .max_by(|a, b| rho(a.0, a.1).total_cmp(&rho(b.0, b.1)))
            .unwrap();
        let lo = *pairs
            .iter()
            .min_by(|a, b| rho(a.0, a.1).total_cmp(&rho(b.0, b.1)))
            .unwrap();
        assert!(
            rho(hi.0, hi.1) > 0.2 && rho(lo.0, lo.1) < -0.2,
            "factor too weak"
        );
        // Co-firing minus the independent rate, in standard errors of the independent rate.
        let excess = |(i, j): (usize, usize)| {
            let q = freq[i] * freq[j];
            (both[i * n + j] / rows as f64 - q) / (q * (1.0 - q) / rows as f64).sqrt()
        };
        assert!(excess(hi) > 5.0, "{}", excess(hi));
        assert!(excess(lo) < -5.0, "{}", excess(lo));
    }

    #[test]
    fn hierarchy_rules_hold_in_every_sample() {
        let (n, rows) = (15, 20_000);
        let mut cfg = config(n);
        cfg.magnitude_std_mean = 0.3;
        cfg.magnitude_std_spread = 0.2;
        // One root with 2 children each over 3 levels: features 0–14, every parent exclusive.
        cfg.hierarchy = Some(HierarchyConfig {
            compensate: true,
            scale_children: true,
            ..hierarchy(1, 2, 3, 1.0)
        });
        let m = BenchModel::new(&cfg, &mut rng(7)).unwrap();
        let forest = &m.forest.as_ref().unwrap().0;
        assert_eq!(forest.exclusive.iter().flatten().count(), 7);
        let (mut r, mut a, mut g) = (rng(8), vec![0f32; n], Vec::new());
        let mut leaves = 0;
        for _ in 0..rows {
            m.sample(&mut r, &mut a, &mut g);
            for (f, parent) in forest.parent.iter().enumerate() {
                if let Some(q) = parent {
                    assert!(a[f] == 0.0 || a[*q] > 0.0, "child {f} without parent {q}");
                }
            }
            for (_, kids) in forest.exclusive.iter().flatten() {
                assert!(kids.iter().filter(|&&c| a[c] > 0.0).count() <= 1, "{a:?}");
            }
            leaves += a[7..].iter().filter(|&&v| v > 0.0).count();
        }
        assert!(
            leaves > rows / 10,
            "the leaves fire too rarely to test anything ({leaves})"
        );
    }

    #[test]
    fn compensation_restores_the_base_rates_of_children() {
        // Root 0 (p 0.5) with two children that are not exclusive: child j is drawn with
        // p_j / 0.5 and fires only with the root, so at p_j overall.
        let (n, rows) = (3, 60_000);
        let mut cfg = config(n);
        cfg.max_prob = 0.5;
        cfg.min_prob = 0.1;
        cfg.magnitude_std_mean = 0.1;
        cfg.magnitude_std_spread = 0.05;
        let base = zipf_probabilities(n, 0.5, 0.5, 0.1);
        for compensate in [false, true] {
            cfg.hierarchy = Some(HierarchyConfig {
                compensate,
                ..hierarchy(1, 2, 1, 0.0)
            });
            let m = BenchModel::new(&cfg, &mut rng(10)).unwrap();
            let (fired, _, _) = counts(&m, n, rows);
            for j in 0..n {
                let want = if compensate || j == 0 {
                    base[j]
                } else {
                    base[j] * base[0]
                };
                let se = (want * (1.0 - want) / rows as f64).sqrt();
                let freq = fired[j] / rows as f64;
                assert!(
                    (freq - want).abs() < 5.0 * se,
                    "compensate {compensate}, feature {j}: {freq} vs {want}"
                );
            }
        }
    }
}
