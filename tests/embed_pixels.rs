//! Pixel agreement with Pillow on real images: our decode → RGB → bicubic resize → crop against
//! the same steps in Pillow (`tests/oracles/pillow_preprocess.py`), on every Tux Paint stamp (RGBA
//! photo cut-outs of all sizes) and on Fashion-MNIST (28×28 grey, upscaled 8×), plus the
//! normalised tensor against NumPy float32, and the decoder on PNG/JPEG files of every kind.
//!
//! The Python side runs concurrently with ours; results are exchanged through files in a
//! temporary folder. Skipped, with a notice, when the test Python or the Debian data are missing.

use crate::common;

use msae::embed::image::{decode, Background, DecodedImage, PassOrder, Preprocess, Rgb8};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const STAMPS: &str = "/usr/share/tuxpaint/stamps";
const FASHION_TEST: &str = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const WHITE: [u8; 3] = [255, 255, 255];

#[derive(Clone)]
enum Source {
    File(PathBuf),
    Idx(usize),
}

/// One comparison: a source image and what to do with it (`None`: only convert to RGB).
#[derive(Clone)]
struct Item {
    group: &'static str,
    source: Source,
    preprocess: Option<Preprocess>,
    background: Background,
    tensor: bool,
}

impl Item {
    fn json(&self, idx_path: &Path) -> Value {
        let mut v = match &self.source {
            Source::File(p) => json!({ "file": p }),
            Source::Idx(i) => json!({ "idx": idx_path, "index": i }),
        };
        v["background"] = match self.background {
            Background::Drop => Value::Null,
            Background::Color(c) => json!(c),
        };
        match &self.preprocess {
            Some(p) => {
                v["size"] = json!(p.size);
                v["crop"] = json!(p.crop);
                v["order"] = json!(match p.pass_order {
                    PassOrder::HorizontalFirst => "horizontal-first",
                    PassOrder::Pillow13 => "pillow",
                });
                if self.tensor {
                    v["tensor"] = json!({ "mean": p.mean, "std": p.std });
                }
            }
            None => v["size"] = Value::Null,
        }
        v
    }
}

/// Fashion-MNIST images, decoded from the IDX file by us (not by the oracle).
fn read_idx(path: &Path) -> Vec<DecodedImage> {
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut data)
        .unwrap();
    let word = |i: usize| u32::from_be_bytes(data[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    assert_eq!(word(0), 0x0803, "IDX image magic");
    let (n, rows, cols) = (word(1), word(2), word(3));
    data[16..16 + n * rows * cols]
        .chunks_exact(rows * cols)
        .map(|px| DecodedImage {
            width: cols as u32,
            height: rows as u32,
            channels: 1,
            data: px.to_vec(),
        })
        .collect()
}

/// Our result for an item: RGB pixels and, if asked, the tensor.
fn ours(item: &Item, idx: &[DecodedImage]) -> (Rgb8, Option<Vec<f32>>) {
    let image = match &item.source {
        Source::File(p) => {
            decode(&std::fs::read(p).unwrap()).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
        }
        Source::Idx(i) => idx[*i].clone(),
    };
    match &item.preprocess {
        None => (image.to_rgb(item.background), None),
        Some(p) => {
            let p = p.with_background(item.background);
            let rgb = p.pixels(&image);
            let tensor = item.tensor.then(|| {
                let mut t = vec![0f32; p.tensor_len()];
                p.tensor(&rgb, &mut t);
                t
            });
            (rgb, tensor)
        }
    }
}

struct Oracle {
    dir: tempfile::TempDir,
    child: Child,
}

fn start_oracle(python: &Path, items: &[Item]) -> Oracle {
    let dir = tempfile::tempdir().unwrap();
    let manifest = json!({ "items": items.iter().map(|i| i.json(Path::new(FASHION_TEST))).collect::<Vec<_>>() });
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let script = common::oracle("pillow_preprocess.py");
    let child = Command::new(python)
        .arg(script)
        .arg("pixels")
        .arg(&manifest_path)
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Pillow oracle");
    Oracle { dir, child }
}

struct Reference {
    pixels: Vec<u8>,
    tensors: Vec<f32>,
    index: Vec<Value>,
}

/// The pass order that the installed Pillow's own `Image.resize` uses (see [`PassOrder`]), or
/// `None` for a release between the two behaviours.
fn native_order(python: &Path) -> Option<PassOrder> {
    let out = Command::new(python)
        .args(["-c", "import PIL; print(PIL.__version__)"])
        .output()
        .expect("run the test Python");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    eprintln!("Pillow {version}");
    match (major, minor) {
        (13.., _) => Some(PassOrder::Pillow13),
        // 12.2 to 12.x put the vertical pass first for images over 100 times taller than wide
        // (none of the test images); older releases always go horizontal first.
        (7..=12, _) => Some(PassOrder::HorizontalFirst),
        _ => None,
    }
}

fn finish_oracle(oracle: Oracle) -> Reference {
    let out = oracle.child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Pillow oracle failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = oracle.dir.path();
    let tensors = std::fs::read(dir.join("tensors.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    Reference {
        pixels: std::fs::read(dir.join("pixels.bin")).unwrap(),
        tensors,
        index: index["items"].as_array().unwrap().clone(),
    }
}

#[derive(Default, Debug)]
struct Stats {
    samples: usize,
    images: usize,
    pixels: usize,
    differing_pixels: usize,
    differing_images: usize,
    max_diff: u8,
    /// Sum of |difference| over all samples, for the mean.
    sum_diff: u64,
    tensors: usize,
    max_tensor_diff: f32,
    /// The images that differ: name, differing pixels, max difference.
    worst: Vec<(String, usize, u8)>,
}

impl Stats {
    fn mean_diff(&self) -> f64 {
        self.sum_diff as f64 / self.samples.max(1) as f64
    }
}

/// Runs both sides on `items` and returns statistics per group (in first-seen order).
fn compare(python: &Path, items: &[Item], idx: &[DecodedImage]) -> Vec<(&'static str, Stats)> {
    let oracle = start_oracle(python, items);
    let t = Instant::now();
    let mine: Vec<(Rgb8, Option<Vec<f32>>)> = items.par_iter().map(|i| ours(i, idx)).collect();
    let ours_s = t.elapsed().as_secs_f64();
    let reference = finish_oracle(oracle);
    eprintln!(
        "  {} items: ours {:.1} s (unoptimised test build), both sides done after {:.1} s",
        items.len(),
        ours_s,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(reference.index.len(), items.len());

    let mut groups: Vec<(&'static str, Stats)> = Vec::new();
    for ((item, (rgb, tensor)), entry) in items.iter().zip(&mine).zip(&reference.index) {
        let name = match &item.source {
            Source::File(p) => p.display().to_string(),
            Source::Idx(i) => format!("fashion-mnist test #{i}"),
        };
        let (w, h) = (
            entry["width"].as_u64().unwrap(),
            entry["height"].as_u64().unwrap(),
        );
        assert_eq!(
            (rgb.width as u64, rgb.height as u64),
            (w, h),
            "{name}: size"
        );
        let off = entry["pixels"].as_u64().unwrap() as usize;
        let theirs = &reference.pixels[off..off + rgb.data.len()];
        if !groups.iter().any(|(g, _)| *g == item.group) {
            groups.push((item.group, Stats::default()));
        }
        let stats = &mut groups.iter_mut().find(|(g, _)| *g == item.group).unwrap().1;
        stats.images += 1;
        stats.pixels += rgb.data.len() / 3;
        stats.samples += rgb.data.len();
        let (mut differing, mut max) = (0, 0);
        // Whole-image equality first (a memcmp): the per-pixel scan below is slow in the
        // unoptimised test build and only needed when something differs.
        let pairs = if rgb.data == theirs {
            0
        } else {
            rgb.data.len() / 3
        };
        for (a, b) in rgb
            .data
            .chunks_exact(3)
            .zip(theirs.chunks_exact(3))
            .take(pairs)
        {
            let d = (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap();
            stats.sum_diff += (0..3).map(|c| a[c].abs_diff(b[c]) as u64).sum::<u64>();
            if d > 0 {
                differing += 1;
                max = max.max(d);
            }
        }
        stats.max_diff = stats.max_diff.max(max);
        stats.differing_pixels += differing;
        if differing > 0 {
            stats.differing_images += 1;
            stats.worst.push((name.clone(), differing, max));
        }
        if let (Some(t), Some(toff)) = (tensor, entry["tensor"].as_u64()) {
            let want = &reference.tensors[toff as usize..toff as usize + t.len()];
            let d = t
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            stats.tensors += 1;
            stats.max_tensor_diff = stats.max_tensor_diff.max(d);
        }
    }
    for (g, s) in &groups {
        eprintln!(
            "  {g}: {} images, {} pixels; {} pixels differ (in {} images), max |diff| {}, \
             mean |diff| {:.4}{}",
            s.images,
            s.pixels,
            s.differing_pixels,
            s.differing_images,
            s.max_diff,
            s.mean_diff(),
            if s.tensors > 0 {
                format!(
                    "; {} tensors, max |diff| {:e}",
                    s.tensors, s.max_tensor_diff
                )
            } else {
                String::new()
            }
        );
        let mut worst = s.worst.clone();
        worst.sort_by_key(|w| std::cmp::Reverse((w.2, w.1)));
        for (name, n, d) in worst.iter().take(8) {
            eprintln!("    {name}: {n} pixels differ, max {d}");
        }
    }
    groups
}

/// Width and height from a PNG's header.
fn png_size(path: &Path) -> (u32, u32) {
    let mut head = [0u8; 24];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let be = |i: usize| u32::from_be_bytes(head[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

fn stamp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn tux_paint_stamps_match_pillow() {
    let (Some(python), Some(root)) = (
        common::test_python(),
        common::debian_data(STAMPS, "tuxpaint-stamps-default"),
    ) else {
        return;
    };
    let start = Instant::now();
    let native = native_order(&python);
    let files = stamp_files(&root);
    assert!(
        files.len() >= 700,
        "only {} stamps under {STAMPS}",
        files.len()
    );
    let clip = Preprocess::clip(224);
    let mut items = Vec::new();
    let (mut native_items, mut vertical_first) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        let item = |group, preprocess: Preprocess, background, tensor| Item {
            group,
            source: Source::File(f.clone()),
            preprocess: Some(preprocess),
            background,
            tensor,
        };
        // Every stamp: the reference pipeline's geometry and pass order, on white.
        items.push(item(
            "stamps, CLIP 224, on white",
            clip,
            Background::Color(WHITE),
            i % 100 == 0,
        ));
        if i % 8 == 0 {
            items.push(item(
                "stamps, CLIP 224, alpha dropped",
                clip,
                Background::Drop,
                false,
            ));
        }
        if i % 16 == 5 {
            items.push(item(
                "stamps, SigLIP 224 (no crop), alpha dropped",
                Preprocess::siglip(224),
                Background::Drop,
                i % 160 == 5,
            ));
        }
        if i % 40 == 7 {
            items.push(item(
                "stamps, CLIP 336, on mid grey",
                Preprocess::clip(336),
                Background::Color([128, 128, 128]),
                false,
            ));
        }
        // Pillow's own resize as installed, with our matching pass order, in the SigLIP
        // geometry: every 8th stamp, and every stamp for which Pillow 13 runs the vertical pass
        // first (h − 224 > 2·(w − 224)).
        if let Some(order) = native {
            let (w, h) = png_size(f);
            let vfirst = h > 224 && h as i64 - 224 > 2 * (w as i64 - 224);
            if i % 8 == 3 || vfirst {
                native_items += 1;
                vertical_first += usize::from(vfirst);
                items.push(item(
                    "stamps, SigLIP 224, on white, the installed Pillow's pass order",
                    Preprocess::siglip(224).with_pass_order(order),
                    Background::Color(WHITE),
                    false,
                ));
            }
        }
    }
    eprintln!("Tux Paint stamps: {} files", files.len());
    let groups = compare(&python, &items, &[]);
    for (g, s) in &groups {
        assert!(s.max_diff <= 1, "{g}: max diff {}", s.max_diff);
        assert!(
            s.max_tensor_diff <= 1e-6,
            "{g}: tensor diff {}",
            s.max_tensor_diff
        );
    }
    assert_eq!(groups[0].1.images, files.len());
    assert!(groups.iter().map(|(_, s)| s.tensors).sum::<usize>() >= 5);
    if native.is_some() {
        eprintln!("  (Pillow 13's rule: vertical pass first for {vertical_first} of those)");
        assert!(
            native_items >= 100 && vertical_first >= 30,
            "{native_items} {vertical_first}"
        );
    }
    eprintln!("Tux Paint stamps: {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn fashion_mnist_matches_pillow() {
    let (Some(python), Some(path)) = (
        common::test_python(),
        common::debian_data(FASHION_TEST, "dataset-fashion-mnist"),
    ) else {
        return;
    };
    let start = Instant::now();
    let images = read_idx(&path);
    assert_eq!(images.len(), 10_000);
    let n = 1000;
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            group: "fashion-mnist test images, 28×28 grey → CLIP 224",
            source: Source::Idx(i),
            preprocess: Some(Preprocess::clip(224)),
            background: Background::Drop,
            tensor: i % 200 == 0,
        })
        .collect();
    let groups = compare(&python, &items, &images);
    let s = &groups[0].1;
    assert_eq!(s.images, n);
    assert!(s.max_diff <= 1, "max diff {}", s.max_diff);
    assert!(s.tensors >= 5 && s.max_tensor_diff <= 1e-6, "{s:?}");
    eprintln!("Fashion-MNIST: {:.1} s", start.elapsed().as_secs_f64());
}

/// Every PNG colour type and bit depth, palettes with transparency, interlacing, and JPEGs of
/// several kinds, written by Pillow (or by hand where Pillow cannot write the kind).
#[test]
fn decoder_variants_match_pillow() {
    let Some(python) = common::test_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::run_python(
        &python,
        &[
            common::oracle("pillow_preprocess.py").as_os_str(),
            "variants".as_ref(),
            dir.path().as_os_str(),
        ],
    );
    let variants: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("variants.json")).unwrap()).unwrap();
    assert!(variants.len() >= 20);

    let mut items = Vec::new();
    for v in &variants {
        let name = v["name"].as_str().unwrap();
        let path = PathBuf::from(v["path"].as_str().unwrap());
        let jpeg = name.ends_with(".jpg");
        for background in [
            Background::Drop,
            Background::Color(WHITE),
            Background::Color([0, 90, 200]),
        ] {
            // Pillow compares a 16-bit PNG's transparent colour with 8-bit samples, so it never
            // matches; we honour it (see the decode module).
            let group = match (jpeg, name, background) {
                (true, _, _) => "JPEG",
                (false, "rgb16_trns.png", Background::Color(_)) => {
                    "PNG, 16-bit colour key, composited (known difference: one key pixel)"
                }
                _ => "PNG",
            };
            items.push(Item {
                group,
                source: Source::File(path.clone()),
                preprocess: None,
                background,
                tensor: false,
            });
        }
        items.push(Item {
            group: if jpeg {
                "JPEG, CLIP 224"
            } else {
                "PNG, CLIP 224"
            },
            source: Source::File(path.clone()),
            preprocess: Some(Preprocess::clip(224)),
            background: Background::Color(WHITE),
            tensor: false,
        });
    }
    // Every file cut short must be refused (as Pillow refuses it), never decoded into partly
    // grey pixels and never a panic.
    let mut refused = Vec::new();
    for v in &variants {
        let bytes = std::fs::read(v["path"].as_str().unwrap()).unwrap();
        for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 40] {
            let r = decode(&bytes[..cut]);
            refused.push((v["name"].as_str().unwrap().to_string(), cut, r.is_err()));
            if let Err(e) = r {
                let msg = format!("{e:#}");
                assert!(msg.contains("PNG") || msg.contains("JPEG"), "{msg}");
            }
        }
    }
    let accepted: Vec<_> = refused.iter().filter(|r| !r.2).collect();
    eprintln!(
        "truncated files: {} of {} refused",
        refused.len() - accepted.len(),
        refused.len()
    );
    assert!(accepted.is_empty(), "truncated files decoded: {accepted:?}");

    let groups = compare(&python, &items, &[]);
    for (g, s) in &groups {
        if g.starts_with("PNG, 16-bit colour key") {
            // Exactly the one pixel whose 16-bit value is the key.
            assert_eq!(s.differing_pixels, s.images, "{g}");
        } else if g.starts_with("PNG") {
            assert_eq!(s.max_diff, 0, "{g}");
        } else {
            // Different JPEG decoders: libjpeg-turbo in Pillow, zune-jpeg here.
            assert!(s.max_diff <= 6, "{g}: max diff {}", s.max_diff);
            assert!(s.mean_diff() < 0.5, "{g}: mean diff {}", s.mean_diff());
        }
    }
    assert_eq!(
        groups.iter().filter(|(g, _)| g.starts_with("PNG")).count(),
        3
    );
}
