//! Whether a results folder already shows what a run would write into it.
//!
//! The tables, figures and page of a run in which every instance finished depend only on the
//! experiment file, the instances' keys (a key names its record and outputs exactly) and the
//! msae version. After writing them, the run leaves that fingerprint in the folder; a later run
//! that would write the same (every instance served from the store, nothing failed) leaves the
//! folder as it is instead of reading every record again — on a sweep of 100,000 instances most
//! of a no-op run's time. The fingerprint is removed before the folder is rewritten, so an
//! interrupted write is never taken for a current one. `msae report` always rewrites.

use std::path::Path;

use crate::experiment::Experiment;
use crate::runner::{InstanceOutcome, Status};

/// The fingerprint's file in a results folder.
pub const FILE: &str = ".written-for.txt";

/// The fingerprint of a run's results, or `None` when an instance did not finish (the page then
/// names failures, which are not keyed).
pub fn fingerprint(exp: &Experiment, outcomes: &[InstanceOutcome]) -> Option<String> {
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(b"\0");
    h.update(exp.path.display().to_string().as_bytes());
    h.update(b"\0");
    h.update(exp.text.as_bytes());
    for o in outcomes {
        if !matches!(o.status, Status::Ran | Status::Cached) {
            return None;
        }
        h.update(b"\0");
        h.update(o.name.as_bytes());
        h.update(b"=");
        h.update(o.key.as_deref()?.as_bytes());
    }
    Some(h.finalize().to_hex().to_string())
}

/// True when `dir` holds a complete write for `fingerprint`.
pub fn is_current(dir: &Path, fingerprint: &str) -> bool {
    dir.join("index.html").is_file()
        && std::fs::read_to_string(dir.join(FILE)).is_ok_and(|t| t.trim() == fingerprint)
}

/// Called before rewriting `dir`: its contents no longer match any fingerprint.
pub fn forget(dir: &Path) {
    std::fs::remove_file(dir.join(FILE)).ok();
}

/// Called after `dir` was written completely for `fingerprint`.
pub fn remember(dir: &Path, fingerprint: &str) {
    std::fs::write(dir.join(FILE), format!("{fingerprint}\n")).ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, key: &str, status: Status) -> InstanceOutcome {
        InstanceOutcome {
            name: name.into(),
            key: Some(key.into()),
            status,
            seconds: 0.0,
            error: None,
        }
    }

    #[test]
    fn only_a_complete_write_for_the_same_keys_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("e.toml");
        std::fs::write(&toml, "[experiment]\nname = \"e\"\n[steps.s]\nkind = \"synth\"\ndim = 8\nn_features = 16\ntrain = 100\ntest = 10\n").unwrap();
        let exp = crate::experiment::load::load(&toml, crate::step::fake::registry()).unwrap();
        let ran = [outcome("s", "k1", Status::Ran)];
        let cached = [outcome("s", "k1", Status::Cached)];
        let other = [outcome("s", "k2", Status::Cached)];
        let failed = [outcome("s", "k1", Status::Failed)];
        let f = fingerprint(&exp, &ran).unwrap();
        // Ran now or served from the store: the same results.
        assert_eq!(Some(f.clone()), fingerprint(&exp, &cached));
        assert_ne!(Some(f.clone()), fingerprint(&exp, &other));
        assert_eq!(None, fingerprint(&exp, &failed));
        let out = dir.path().join("results");
        std::fs::create_dir_all(&out).unwrap();
        remember(&out, &f);
        assert!(!is_current(&out, &f), "no page yet");
        std::fs::write(out.join("index.html"), "<p>").unwrap();
        assert!(is_current(&out, &f));
        forget(&out);
        assert!(!is_current(&out, &f));
    }
}
