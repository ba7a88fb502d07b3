//! A store that cannot be written can still be read: on a read-only mount of a finished store
//! every reading command (`table`, `status`, `plan`, `why`, `graph`, `report`, `export`,
//! `cache du`) exits 0 with the same output as on the writable store and says the store is
//! read-only; `run` refuses with a clear message that never advises throwing the store away.
//!
//! The read-only mount is a bind mount remounted read-only inside an unprivileged user and
//! mount namespace (`unshare -rm`), so it is real (EROFS, for root too) and needs no privileges
//! outside the test.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{text, Env, Synth};

const STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = [2, 4]
epochs = 1
batch_size = 64

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
"#;

/// `msae ARGS` against `store` mounted read-only at its own path, or `None` where this system
/// cannot make such a mount (no user namespaces).
fn read_only_msae(env: &Env, store: &Path, args: &[&str]) -> Option<Output> {
    let script = r#"store="$1"; shift
mount --bind "$store" "$store" && mount -o remount,bind,ro "$store" || exit 97
exec "$@""#;
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(store)
        .arg(env!("CARGO_BIN_EXE_msae"))
        .args(args)
        .current_dir(env.dir.path())
        .env("MSAE_CACHE", store)
        .env_remove("RUST_LOG")
        .output()
        .ok()?;
    (out.status.code() != Some(97) && !text(&out).contains("unshare: ")).then_some(out)
}

#[test]
fn every_reading_command_works_on_a_read_only_store() {
    let env = Env::new();
    let exp = env.write(
        "ro.toml",
        &(Synth::new(8, &[16], 256, 64).experiment("ro") + STEPS),
    );
    let exp = exp.to_str().unwrap();
    let run = env.msae(&["run", exp]);
    assert!(run.status.success(), "{}", text(&run));
    let store = env.cache();

    let commands: Vec<Vec<&str>> = vec![
        vec!["table", exp, "--format", "json"],
        vec!["status", exp, "--json"],
        vec!["plan", exp],
        vec!["why", exp, "sae[k=2]"],
        vec!["graph", exp],
        vec!["cache", "du"],
        vec!["export", exp, "score[k=4]", "--to", "exported-rw"],
        vec!["report", exp, "--results", "results-rw"],
    ];
    // The writable store first (opening it for reading rewrites its index files), then the
    // same commands on it mounted read-only, which must leave every byte as it is.
    let writable_outputs: Vec<Output> = commands
        .iter()
        .map(|args| {
            let out = env.msae(args);
            assert!(out.status.success(), "{args:?}: {}", text(&out));
            out
        })
        .collect();
    let before = common::file_hashes(&store);
    let mut checked = 0;
    for (args, writable) in commands.iter().zip(&writable_outputs) {
        let ro_args: Vec<String> = args.iter().map(|a| a.replace("-rw", "-ro")).collect();
        let ro_args: Vec<&str> = ro_args.iter().map(String::as_str).collect();
        let Some(read_only) = read_only_msae(&env, &store, &ro_args) else {
            println!("notice: this system cannot make a read-only bind mount (unshare -rm); the read-only store test is skipped");
            return;
        };
        assert!(
            read_only.status.success(),
            "{args:?} on the read-only store: {}",
            text(&read_only)
        );
        let stderr = String::from_utf8_lossy(&read_only.stderr);
        // `graph` draws the plan alone and never opens the store.
        assert!(
            args[0] == "graph" || stderr.contains("is read-only (read-only file system)"),
            "{args:?} does not say the store is read-only: {stderr}"
        );
        let (a, b) = (
            String::from_utf8_lossy(&writable.stdout).replace("-rw", "-ro"),
            String::from_utf8_lossy(&read_only.stdout).to_string(),
        );
        if args[0] == "status" {
            // The one difference allowed: status says where its index came from.
            let (mut a, mut b): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(&a).unwrap(),
                serde_json::from_str(&b).unwrap(),
            );
            assert_eq!(b["read_only"], "read-only file system", "{b}");
            a.as_object_mut().unwrap().remove("read_only");
            b.as_object_mut().unwrap().remove("read_only");
            assert_eq!(a, b, "status differs on the read-only store");
        } else {
            assert_eq!(
                a, b,
                "{args:?} prints something else on the read-only store"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, commands.len());
    // What the read-only commands wrote outside the store equals what the writable ones wrote.
    for (rw, ro) in [
        ("exported-rw", "exported-ro"),
        ("results-rw/ro", "results-ro/ro"),
    ] {
        for file in ["score.json", "score_topk.csv", "score_topk.md"] {
            let (a, b) = (env.path(rw).join(file), env.path(ro).join(file));
            if a.exists() {
                assert_eq!(
                    std::fs::read(&a).unwrap(),
                    std::fs::read(&b).unwrap(),
                    "{file}"
                );
            }
        }
    }
    assert!(env.path("results-ro/ro/index.html").exists());

    // A command that must write is refused, clearly, and the store is left as it was.
    let refused = read_only_msae(&env, &store, &["run", exp]).unwrap();
    assert!(!refused.status.success());
    let message = text(&refused);
    assert!(
        message.contains("cannot be written (read-only file system)")
            && message.contains("--cache DIR"),
        "{message}"
    );
    for advice in ["move it away", "delete", "remove"] {
        assert!(!message.contains(advice), "advises `{advice}`: {message}");
    }
    assert_eq!(common::file_hashes(&store), before, "the store changed");
}
