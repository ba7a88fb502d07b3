//! Inputs of the embed step that the tests write themselves (no downloads): pictures, image
//! folders, WebDataset and parquet shards, small random models and Hugging Face hub caches.

use std::path::{Path, PathBuf};

use msae::embed::random_clip::{write_byte_level_tokenizer, write_random_clip, TinyClipConfig};

/// PNG bytes of a deterministic RGB (or RGBA) pattern that depends on `seed`.
pub fn png_image(width: u32, height: u32, seed: u32, alpha: bool) -> Vec<u8> {
    let channels = if alpha { 4 } else { 3 };
    let mut data = Vec::with_capacity((width * height * channels) as usize);
    for y in 0..height {
        for x in 0..width {
            let v = |k: u32| ((x * (3 + k) + y * (5 + seed) + seed * 17 + k * 40) % 256) as u8;
            data.extend([v(0), v(1), v(2)]);
            if alpha {
                data.push(((x + y) * 9 % 256) as u8);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(if alpha {
            png::ColorType::Rgba
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&data).unwrap();
    }
    out
}

/// A small random CLIP (seed 7) in the Hugging Face layout, with `tokenizer` copied in if given.
pub fn tiny_clip(dir: &Path, tokenizer: Option<&Path>) {
    write_random_clip(dir, &TinyClipConfig::default(), 7, tokenizer).unwrap();
}

/// [`tiny_clip`] with a byte-level tokenizer (written beside the folder), so that both towers
/// run without assets.
pub fn tiny_clip_byte_level(dir: &Path) {
    let tok = dir.with_extension("tokenizer.json");
    write_byte_level_tokenizer(&tok).unwrap();
    tiny_clip(dir, Some(&tok));
}

/// One picture of the test data: where it goes, its caption and its class.
pub struct Picture {
    pub index: usize,
    pub png: Vec<u8>,
    pub caption: String,
    pub label: &'static str,
}

/// Pictures of different sizes and aspect ratios, some with transparency, two classes.
pub fn pictures(n: usize) -> Vec<Picture> {
    (0..n)
        .map(|i| {
            let seed = i as u32;
            Picture {
                index: i,
                png: png_image(30 + 7 * (seed % 5), 24 + 11 * (seed % 3), seed, i % 3 == 1),
                caption: format!(
                    "picture {i} of a {}",
                    if i % 2 == 0 { "cat" } else { "dog" }
                ),
                label: if i % 2 == 0 { "cats" } else { "dogs" },
            }
        })
        .collect()
}

/// An image folder: `label/pic{index}.png` with its caption beside it.
pub fn write_folder(root: &Path, pics: &[Picture]) {
    for p in pics {
        let dir = root.join(p.label);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("pic{:02}.png", p.index)), &p.png).unwrap();
        std::fs::write(dir.join(format!("pic{:02}.txt", p.index)), &p.caption).unwrap();
    }
}

/// Bytes that are no image any decoder reads (a PNG signature and nothing after it).
pub const BROKEN_PNG: &[u8] = b"\x89PNG\r\n\x1a\nthis is not an image";

/// A WebDataset shard: per picture `key.png`, `key.txt`, `key.cls`, plus an unused member;
/// `broken` adds a sample whose image cannot be decoded. Gzipped when the name ends in `.gz`.
pub fn write_tar_shard(path: &Path, pics: &[Picture], broken: Option<&str>) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, data).unwrap();
    };
    for p in pics {
        let key = format!("sample{:03}", p.index);
        add(&format!("{key}.png"), &p.png);
        add(&format!("{key}.txt"), p.caption.as_bytes());
        add(&format!("{key}.cls"), format!("{}\n", p.label).as_bytes());
        add(&format!("{key}.json"), b"{\"unused\": true}");
    }
    if let Some(key) = broken {
        add(&format!("{key}.png"), BROKEN_PNG);
        add(&format!("{key}.txt"), b"a broken picture");
        add(&format!("{key}.cls"), b"cats");
    }
    let bytes = builder.into_inner().unwrap();
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap()
    } else {
        bytes
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Parquet files as the Hugging Face datasets library writes them.
#[cfg(feature = "parquet")]
mod parquet_files {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int64Type};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
    use parquet::schema::parser::parse_message_type;

    use super::{Picture, BROKEN_PNG};

    /// Writes the next column of a row group: `values` with every definition level `level`
    /// (the nesting depth of a present value).
    fn write_column<T: DataType>(
        group: &mut SerializedRowGroupWriter<'_, File>,
        values: &[T::T],
        level: i16,
    ) {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<T>()
            .write_batch(values, Some(&vec![level; values.len()]), None)
            .unwrap();
        col.close().unwrap();
    }

    /// A parquet shard as the datasets library writes an image dataset: `image` a struct of
    /// bytes and path, `label` an integer class id named by the `ClassLabel` feature in the
    /// file's metadata, `caption` a string; one row group per slice of `groups`. `broken`
    /// appends a row whose image cannot be decoded.
    pub fn write_parquet_shard(path: &Path, groups: &[&[Picture]], broken: bool) {
        let schema = parse_message_type(
            "message hf {
            optional group image { optional binary bytes; optional binary path (STRING); }
            optional int64 label;
            optional binary caption (STRING);
        }",
        )
        .unwrap();
        let features = r#"{"info": {"features": {"image": {"_type": "Image"},
        "label": {"names": ["cats", "dogs"], "_type": "ClassLabel"},
        "caption": {"dtype": "string", "_type": "Value"}}}}"#;
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "huggingface".into(),
                features.to_string(),
            )]))
            .build();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = File::create(path).unwrap();
        let mut writer =
            SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).unwrap();
        let last = groups.len() - 1;
        for (g, pics) in groups.iter().enumerate() {
            // (png bytes, file name, class id, caption) per row.
            let mut rows: Vec<(Vec<u8>, String, i64, String)> = pics
                .iter()
                .map(|p| {
                    (
                        p.png.clone(),
                        format!("pic{:02}.png", p.index),
                        i64::from(p.label == "dogs"),
                        p.caption.clone(),
                    )
                })
                .collect();
            if broken && g == last {
                rows.push((
                    BROKEN_PNG.to_vec(),
                    "broken.png".into(),
                    0,
                    "a broken picture".into(),
                ));
            }
            let mut group = writer.next_row_group().unwrap();
            let images: Vec<ByteArray> =
                rows.iter().map(|r| ByteArray::from(r.0.clone())).collect();
            write_column::<ByteArrayType>(&mut group, &images, 2);
            let names: Vec<ByteArray> =
                rows.iter().map(|r| ByteArray::from(r.1.as_str())).collect();
            write_column::<ByteArrayType>(&mut group, &names, 2);
            let labels: Vec<i64> = rows.iter().map(|r| r.2).collect();
            write_column::<Int64Type>(&mut group, &labels, 1);
            let captions: Vec<ByteArray> =
                rows.iter().map(|r| ByteArray::from(r.3.as_str())).collect();
            write_column::<ByteArrayType>(&mut group, &captions, 1);
            group.close().unwrap();
        }
        writer.close().unwrap();
    }

    /// A parquet shard of texts alone: a `caption` column and a string `label` column.
    pub fn write_text_parquet(path: &Path, rows: &[(&str, &str)]) {
        let schema = parse_message_type(
            "message hf { optional binary caption (STRING); optional binary label (STRING); }",
        )
        .unwrap();
        let file = File::create(path).unwrap();
        let props = Arc::new(WriterProperties::builder().build());
        let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let captions: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.0)).collect();
        write_column::<ByteArrayType>(&mut group, &captions, 1);
        let labels: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.1)).collect();
        write_column::<ByteArrayType>(&mut group, &labels, 1);
        group.close().unwrap();
        writer.close().unwrap();
    }
}

#[cfg(feature = "parquet")]
pub use parquet_files::*;

/// The folder of repository `repo` in hub cache `cache`; `kind` is `models` or `datasets`.
fn hub_repo_dir(cache: &Path, kind: &str, repo: &str) -> PathBuf {
    cache.join(format!("{kind}--{}", repo.replace('/', "--")))
}

/// Starts repository `repo` (`kind`: `models` or `datasets`) at `commit` in hub cache `cache` as
/// the hub's tools lay it out, `refs/main` naming the commit; returns its snapshot folder
/// (created), where the repository's files go.
pub fn hub_snapshot(cache: &Path, kind: &str, repo: &str, commit: &str) -> PathBuf {
    let repo_dir = hub_repo_dir(cache, kind, repo);
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    snapshot
}

/// A model folder laid out as the Hugging Face hub cache keeps `org/name` at `commit`.
pub fn hub_cache_layout(cache: &Path, repo: &str, commit: &str, files_from: &Path) {
    let snapshot = hub_snapshot(cache, "models", repo, commit);
    for e in std::fs::read_dir(files_from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, snapshot.join(p.file_name().unwrap())).unwrap();
    }
}

/// Lays out dataset repository `repo` at `commit` in a hub cache as the Python tools do: file
/// contents under `blobs/`, the snapshot's files relative links to them, `refs/main` → commit.
pub fn dataset_hub_layout(cache: &Path, repo: &str, commit: &str, files: &[(&str, PathBuf)]) {
    let snapshot = hub_snapshot(cache, "datasets", repo, commit);
    let blobs = hub_repo_dir(cache, "datasets", repo).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    for (rel, src) in files {
        let bytes = std::fs::read(src).unwrap();
        let blob = blake3::hash(&bytes).to_hex().to_string();
        std::fs::write(blobs.join(&blob), &bytes).unwrap();
        let link = snapshot.join(rel);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let up = "../".repeat(Path::new(rel).components().count() + 1);
        std::os::unix::fs::symlink(format!("{up}blobs/{blob}"), &link).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), bytes, "{rel}");
    }
}
