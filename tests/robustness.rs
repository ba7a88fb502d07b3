//! Crashes, damaged stores and concurrent processes never lose or corrupt finished results.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{assert_succeeds_with, fails_with, object_files, with_status, Env, Synth};

/// Enough instances, each taking a noticeable moment, to interrupt a run in the middle.
fn slow() -> String {
    Synth::new(128, &[512], 30000, 100)
        .extra("seed = [1, 2, 3, 4, 5, 6, 7, 8]\n")
        .experiment("slow")
}

#[test]
fn kill_9_mid_run_then_rerun_completes_without_redoing_finished_work() {
    let env = Env::new();
    let exp = env.write("slow.toml", &slow());
    let mut child = env.spawn(
        &["run", exp.to_str().unwrap()],
        Stdio::null(),
        Stdio::piped(),
    );
    // Lines "ran <instance>" arrive on stderr as instances finish; kill after the second.
    let mut finished = Vec::new();
    let reader = BufReader::new(child.stderr.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ran     ") {
            finished.push(rest.split(" (").next().unwrap().to_string());
            if finished.len() == 2 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        finished.len(),
        2,
        "the run finished too few instances before the kill"
    );

    let summary = env.run_json(&exp);
    let cached = with_status(&summary, "cached");
    let ran = with_status(&summary, "ran");
    for name in &finished {
        assert!(
            cached.contains(name),
            "{name} finished before the kill but was not cached: {summary}"
        );
    }
    assert_eq!(cached.len() + ran.len(), 8, "{summary}");
    assert_succeeds_with(&env.msae(&["cache", "verify"]), &["0 damaged"]);
    assert_eq!(env.run_json(&exp)["run"], 0);
}

#[test]
fn damaged_objects_are_detected_and_recomputed() {
    let env = Env::new();
    let exp = env.write("d.toml", &Synth::new(8, &[16], 300, 30).step("data"));
    env.run_json(&exp);
    let objects = object_files(&env);
    assert_eq!(objects.len(), 5);

    // A truncated object is caught by the size check of every run.
    let victim = &objects[0];
    let original = std::fs::read(victim).unwrap();
    std::fs::write(victim, &original[..original.len() / 2]).unwrap();
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    let text = common::text(&out);
    assert!(text.contains("missing or damaged"), "{text}");
    assert!(text.contains("1 run, 0 cached"), "{text}");
    assert_eq!(std::fs::read(victim).unwrap(), original);

    // Same size, different bytes: only a full hash finds it.
    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    std::fs::write(victim, &flipped).unwrap();
    assert_eq!(
        env.run_json(&exp)["run"],
        0,
        "a size check alone cannot see this"
    );
    let out = env.msae(&["run", "--verify", exp.to_str().unwrap()]);
    let text = common::text(&out);
    assert!(text.contains("1 run, 0 cached"), "{text}");
    assert_eq!(std::fs::read(victim).unwrap(), original);

    // `cache verify` finds and removes a damaged object; the next run restores it.
    std::fs::write(victim, &flipped).unwrap();
    fails_with(&env, &["cache", "verify"], &["1 damaged"]);
    assert_eq!(env.run_json(&exp)["run"], 1);
    assert!(env.msae(&["cache", "verify"]).status.success());
}

#[test]
fn a_second_process_gets_a_clear_lock_message_or_waits() {
    let env = Env::new();
    let exp = env.write("l.toml", &Synth::new(8, &[16], 100, 10).step("data"));
    let holder = msae::store::Store::open(&env.cache(), "test holder", false).unwrap();
    fails_with(
        &env,
        &["run", exp.to_str().unwrap()],
        &[
            "is in use by another msae process",
            &format!("pid {}", std::process::id()),
            "--wait",
        ],
    );

    let mut waiting = env.spawn(
        &["run", "--wait", exp.to_str().unwrap()],
        Stdio::piped(),
        Stdio::piped(),
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "--wait must wait for the holder"
    );
    drop(holder);
    let start = Instant::now();
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(common::text(&out).contains("1 run, 0 cached"));
}

#[test]
fn a_failing_step_keeps_finished_work_and_keep_going_runs_independent_branches() {
    let env = Env::new();
    let exp = env.write(
        "f.toml",
        &(Synth::new(8, &[16], 100, 10).step("good")
            + "\n[steps.bad]\nkind = \"import\"\npath = \"missing.npy\"\n\n[steps.after]\nkind = \"stats\"\ndata = \"bad\"\n\n[steps.other]\nkind = \"stats\"\ndata = \"good.train\"\n"),
    );
    let e = exp.to_str().unwrap();
    fails_with(
        &env,
        &["run", e],
        &[
            "missing.npy` given as `path` does not exist",
            "1 run, 0 cached, 1 failed, 2 skipped",
        ],
    );
    fails_with(
        &env,
        &["run", "--keep-going", e],
        &["1 run, 1 cached, 1 failed, 1 skipped"],
    );
    let status = common::text(&env.msae(&["status", e]));
    assert!(status.contains("failed   bad"), "{status}");
}
