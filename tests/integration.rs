//! The integration tests, one module per area, built as one test binary: one link instead of
//! one per file, and the test threads share the work of every area (run one area with
//! `cargo test --test integration <area>::`).

mod common;
/// Helpers of the report tests: a headless browser and an SVG reader.
mod report {
    pub mod browser;
    pub mod svg;
}

mod analysis_steps;
mod bad_experiments;
mod bias;
mod cache_from;
mod concept_search;
mod concepts;
mod device_agreement;
mod docs;
mod embed_clip_oracle;
mod embed_features;
mod embed_items;
mod embed_pixels;
mod embed_step;
mod embed_tuxpaint;
mod fused_grid;
mod import;
mod import_sae;
mod incremental;
mod interpret_experiment;
mod layers;
mod parallel_and_live;
mod plan_scale;
mod publish;
mod read_only_store;
mod recovery;
mod report_explorer;
mod report_page;
mod robustness;
mod sae_pipeline;
mod saelens_import;
mod saelens_roundtrip;
mod slurm;
mod synth;
mod top_examples;
mod train_options;
mod zero_shot;
