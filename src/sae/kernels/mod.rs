//! The CPU kernels of training and evaluation: sparse codes and their products (`sparse`), row
//! gathers (`gather`), views of candle's host memory (`host`), the in-place optimiser update
//! (`host_update`) and the pool of scratch buffers (`scratch`). Other devices use candle's
//! generic operations instead.

pub(crate) mod gather;
pub(crate) mod host;
pub(crate) mod host_update;
pub(crate) mod scratch;
pub(crate) mod sparse;
