//! Helpers for end-to-end tests: a temporary folder with its own store, and the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The msae binary, run in the temp folder against its store.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_msae"));
        c.current_dir(self.dir.path())
            .env("MSAE_CACHE", self.cache())
            .env_remove("RUST_LOG");
        c
    }

    pub fn msae(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("msae runs")
    }

    /// `msae run --json EXP`, asserting success; returns the summary.
    pub fn run_json(&self, exp: &Path) -> serde_json::Value {
        let out = self.msae(&["run", "--json", exp.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "run failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json summary")
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Names of the instances with the given status in a `run --json` summary.
pub fn with_status(summary: &serde_json::Value, status: &str) -> Vec<String> {
    summary["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == status)
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Writes a float32 `.npy` matrix for tests.
pub fn write_npy(path: &Path, rows: usize, cols: usize, values: &[f32]) {
    msae::data::npy::write_matrix(path, rows, cols, values).unwrap();
}

/// Real data shipped beside the project checkout, if present.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is not available (it lives beside the project checkout)",
            p.display()
        );
        None
    }
}

/// The store file of one output of an instance's last successful run.
pub fn output_file(env: &Env, experiment: &str, instance: &str, output: &str) -> PathBuf {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let record = store
        .index
        .latest(experiment, instance)
        .unwrap()
        .unwrap_or_else(|| panic!("no record for {instance}"));
    let hash = &record.outputs[output].hash;
    store.objects.path(hash)
}

/// `msae table --format json --kind KIND` as rows.
pub fn table_rows(env: &Env, exp: &Path, kind: &str) -> Vec<serde_json::Value> {
    let out = env.msae(&[
        "table",
        exp.to_str().unwrap(),
        "--format",
        "json",
        "--kind",
        kind,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The folder `scripts/test-assets.sh` fills (`MSAE_TEST_ASSETS`, default `~/.cache/msae-test`).
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("MSAE_TEST_ASSETS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/msae-test")
        }
    }
}

/// An asset fetched by `scripts/test-assets.sh`, or `None` with a printed notice.
pub fn test_asset(name: &str) -> Option<PathBuf> {
    let p = assets_dir().join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: test asset {} is missing; run scripts/test-assets.sh to fetch it",
            p.display()
        );
        None
    }
}

/// The Python of the test assets (NumPy, Pillow, ftfy, regex), for independent oracles.
pub fn test_python() -> Option<PathBuf> {
    test_asset("venv/bin/python")
}

/// A folder installed from a Debian package (real images), or `None` with a printed notice.
pub fn debian_data(path: &str, package: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {path} is missing; install the Debian package `{package}` (scripts/test-assets.sh does, as root)");
        None
    }
}

/// Writes a C-order `.npy` array (`descr` `<f4` or `<i8`).
pub fn write_npy_array(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// Reads a 2-D C-order float64 `.npy` array.
pub fn read_npy_f64(path: &Path) -> (usize, usize, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f8'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let shape = &shape[..shape.find(')').unwrap()];
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(dims.len(), 2, "{header}");
    let data: Vec<f64> = bytes[start + header_len..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (dims[0], dims[1], data)
}

/// Every file under `dir`, recursively (unordered).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A model folder laid out as the Hugging Face hub cache keeps `org/name` at `commit`.
pub fn hub_cache_layout(cache: &Path, repo: &str, commit: &str, files_from: &Path) {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    for e in std::fs::read_dir(files_from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, snapshot.join(p.file_name().unwrap())).unwrap();
    }
}

/// A float32 `.npy` matrix: rows, columns and values.
pub fn npy_f32(path: &Path) -> (usize, usize, Vec<f32>) {
    let m = msae::data::npy::Matrix::open(path).unwrap();
    (m.rows(), m.cols(), m.data().to_vec())
}

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
