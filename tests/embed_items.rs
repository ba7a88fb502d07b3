//! The `items` and `thumbnails` outputs of `embed`: each row's reference in its source (image
//! folder, WebDataset shard, parquet file local and from a dataset repository, text file) with
//! skipped items leaving no line, and one JPEG per row in a tar archive whose sizes and colours
//! are checked against the source pictures decoded here.

use crate::common;

use std::io::Read;
use std::path::Path;

use common::{
    dataset_hub_layout, npy_f32, output_file, output_lines, pictures, tiny_clip_byte_level,
    write_tar_shard, Env, Picture,
};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// An opaque RGB picture as the test knows it (alpha already composited on white).
struct Expected {
    width: usize,
    height: usize,
    rgb: Vec<f64>,
}

impl Expected {
    fn mean(&self) -> [f64; 3] {
        mean_rgb(&self.rgb)
    }
}

fn mean_rgb(data: &[f64]) -> [f64; 3] {
    let n = (data.len() / 3) as f64;
    let mut m = [0f64; 3];
    for px in data.chunks_exact(3) {
        for c in 0..3 {
            m[c] += px[c] / n;
        }
    }
    m
}

/// PNG bytes of `rgba` samples (`channels` 3 or 4).
fn png(width: u32, height: u32, channels: usize, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(if channels == 4 {
        png::ColorType::Rgba
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(data).unwrap();
    out
}

/// Decodes a PNG of the test data and composites it on white in float64.
fn expected_from_png(bytes: &[u8]) -> Expected {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let mut rgb = Vec::new();
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        let a = if channels == 4 { px[3] as f64 } else { 255.0 };
        for &v in &px[..3] {
            rgb.push((255.0 * (255.0 - a) + v as f64 * a) / 255.0);
        }
    }
    Expected {
        width: info.width as usize,
        height: info.height as usize,
        rgb,
    }
}

/// A smooth picture around colour `base` (a gentle gradient each way), with an alpha ramp from
/// transparent at the top to opaque at the bottom when `alpha`.
fn smooth_png(width: u32, height: u32, base: [u8; 3], alpha: bool) -> Vec<u8> {
    let channels = if alpha { 4 } else { 3 };
    let mut data = Vec::new();
    for y in 0..height {
        for x in 0..width {
            for (c, b) in base.iter().enumerate() {
                let shift = if c == 1 {
                    y * 40 / height
                } else {
                    x * 40 / width
                };
                data.push((*b as u32 + shift).min(255) as u8);
            }
            if alpha {
                data.push((y * 255 / (height - 1).max(1)) as u8);
            }
        }
    }
    png(width, height, channels, &data)
}

/// A decoded thumbnail: its size and RGB samples.
struct Thumbnail {
    width: usize,
    height: usize,
    rgb: Vec<f64>,
}

/// The members of a thumbnails archive, in order: name and bytes; every header must be ustar.
fn archive_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            assert!(e.header().as_ustar().is_some(), "a POSIX ustar header");
            assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), data)
        })
        .collect()
}

/// Decodes a baseline JPEG to RGB with zune-jpeg.
fn decode_jpeg(bytes: &[u8]) -> Thumbnail {
    assert!(bytes.starts_with(&[0xFF, 0xD8]), "a JPEG");
    let sof: Vec<u8> = bytes
        .windows(2)
        .filter(|m| m[0] == 0xFF && (0xC0..=0xC3).contains(&m[1]))
        .map(|m| m[1])
        .collect();
    assert_eq!(sof.first(), Some(&0xC0), "a baseline (SOF0) frame");
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().unwrap();
    let (width, height) = decoder.dimensions().unwrap();
    assert_eq!(pixels.len(), width * height * 3);
    Thumbnail {
        width,
        height,
        rgb: pixels.iter().map(|&v| v as f64).collect(),
    }
}

/// Checks a thumbnails archive against the pictures of the rows: one member `<row>.jpg` per
/// row in order, the longer side 64 (or the picture's own size when smaller) with the aspect
/// kept, and the mean colour within `tolerance` levels of the picture's. Returns the largest
/// mean-colour difference.
fn check_thumbnails(path: &Path, rows: &[Expected], tolerance: f64) -> f64 {
    let members = archive_members(path);
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> = (0..rows.len()).map(|r| format!("{r}.jpg")).collect();
    assert_eq!(names, want, "one member per row, named by row");
    let mut worst = 0f64;
    for (r, ((_, jpeg), pic)) in members.iter().zip(rows).enumerate() {
        let t = decode_jpeg(jpeg);
        let (long, short) = (pic.width.max(pic.height), pic.width.min(pic.height));
        let (t_long, t_short) = (t.width.max(t.height), t.width.min(t.height));
        if long <= 64 {
            assert_eq!((t.width, t.height), (pic.width, pic.height), "row {r}");
        } else {
            assert_eq!(t_long, 64, "row {r}");
            assert_eq!(
                t.width >= t.height,
                pic.width >= pic.height,
                "row {r}: orientation"
            );
            let exact = short as f64 * 64.0 / long as f64;
            assert!(
                (t_short as f64 - exact).abs() <= 0.5 || (t_short == 1 && exact < 1.0),
                "row {r}: short side {t_short} for {exact}"
            );
        }
        let (got, expected) = (mean_rgb(&t.rgb), pic.mean());
        for c in 0..3 {
            let d = (got[c] - expected[c]).abs();
            worst = worst.max(d);
            assert!(
                d <= tolerance,
                "row {r}: mean colour {got:?}, picture {expected:?}"
            );
        }
    }
    worst
}

/// Whether the last run of an instance stored an output of that name.
fn has_output(env: &Env, experiment: &str, instance: &str, output: &str) -> bool {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let record = store.index.latest(experiment, instance).unwrap().unwrap();
    record.outputs.contains_key(output)
}

fn matrix_rows(env: &Env, experiment: &str, instance: &str) -> usize {
    npy_f32(&output_file(env, experiment, instance, "matrix")).0
}

#[test]
fn an_image_folder_lists_relative_paths_and_previews_every_row() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    // (relative path, PNG): sorted by path, the broken file falls in the middle; one name
    // holds a line break.
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "animals/cats/a.png",
            smooth_png(150, 90, [190, 40, 40], false),
        ),
        (
            "animals/cats/b.png",
            smooth_png(90, 150, [30, 150, 50], true),
        ),
        ("animals/cats/broken.png", common::BROKEN_PNG.to_vec()),
        (
            "animals/dogs/c.png",
            smooth_png(40, 30, [30, 60, 200], false),
        ),
        ("plants/d.png", smooth_png(200, 64, [200, 190, 30], false)),
        (
            "plants/odd\nname.png",
            smooth_png(20, 20, [120, 40, 150], true),
        ),
        ("top.png", smooth_png(64, 64, [90, 90, 90], false)),
    ];
    for (rel, bytes) in &files {
        let p = env.path("photos").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let exp = env.write(
        "folder.toml",
        "[experiment]\nname = \"folder\"\n[steps.photos]\nkind = \"embed\"\nmodel = \"clip\"\nsource = \"images\"\npath = \"photos\"\nbatch_size = 2\n",
    );
    env.run_json(&exp);
    let items = output_lines(&env, "folder", "photos", "items");
    assert_eq!(
        items,
        [
            "animals/cats/a.png",
            "animals/cats/b.png",
            "animals/dogs/c.png",
            "plants/d.png",
            "plants/odd\\nname.png",
            "top.png"
        ]
    );
    assert_eq!(matrix_rows(&env, "folder", "photos"), items.len());
    let kept: Vec<Expected> = files
        .iter()
        .filter(|(rel, _)| !rel.contains("broken"))
        .map(|(_, bytes)| expected_from_png(bytes))
        .collect();
    let worst = check_thumbnails(
        &output_file(&env, "folder", "photos", "thumbnails"),
        &kept,
        3.0,
    );
    eprintln!("image folder: 6 rows of 7 files, thumbnails' mean colours within {worst:.2} levels");
    // Exported, the archive is named as the tar file it is.
    let out = env.msae(&[
        "export",
        exp.to_str().unwrap(),
        "photos",
        "--output",
        "thumbnails",
        "--to",
        "out",
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(
        std::fs::read(env.path("out/thumbnails.tar")).unwrap(),
        std::fs::read(output_file(&env, "folder", "photos", "thumbnails")).unwrap()
    );
}

#[test]
fn webdataset_items_are_shard_and_member_key() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let pics = pictures(5);
    // The broken sample ends the first shard, so it lies between kept rows.
    write_tar_shard(
        &env.path("shards/train-0001.tar"),
        &pics[..3],
        Some("sample050"),
    );
    write_tar_shard(&env.path("shards/train-0002.tar.gz"), &pics[3..], None);
    let exp = env.write(
        "wds.toml",
        "[experiment]\nname = \"wds\"\n[steps.shards]\nkind = \"embed\"\nmodel = \"clip\"\nsource = \"webdataset\"\npath = \"shards/train-*\"\n",
    );
    env.run_json(&exp);
    assert_eq!(
        output_lines(&env, "wds", "shards", "items"),
        [
            "train-0001.tar:sample000",
            "train-0001.tar:sample001",
            "train-0001.tar:sample002",
            "train-0002.tar.gz:sample003",
            "train-0002.tar.gz:sample004"
        ]
    );
    assert_eq!(matrix_rows(&env, "wds", "shards"), 5);
    let kept: Vec<Expected> = pics.iter().map(|p| expected_from_png(&p.png)).collect();
    let worst = check_thumbnails(
        &output_file(&env, "wds", "shards", "thumbnails"),
        &kept,
        3.0,
    );
    eprintln!("WebDataset: 5 rows of 6 samples, thumbnails' mean colours within {worst:.2} levels");
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_items_are_file_and_row_and_a_dataset_repository_names_files_by_their_path() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    let pics: Vec<Picture> = pictures(5);
    let (first, second) = (
        env.path("local/data/train-00000-of-00002.parquet"),
        env.path("local/data/train-00001-of-00002.parquet"),
    );
    // Two row groups, then the broken row (row 3 of the first file).
    common::write_parquet_shard(&first, &[&pics[..2], &pics[2..3]], true);
    common::write_parquet_shard(&second, &[&pics[3..]], false);
    let shard = env.path("local/wds/part-0.tar");
    write_tar_shard(&shard, &pics[..2], None);
    let commit = "9a8b7c6d5e4f9a8b7c6d5e4f9a8b7c6d5e4f9a8b";
    dataset_hub_layout(
        &env.path("hub"),
        "tests/tiny-photos",
        commit,
        &[
            ("data/train-00000-of-00002.parquet", first.clone()),
            ("data/train-00001-of-00002.parquet", second.clone()),
            ("wds/part-0.tar", shard),
        ],
    );
    let exp = env.write(
        "pq.toml",
        r#"[experiment]
name = "pq"
[experiment.defaults.embed]
model = "clip"
source = "parquet"
[steps.local]
kind = "embed"
path = "local/data/*.parquet"
[steps.hub]
kind = "embed"
dataset = "tests/tiny-photos"
files = "data/*.parquet"
[steps.hub_wds]
kind = "embed"
source = "webdataset"
dataset = "tests/tiny-photos"
files = "wds/*.tar"
"#,
    );
    let out = env
        .offline_hub(&env.path("hub"))
        .args(["run", "--json", exp.to_str().unwrap()])
        .output()
        .unwrap();
    common::json_of(&out);
    let local = [
        "train-00000-of-00002.parquet:0",
        "train-00000-of-00002.parquet:1",
        "train-00000-of-00002.parquet:2",
        "train-00001-of-00002.parquet:0",
        "train-00001-of-00002.parquet:1",
    ];
    assert_eq!(output_lines(&env, "pq", "local", "items"), local);
    // A repository's files are named by their path in the repository.
    let hub: Vec<String> = local.iter().map(|l| format!("data/{l}")).collect();
    assert_eq!(output_lines(&env, "pq", "hub", "items"), hub);
    assert_eq!(
        output_lines(&env, "pq", "hub_wds", "items"),
        ["wds/part-0.tar:sample000", "wds/part-0.tar:sample001"]
    );
    assert_eq!(matrix_rows(&env, "pq", "hub"), 5);
    let kept: Vec<Expected> = pics.iter().map(|p| expected_from_png(&p.png)).collect();
    let worst = check_thumbnails(&output_file(&env, "pq", "local", "thumbnails"), &kept, 3.0);
    assert!(
        std::fs::read(output_file(&env, "pq", "hub", "thumbnails")).unwrap()
            == std::fs::read(output_file(&env, "pq", "local", "thumbnails")).unwrap(),
        "the same rows give the same archive"
    );
    eprintln!(
        "parquet: 5 rows of 6, local and from the hub cache; thumbnails within {worst:.2} levels"
    );
}

#[test]
fn text_file_items_are_line_numbers_and_there_are_no_thumbnails() {
    let env = Env::new();
    tiny_clip_byte_level(&env.path("clip"));
    // Line 2 is not UTF-8 (skipped); line 4 is empty (an entry).
    std::fs::write(env.path("words.txt"), b"cat\n\xff\xfe\ndog\n\nbird").unwrap();
    let exp = env.write(
        "words.toml",
        "[experiment]\nname = \"words\"\n[steps.words]\nkind = \"embed\"\nmodel = \"clip\"\nsource = \"text\"\npath = \"words.txt\"\n",
    );
    env.run_json(&exp);
    assert_eq!(
        output_lines(&env, "words", "words", "items"),
        ["words.txt:1", "words.txt:3", "words.txt:4", "words.txt:5"]
    );
    assert_eq!(
        output_lines(&env, "words", "words", "texts"),
        ["cat", "dog", "", "bird"]
    );
    assert_eq!(matrix_rows(&env, "words", "words"), 4);
    assert!(!has_output(&env, "words", "words", "thumbnails"));
    assert!(has_output(&env, "words", "words", "items"));
}
