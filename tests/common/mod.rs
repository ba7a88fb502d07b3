//! Helpers for end-to-end tests: a temporary folder with its own store, the real binary, and the
//! checks, experiments and test data that several test files share, so that each is written once.
//!
//! By topic: this file runs msae and checks how a run ended; [`results`] reads what runs stored;
//! [`experiments`] builds experiment files and the data they import; [`datasets`] writes images,
//! shards, models and hub caches for the embed step; [`files`] reads and writes `.npy` files and
//! folders; [`assets`] finds what lives outside the checkout.
//!
//! Every test binary compiles this module and uses only part of it, hence the `allow`s: helpers
//! (`dead_code`) and re-exports (`unused_imports`) that a given binary does not use.
#![allow(dead_code, unused_imports)]

mod assets;
mod datasets;
mod experiments;
mod files;
mod results;

pub use assets::*;
pub use datasets::*;
pub use experiments::*;
pub use files::*;
pub use results::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A temporary folder, removed when dropped, where a test writes its files and msae keeps its
/// store (`cache/`): every test runs against a store of its own.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A fresh, empty folder.
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store msae uses (`MSAE_CACHE`).
    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    /// Writes a text file (creating its folders); returns its path.
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

    /// [`Env::command`] with the Hugging Face hub offline (`HF_HUB_OFFLINE=1`): the embed tests
    /// must never reach the network.
    pub fn offline(&self) -> Command {
        let mut c = self.command();
        c.env("HF_HUB_OFFLINE", "1");
        c
    }

    /// [`Env::offline`] reading models and datasets from the hub cache `hub` (`HF_HUB_CACHE`).
    pub fn offline_hub(&self, hub: &Path) -> Command {
        let mut c = self.offline();
        c.env("HF_HUB_CACHE", hub);
        c
    }

    /// `msae ARGS`, run to the end; what it printed and how it ended.
    pub fn msae(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("msae runs")
    }

    /// msae started in the background with `args` (to be watched, killed or waited for), its
    /// output streams as given.
    pub fn spawn(&self, args: &[&str], stdout: Stdio, stderr: Stdio) -> Child {
        self.command()
            .args(args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("msae starts")
    }

    /// `msae ARGS` asserting success; returns what it printed as JSON (for `--json` commands).
    pub fn msae_json(&self, args: &[&str]) -> serde_json::Value {
        json_of(&self.msae(args))
    }

    /// `msae run --json EXP`, asserting success; returns the summary.
    pub fn run_json(&self, exp: &Path) -> serde_json::Value {
        self.run_json_with(&[], exp)
    }

    /// `msae run --json OPTIONS EXP` (options such as `--threads 2`), asserting success; returns
    /// the summary.
    pub fn run_json_with(&self, options: &[&str], exp: &Path) -> serde_json::Value {
        let mut args = vec!["run", "--json"];
        args.extend(options);
        args.push(exp.to_str().unwrap());
        json_of(&self.msae(&args))
    }
}

/// What a command printed, stdout then stderr: the text that messages are looked for in.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that a command succeeded and returns its stdout as JSON (`--json` output).
pub fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// Asserts that a command failed as msae fails on a user's mistake (exit status 1) with a message
/// containing each of `expected`; returns the whole text for further checks. For commands built
/// by hand (other environment, spawned); [`fails_with`] runs `msae ARGS` itself.
pub fn assert_fails_with(out: &Output, expected: &[&str]) -> String {
    let text = text(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for e in expected {
        assert!(text.contains(e), "expected `{e}` in:\n{text}");
    }
    text
}

/// `msae ARGS` must fail with a clear message: exit status 1 and each of `expected` in what it
/// printed. Returns the text.
pub fn fails_with(env: &Env, args: &[&str], expected: &[&str]) -> String {
    assert_fails_with(&env.msae(args), expected)
}

/// Asserts that a command succeeded and printed each of `expected`; returns the text.
pub fn assert_succeeds_with(out: &Output, expected: &[&str]) -> String {
    let text = text(out);
    assert!(out.status.success(), "{text}");
    for e in expected {
        assert!(text.contains(e), "expected `{e}` in:\n{text}");
    }
    text
}
