//! Writes a small CLIP model with random weights in the Hugging Face layout, for trying the embed
//! step without real weights:
//!
//! ```text
//! cargo run --release --example make_test_clip -- OUT_DIR [--bpe bpe_simple_vocab_16e6.txt.gz] [--seed N]
//! ```
//!
//! OUT_DIR receives `config.json` and `model.safetensors` (text width 64, vision width 96, 2
//! layers and 4 heads each, 224-pixel images in 32-pixel patches, projection 48, CLIP's vocabulary
//! and context length) and, with `--bpe` (CLIP's merges file, shipped in the open_clip package),
//! `tokenizer.json`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use msae::embed::clip_bpe::write_clip_tokenizer_json;
use msae::embed::random_clip::{write_random_clip, TinyClipConfig};

const USAGE: &str =
    "usage: make_test_clip OUT_DIR [--bpe path/to/bpe_simple_vocab_16e6.txt.gz] [--seed N]";

fn main() -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut bpe: Option<PathBuf> = None;
    let mut seed: u64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bpe" => bpe = Some(args.next().context(USAGE)?.into()),
            "--seed" => {
                let value = args.next().context(USAGE)?;
                seed = value
                    .parse()
                    .with_context(|| format!("--seed {value:?} is not a whole number"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if arg.starts_with('-') => bail!("unknown option {arg}\n{USAGE}"),
            _ if out.is_none() => out = Some(arg.into()),
            _ => bail!("unexpected argument {arg}\n{USAGE}"),
        }
    }
    let Some(out) = out else { bail!(USAGE) };

    let cfg = TinyClipConfig::default();
    let tokenizer = match &bpe {
        Some(bpe) => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let path = out.join("tokenizer.json");
            write_clip_tokenizer_json(bpe, &path)?;
            Some(path)
        }
        None => None,
    };
    // The tokenizer is written in place, so no copy is needed.
    write_random_clip(&out, &cfg, seed, None)?;
    println!(
        "wrote a random CLIP (seed {seed}) to {}{}",
        out.display(),
        if tokenizer.is_some() {
            " with tokenizer.json"
        } else {
            " (no tokenizer: pass --bpe to add one)"
        }
    );
    Ok(())
}
