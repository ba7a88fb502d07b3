//! Warnings about trainings that are not doing what their user wants: a code in which no latent
//! fires on the first batch (a JumpReLU threshold θ₀ above every pre-activation, a latent bias
//! far below zero), which nothing in training can revive, and a code that at the end still
//! fires on every latent or none, or on more than half of them (a sparsity penalty too weak to
//! act within the run, a threshold that never caught up with the pre-activations).
//!
//! Every ReLU and JumpReLU code starts with about half of its latents firing (the
//! pre-activations of a fresh model are spread evenly around zero), so density is judged at
//! the end only.

use serde::{Deserialize, Serialize};

use crate::sae::config::TrainConfig;

/// One warning of a training, as kept in its log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainWarning {
    /// The training step it was found at (1: the first).
    pub step: u64,
    pub message: String,
}

/// The warnings due after training step `step` of `total`, whose code had `active` latents
/// per row on average out of `n`.
pub(crate) fn check(
    config: &TrainConfig,
    n: usize,
    step: u64,
    total: u64,
    active: f64,
) -> Vec<TrainWarning> {
    let mut found = Vec::new();
    let mut warn = |message: String| found.push(TrainWarning { step, message });
    let dead_hint = if config.arch == crate::sae::Arch::Jumprelu {
        format!(
            "; jumprelu_theta0 = {} is in the units of the pre-activations, which in a fresh \
             model spread about init_norm²·‖x‖/√d = {} for standardised rows of norm √d: \
             choose a smaller θ₀",
            config.jumprelu_theta0,
            config.init_norm * config.init_norm
        )
    } else {
        String::new()
    };
    if step == 1 && active == 0.0 {
        warn(format!(
            "no latent fires on the first training batch: every latent is dead from the \
             start and receives no gradient{dead_hint}"
        ));
    }
    if step == total && step > 1 && active == 0.0 {
        warn(format!(
            "no latent fires on the last training batch: every latent is dead{dead_hint}"
        ));
    }
    if step == total && active > n as f64 / 2.0 {
        warn(format!(
            "the code is not sparse at the end of training: {active:.1} of {n} latents fire \
             per row on the last batch (more than half)"
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::Arch;

    #[test]
    fn dead_at_the_start_dead_or_dense_at_the_end() {
        let relu = TrainConfig::for_arch(Arch::Relu);
        let jump = TrainConfig::for_arch(Arch::Jumprelu);
        // A healthy training: nothing at any step.
        for step in [1, 50, 100] {
            assert!(check(&relu, 64, step, 100, 10.0).is_empty());
        }
        // Dense at the start is how every ReLU code begins.
        assert!(check(&relu, 64, 1, 100, 40.0).is_empty());
        let dead = check(&jump, 64, 1, 100, 0.0);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].step, 1);
        assert!(dead[0].message.contains("dead from the start"), "{dead:?}");
        assert!(
            dead[0].message.contains("jumprelu_theta0 = 0.001"),
            "{dead:?}"
        );
        assert!(!check(&relu, 64, 1, 100, 0.0)[0].message.contains("theta0"));
        let end = check(&relu, 64, 100, 100, 0.0);
        assert_eq!(end.len(), 1);
        assert!(end[0].message.contains("every latent is dead"), "{end:?}");
        // Half the latents is still sparse enough; more is not.
        assert!(check(&relu, 64, 100, 100, 32.0).is_empty());
        let dense = check(&relu, 64, 100, 100, 40.5);
        assert_eq!(dense.len(), 1);
        assert!(dense[0].message.contains("40.5 of 64"), "{dense:?}");
        // A one-step training dead on its only batch is reported once.
        assert_eq!(check(&relu, 64, 1, 1, 0.0).len(), 1);
    }
}
