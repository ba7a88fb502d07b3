//! Embedding throughput of msae's encoders next to `transformers` (PyTorch) on the same inputs.
//!
//! `cargo bench --bench embed_throughput -- [--threads N] [--rounds R] [--texts T] [--images I]
//! [--batch B] [--text-batch TB] [--only minilm,clip-text,clip-image]`
//!
//! * `minilm`: the real all-MiniLM-L6-v2 (from `scripts/test-assets.sh`) on T synthetic
//!   sentences of 4–40 words (the sentence-transformers pipeline on both sides: sorted by length,
//!   padded per batch, mean pooling, L2).
//! * `clip-text`, `clip-image`: CLIP with the shapes of ViT-B/32 (text 512 wide, 12 layers; vision
//!   768 wide, 12 layers, 32-pixel patches; projection 512) and random weights, written once to a
//!   temporary folder that both sides load; I preprocessed 224 × 224 images of random pixels (the
//!   model's work only: decoding and resizing run on another thread in the embed step).
//!
//! Both sides batch as their own pipelines do: msae hands the encoder TB texts at a time (the
//! embed step's default for text sources, 4096; the encoder sorts them by length and pads
//! sub-batches to their longest) and B images; the PyTorch side sorts all texts by length and
//! runs batches of B, as sentence-transformers does.
//!
//! After one warm-up pass each, msae and `benches/torch_embed.py` alternate, one timed pass over
//! the inputs each per round, R rounds; the table shows the median items/s. The Python
//! interpreter is `$MSAE_TORCH_PYTHON` (default `python3`; it needs torch and transformers);
//! without it only the msae column is printed.

mod common;

use common::{load_average, median};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use msae::embed::clip_bpe::write_clip_tokenizer_json;
use msae::embed::encoder::Encoder;
use msae::embed::model_files;
use msae::embed::random_clip::{
    write_random_clip, TinyClipConfig, TinyTextConfig, TinyVisionConfig,
};
use rand::{Rng, SeedableRng};

struct Args {
    threads: usize,
    rounds: usize,
    texts: usize,
    images: usize,
    batch: usize,
    text_batch: usize,
    only: Vec<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds: 3,
        texts: 512,
        images: 64,
        batch: 64,
        text_batch: 4096,
        only: ["minilm", "clip-text", "clip-image"]
            .map(String::from)
            .to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| panic!("bad number {v}")) };
        match flag.as_str() {
            "--threads" => a.threads = num(value()),
            "--rounds" => a.rounds = num(value()),
            "--texts" => a.texts = num(value()),
            "--images" => a.images = num(value()),
            "--batch" => a.batch = num(value()),
            "--text-batch" => a.text_batch = num(value()),
            "--only" => a.only = value().split(',').map(|s| s.trim().to_string()).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Deterministic sentences of 4–40 words.
fn sentences(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "a", "photo", "of", "the", "small", "red", "dog", "running", "across", "green", "field",
        "under", "bright", "sky", "with", "two", "children", "playing", "near", "old", "wooden",
        "house", "by", "river", "in", "autumn", "light", "while", "bird", "sings", "on", "branch",
        "tall", "tree", "city", "street", "at", "night", "cars", "and", "people", "walking",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    (0..n)
        .map(|_| {
            let len = rng.random_range(4..=40);
            (0..len)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// CLIP ViT-B/32's shapes.
fn vit_b32() -> TinyClipConfig {
    let d = TinyClipConfig::default();
    TinyClipConfig {
        text: TinyTextConfig {
            hidden: 512,
            layers: 12,
            heads: 8,
            intermediate: 2048,
            ..d.text
        },
        vision: TinyVisionConfig {
            hidden: 768,
            layers: 12,
            heads: 12,
            intermediate: 3072,
            image_size: 224,
            patch_size: 32,
        },
        projection_dim: 512,
    }
}

/// A running `benches/torch_embed.py`.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Torch {
    fn start(python: &str, mode: &str, model: &Path, inputs: &Path, a: &Args) -> Result<Torch> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_embed.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(mode)
            .arg(model)
            .arg(a.threads.to_string())
            .arg(a.batch.to_string())
            .arg(inputs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {script}"))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut t = Torch {
            child,
            stdin,
            stdout,
        };
        let threads = t.reply("threads")?;
        eprintln!("{mode}: PyTorch ready with {threads} threads");
        Ok(t)
    }

    fn run(&mut self) -> Result<f64> {
        writeln!(self.stdin, "1")?;
        self.stdin.flush()?;
        self.reply("per_s")?.as_f64().context("bad per_s")
    }

    fn reply(&mut self, key: &str) -> Result<serde_json::Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("torch_embed.py: bad output line {line:?}"))?;
        Ok(v[key].clone())
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn torch_python() -> Result<String, String> {
    let python = std::env::var("MSAE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "{python} cannot import torch and transformers; point MSAE_TORCH_PYTHON at an \
             interpreter that has both"
        ));
    }
    Ok(python)
}

/// Embeds `texts` in batches of `batch`, as the embed step hands them to the encoder.
fn embed_all_texts(enc: &Encoder, texts: &[&str], batch: usize) -> Result<()> {
    for chunk in texts.chunks(batch) {
        enc.embed_texts(chunk)?;
    }
    Ok(())
}

/// One benchmark: how msae embeds the inputs once, and the PyTorch side's mode and input file.
struct Case<'a> {
    name: &'static str,
    items: usize,
    model: PathBuf,
    inputs: PathBuf,
    ours: Box<dyn FnMut() -> Result<()> + 'a>,
}

fn measure(
    case: &mut Case,
    a: &Args,
    python: &Result<String, String>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    (case.ours)()?; // warm-up
    let mut torch = match python {
        Ok(py) => Some(Torch::start(py, case.name, &case.model, &case.inputs, a)?),
        Err(_) => None,
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let t = Instant::now();
        (case.ours)()?;
        ours.push(case.items as f64 / t.elapsed().as_secs_f64());
        if let Some(torch) = torch.as_mut() {
            theirs.push(torch.run()?);
        }
    }
    let show = |v: &[f64]| v.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>();
    eprintln!(
        "{}: msae {:?}, PyTorch {:?} items/s per round",
        case.name,
        show(&ours),
        show(&theirs)
    );
    Ok((ours, theirs))
}

fn main() -> Result<()> {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()?;
    // candle's matrix products read the thread count from the same variable as rayon.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let python = torch_python();
    if let Err(e) = &python {
        eprintln!("msae only: {e}");
    }
    let work = tempfile::tempdir()?;
    let texts = sentences(a.texts);
    let text_file = work.path().join("texts.txt");
    std::fs::write(&text_file, texts.join("\n"))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let assets = std::env::var_os("MSAE_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/msae-test")
        });
    let wants = |name: &str| a.only.iter().any(|o| o == name);

    let load_start = load_average();
    let mut rows = Vec::new();
    if wants("minilm") {
        let dir = assets.join("all-MiniLM-L6-v2");
        if dir.is_dir() {
            let files = model_files::locate(dir.to_str().unwrap(), "main", Path::new("."))?;
            let enc = Encoder::load(&files, true, false, &Device::Cpu)?;
            let mut case = Case {
                name: "minilm",
                items: refs.len(),
                model: dir.clone(),
                inputs: text_file.clone(),
                ours: Box::new(|| embed_all_texts(&enc, &refs, a.text_batch)),
            };
            rows.push(("all-MiniLM-L6-v2 texts/s", measure(&mut case, &a, &python)?));
        } else {
            eprintln!(
                "skipping minilm: {} is missing (scripts/test-assets.sh)",
                dir.display()
            );
        }
    }
    if wants("clip-text") || wants("clip-image") {
        let dir = work.path().join("clip-b32");
        let bpe = assets.join("open_clip/bpe_simple_vocab_16e6.txt.gz");
        let tokenizer = work.path().join("tokenizer.json");
        if !bpe.is_file() {
            eprintln!(
                "skipping CLIP: {} is missing (scripts/test-assets.sh)",
                bpe.display()
            );
        } else {
            write_clip_tokenizer_json(&bpe, &tokenizer)?;
            write_random_clip(&dir, &vit_b32(), 5, Some(&tokenizer))?;
            let files = model_files::locate(dir.to_str().unwrap(), "main", Path::new("."))?;
            let enc = Encoder::load(&files, true, true, &Device::Cpu)?;
            if wants("clip-text") {
                let mut case = Case {
                    name: "clip-text",
                    items: refs.len(),
                    model: dir.clone(),
                    inputs: text_file.clone(),
                    ours: Box::new(|| embed_all_texts(&enc, &refs, a.text_batch)),
                };
                rows.push((
                    "CLIP ViT-B/32 text texts/s",
                    measure(&mut case, &a, &python)?,
                ));
            }
            if wants("clip-image") {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
                let per = 3 * 224 * 224;
                let pixels: Vec<f32> = (0..a.images * per)
                    .map(|_| rng.random_range(-1.8f32..2.1))
                    .collect();
                let pixel_file = work.path().join("pixels.f32");
                std::fs::write(
                    &pixel_file,
                    pixels
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )?;
                let mut case = Case {
                    name: "clip-image",
                    items: a.images,
                    model: dir.clone(),
                    inputs: pixel_file,
                    ours: Box::new(|| {
                        for chunk in pixels.chunks(a.batch * per) {
                            enc.embed_images(chunk.to_vec(), chunk.len() / per)?;
                        }
                        Ok(())
                    }),
                };
                rows.push((
                    "CLIP ViT-B/32 image images/s",
                    measure(&mut case, &a, &python)?,
                ));
            }
        }
    }
    let load_end = load_average();
    println!(
        "\nEmbedding throughput, {} threads, batch {} (msae texts: {}), median of {} alternating \
         rounds (after one warm-up pass each); one-minute load average {load_start} at the start, \
         {load_end} at the end\n",
        a.threads, a.batch, a.text_batch, a.rounds
    );
    println!("| encoder | msae | PyTorch | ratio |");
    println!("|---|---|---|---|");
    for (name, (ours, theirs)) in rows {
        let (o, t) = (median(&ours).unwrap_or(0.0), median(&theirs));
        match t {
            Some(t) => println!("| {name} | {o:.1} | {t:.1} | {:.2}× |", o / t),
            None => println!("| {name} | {o:.1} | – | – |"),
        }
    }
    Ok(())
}
