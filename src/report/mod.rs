//! Tables and graph drawings of experiments.

pub mod graph;
pub mod table;
