//! Experiment files: TOML → validated definitions → expanded step instances.

pub mod expand;
pub mod load;
pub mod reference;
pub mod resources;
pub mod toml_tree;

pub use expand::{expand, Instance, InstanceInput, Plan};
pub use load::{load, Experiment};
