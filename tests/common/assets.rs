//! Files the tests read but do not write: the checkout's own, real data beside it, fetched test
//! assets and Debian packages; and the test Python that runs the independent oracles.
//!
//! What may be missing returns `None` with a printed notice, so that a test skips visibly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A path inside the project checkout (experiments, fixtures, docs, oracles).
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// `path` if it exists, else `None` after printing `skipping: <notice>`.
fn present(path: PathBuf, notice: impl FnOnce(&Path) -> String) -> Option<PathBuf> {
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {}", notice(&path));
        None
    }
}

/// Real data shipped beside the project checkout, if present.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    present(repo_path("../shared/data").join(name), |p| {
        format!(
            "{} is not available (it lives beside the project checkout)",
            p.display()
        )
    })
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
    present(assets_dir().join(name), |p| {
        format!(
            "test asset {} is missing; run scripts/test-assets.sh to fetch it",
            p.display()
        )
    })
}

/// The Python of the test assets (NumPy, SciPy, Pillow, ftfy, regex), for independent oracles.
pub fn test_python() -> Option<PathBuf> {
    test_asset("venv/bin/python")
}

/// The test Python if it can import every module of `modules` (e.g. `"scipy"`), or `None` with a
/// printed notice: a venv made before a module joined `scripts/test-assets.sh` lacks it.
pub fn test_python_with(modules: &str) -> Option<PathBuf> {
    let python = test_python()?;
    let imports = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !imports {
        eprintln!(
            "skipping: the test Python {} cannot import {modules}; run scripts/test-assets.sh",
            python.display()
        );
        return None;
    }
    Some(python)
}

/// A folder installed from a Debian package (real images), or `None` with a printed notice.
pub fn debian_data(path: &str, package: &str) -> Option<PathBuf> {
    present(PathBuf::from(path), |_| {
        format!("{path} is missing; install the Debian package `{package}` (scripts/test-assets.sh does, as root)")
    })
}

/// An oracle script of `tests/oracles/`.
pub fn oracle(name: &str) -> PathBuf {
    repo_path("tests/oracles").join(name)
}

/// Runs the test Python with `args` (an oracle script first), asserting that it succeeds.
pub fn run_python(python: &Path, args: &[&std::ffi::OsStr]) {
    let out = Command::new(python)
        .args(args)
        .output()
        .expect("the test Python runs");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        args[0].to_string_lossy(),
        super::text(&out)
    );
}
