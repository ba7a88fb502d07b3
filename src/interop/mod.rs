//! Interoperability with SAEs from elsewhere: the reference code's `.pth` checkpoints (read,
//! with the architecture taken from the file name), Hugging Face repositories (through the
//! hub's local cache) and the SAELens folder layout (written and read).

pub mod hub;
pub mod model_card;
pub mod pth;
pub mod reference_name;
pub mod saelens;
pub mod saelens_read;
