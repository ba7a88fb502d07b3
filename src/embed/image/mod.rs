//! Images: decoding (PNG, JPEG) and the reference's preprocessing, with Pillow's resampling
//! semantics so that pixels agree with the Python pipeline.
