//! Training: one step ([`step`]), the loop that runs any number of models over one pass of the
//! data ([`train_loop`]; a single model is its one-member case), its checkpoints, learning-rate
//! schedule, the loop's types ([`records`]) and where rows come from ([`source`]).

pub mod checkpoint;
pub mod health;
pub mod records;
pub mod schedule;
pub mod source;
pub mod step;
pub mod train_loop;

#[cfg(test)]
mod jumprelu_tests;
#[cfg(test)]
mod tests;

pub use records::{TrainOptions, TrainOutcome, TrainProgress, ValidationSet};
pub use source::{MatrixSource, RowSource};
pub use train_loop::{train, train_group, Member};
