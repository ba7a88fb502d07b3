//! The step kinds of the SAE domain: one file each, all listed in [`registry`].
//!
//! Each kind implements the engine's contract ([`crate::step::Step`]): it declares its parameters
//! and outputs and turns a [`crate::step::StepContext`] into output files plus metrics. Nothing
//! in the engine names a kind; `cli` hands [`registry`] to the loader and the runner.

/// The declarations every step kind makes (`kind`, `version`, `about`, and its module's `PARAMS`
/// and `OUTPUTS`), written once; used inside `impl Step for …`.
macro_rules! step_info {
    (kind: $kind:literal, version: $version:literal, about: $about:literal) => {
        fn kind(&self) -> &'static str {
            $kind
        }

        fn version(&self) -> u32 {
            $version
        }

        fn about(&self) -> &'static str {
            $about
        }

        fn params(&self) -> &'static [$crate::step::spec::ParamSpec] {
            PARAMS
        }

        fn outputs(&self) -> &'static [$crate::step::spec::OutputSpec] {
            OUTPUTS
        }
    };
}

use crate::step::{Registry, Step};

pub mod align;
pub mod bias;
pub mod concept_search;
pub mod concepts;
pub mod embed;
pub mod extract;
pub mod import;
pub mod import_sae;
pub mod latent_names;
pub mod linear_probe;
pub mod name;
pub mod recovery;
pub mod sae_common;
pub mod sae_eval;
pub mod score_topk;
pub mod snapshots;
pub mod stats;
pub mod synth;
pub mod synth_bench;
pub mod top_examples;
pub mod train;
pub mod validate;
pub mod zero_shot;

static KINDS: &[&dyn Step] = &[
    &synth::Synth,
    &import::Import,
    &import_sae::ImportSae,
    &embed::Embed,
    &stats::Stats,
    &train::Train,
    &extract::Extract,
    &score_topk::ScoreTopk,
    &recovery::Recovery,
    &validate::Validate,
    &name::Name,
    &concepts::Concepts,
    &align::Align,
    &linear_probe::LinearProbe,
    &top_examples::TopExamplesKind,
    &zero_shot::ZeroShot,
    &concept_search::ConceptSearch,
    &bias::Bias,
];

/// Every step kind msae knows, for the engine (handed over by `cli`).
pub fn registry() -> Registry {
    Registry::new(KINDS)
}
