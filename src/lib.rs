//! msae: reproducible sparse-autoencoder experiments on CLIP embeddings.
pub mod sae;
