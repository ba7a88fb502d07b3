//! Learning-rate multipliers per epoch (docs/reference.md §6.3 item 11). The scheduler is
//! stepped once per epoch, so epoch `e` (0-based) trains at `lr · multiplier(e)`.

use crate::sae::config::Schedule;

/// Multiplier of the base learning rate during epoch `epoch` of `total` epochs.
///
/// * `LinearDecay` (reference): 1 while `e < floor(decay_time·T)`, then
///   `max(0, (T − e) / ((1 − decay_time)·T))`. Because the decay starts at the floored epoch but
///   divides by the unfloored length, the first decay epoch can exceed 1 (T = 3: 1.67).
/// * `LinearDecayFixed`: with `s = floor(decay_time·T)`, 1 while `e < s`, then
///   `(T − e)/(T − s)` clamped to [0, 1]: a linear ramp that starts at exactly 1 and reaches
///   `1/(T − s)` in the last epoch. Identical to the reference whenever `decay_time·T` is integral.
/// * `CosineWarmup`: epoch 0 at 0.1 (one warm-up epoch from 0.1·lr), then
///   `0.1 + 0.9·(1 + cos(π(e − 1)/(T − 1)))/2`.
/// * `Constant`: 1.
pub fn lr_multiplier(schedule: Schedule, epoch: usize, total: usize, decay_time: f64) -> f64 {
    let e = epoch as f64;
    let t = total as f64;
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::LinearDecay => {
            if epoch < (decay_time * t).floor() as usize {
                1.0
            } else {
                ((t - e) / ((1.0 - decay_time) * t)).max(0.0)
            }
        }
        Schedule::LinearDecayFixed => {
            let start = (decay_time * t).floor() as usize;
            if epoch < start || total <= start {
                1.0
            } else {
                ((t - e) / (t - start as f64)).clamp(0.0, 1.0)
            }
        }
        Schedule::CosineWarmup => {
            let min = 0.1;
            if epoch == 0 {
                min
            } else if total <= 1 {
                1.0
            } else {
                let c = (std::f64::consts::PI * (e - 1.0) / (t - 1.0)).cos();
                min + (1.0 - min) * (1.0 + c) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: Schedule, t: usize) -> Vec<f64> {
        (0..t).map(|e| lr_multiplier(s, e, t, 0.8)).collect()
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn reference_linear_decay_t30() {
        let m = all(Schedule::LinearDecay, 30);
        assert!(m[..24].iter().all(|v| (v - 1.0).abs() < 1e-12));
        // Epoch 24 is 6 / 6.000000000000001 in floating point, as in the reference.
        close(&m[24..], &[1.0, 0.8333, 0.6667, 0.5, 0.3333, 0.1667]);
    }

    #[test]
    fn reference_linear_decay_t20_and_t3() {
        let m = all(Schedule::LinearDecay, 20);
        close(&m[..17], &[1.0; 17]);
        close(&m[17..], &[0.75, 0.5, 0.25]);
        let m = all(Schedule::LinearDecay, 3);
        close(&m, &[1.0, 1.0, 1.6667]);
    }

    #[test]
    fn fixed_linear_decay_never_exceeds_one() {
        close(&all(Schedule::LinearDecayFixed, 3), &[1.0, 1.0, 1.0]);
        close(
            &all(Schedule::LinearDecayFixed, 7),
            &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5],
        );
        // Agrees with the reference when decay_time·T is integral.
        close(
            &all(Schedule::LinearDecayFixed, 30),
            &all(Schedule::LinearDecay, 30),
        );
        close(
            &all(Schedule::LinearDecayFixed, 20),
            &all(Schedule::LinearDecay, 20),
        );
    }

    #[test]
    fn cosine_and_constant() {
        let m = all(Schedule::CosineWarmup, 5);
        close(
            &m,
            &[
                0.1,
                1.0,
                0.1 + 0.9 * (1.0 + 0.5f64.sqrt()) / 2.0,
                0.55,
                0.1 + 0.9 * (1.0 - 0.5f64.sqrt()) / 2.0,
            ],
        );
        close(&all(Schedule::Constant, 3), &[1.0, 1.0, 1.0]);
    }
}
