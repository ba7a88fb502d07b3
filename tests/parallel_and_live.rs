//! Through the binary: live inspection of a held store, typed reasons, `-q`, and `-j N`
//! (results independent of `-j`, kill -9 during a parallel run loses only instances in flight).

use crate::common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_same_objects, assert_succeeds_with, fails_with, instances_with, stored_objects, text,
    with_status, Env, Synth,
};

/// A grid of six trainings (two architectures × three sizes) plus scores: long enough per
/// training (`epochs`) to be caught while running.
fn grid(epochs: u32) -> String {
    Synth::new(32, &[64], 4000, 400).experiment_with("grid", "seed = 3\n")
        + &format!(
            r#"
[steps.sae]
kind = "train"
data = "data.train"
expansion = [2, 3, 4]
epochs = {epochs}
batch_size = 128
checkpoint_steps = 20

[[steps.sae.variant]]
arch = "topk"
k = 4

[[steps.sae.variant]]
arch = "relu"
l1 = 0.003

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
"#
        )
}

/// `msae run -j 2 EXP` in the background, its output captured.
fn spawn_run(env: &Env, exp: &str) -> Child {
    env.spawn(&["run", "-j", "2", exp], Stdio::piped(), Stdio::piped())
}

/// Polls `msae status --json` until `pred` holds (or panics after `limit`).
fn wait_for_status(
    env: &Env,
    exp: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = env.msae_json(&["status", "--json", exp]);
        if pred(&v) {
            return v;
        }
        assert!(start.elapsed() < limit, "status never matched: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn states(status: &serde_json::Value, state: &str) -> Vec<String> {
    instances_with(status, "state", state)
}

#[test]
fn every_reading_command_works_and_shows_live_state_while_a_run_holds_the_store() {
    let env = Env::new();
    // Long enough (about ten seconds on two cores) that the run outlasts every reader below.
    let exp = env.write("grid.toml", &grid(150));
    let e = exp.to_str().unwrap();
    let mut run = spawn_run(&env, e);
    // A training in flight with its progress, while the data step is finished.
    let status = wait_for_status(&env, e, Duration::from_secs(120), |v| {
        v["instances"].as_array().unwrap().iter().any(|i| {
            i["state"] == "running"
                && i["live"]["progress"]["position"].as_u64().unwrap_or(0) > 0
                && i["live"]["progress"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("epoch")
        })
    });
    assert!(run.try_wait().unwrap().is_none(), "the run ended too early");
    assert!(status["run"]["pid"].as_u64().is_some(), "{status}");
    assert_eq!(status["run"]["executor"], "local");
    assert_eq!(states(&status, "done"), vec!["data"], "{status}");
    let running = states(&status, "running");
    assert!(!running.is_empty() && running.len() <= 2, "{status}");
    let text_status = text(&env.msae(&["status", e]));
    assert!(text_status.contains("live: `msae run"), "{text_status}");
    assert!(text_status.contains("running  sae["), "{text_status}");
    assert!(text_status.contains("epoch"), "{text_status}");

    // Tables, plan, why, du, graph and export all answer without waiting for the run.
    let started = Instant::now();
    let table = env.msae_json(&["table", e, "--format", "json", "--kind", "synth"]);
    assert_eq!(table.as_array().unwrap().len(), 1);
    let plan = env.msae_json(&["plan", "--json", e]);
    assert_eq!(plan[0]["status"], "cached", "{plan}");
    let why = env.msae_json(&["why", "--json", e, "score[arch=topk,expansion=2,k=4]"]);
    assert!(!why.as_array().unwrap().is_empty(), "{why}");
    let du = env.msae_json(&["cache", "du", "--json"]);
    assert_eq!(du["steps"][0]["step"], "data", "{du}");
    assert!(env.msae(&["graph", e]).status.success());
    let exported = env.msae(&["export", e, "data", "--output", "test", "--to", "out"]);
    assert!(exported.status.success(), "{}", text(&exported));
    let exported = msae::data::npy::Matrix::open(&env.path("out/test.npy")).unwrap();
    assert_eq!((exported.rows(), exported.cols()), (400, 32));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "readers must not wait for the run"
    );
    // A command that writes still gets the one-writer message.
    fails_with(&env, &["gc", e], &["is in use by another msae process"]);

    let out = run.wait_with_output().unwrap();
    assert_succeeds_with(&out, &["13 run, 0 cached, 0 failed"]);
    // The run was not disturbed, and with the store free the readers use the index itself.
    let status = env.msae_json(&["status", "--json", e]);
    assert!(status["run"].is_null(), "{status}");
    assert_eq!(states(&status, "done").len(), 13, "{status}");
}

#[test]
fn reasons_are_typed_values_with_old_and_new() {
    let env = Env::new();
    let exp = env.write("grid.toml", &grid(1));
    let e = exp.to_str().unwrap();
    env.run_json(&exp);
    env.write(
        "grid.toml",
        &grid(1).replace("n_features = 64", "n_features = 80"),
    );
    let plan = env.msae_json(&["plan", "--json", e]);
    let data = &plan[0];
    assert_eq!(data["status"], "changed");
    assert_eq!(
        data["reasons"][0],
        serde_json::json!({"type": "parameter", "name": "n_features", "old": 64, "new": 80})
    );
    let why = env.msae_json(&["why", "--json", e, "score[arch=relu,expansion=3,l1=0.003]"]);
    let chain: Vec<&str> = why
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["instance"].as_str().unwrap())
        .collect();
    // The score waits for its first input (the data), whose parameter changed.
    assert_eq!(chain, ["score[arch=relu,expansion=3,l1=0.003]", "data"]);
    assert_eq!(why[0]["reasons"][0]["type"], "upstream");
    assert_eq!(why[0]["reasons"][0]["instance"], "data");
    assert_eq!(why[1]["reasons"][0]["name"], "n_features");
    // The text form says the same in words.
    let words = text(&env.msae(&["why", e, "data"]));
    assert!(words.contains("param n_features: 64 → 80"), "{words}");

    // A missing object is its own reason, naming the output.
    env.write("grid.toml", &grid(1));
    let record = common::output_file(&env, "grid", "data", "test");
    std::fs::remove_file(&record).unwrap();
    let plan = env.msae_json(&["plan", "--json", e]);
    assert_eq!(
        plan[0]["reasons"][0]["type"], "missing_output",
        "{}",
        plan[0]
    );
    assert_eq!(plan[0]["reasons"][0]["output"], "test");
}

#[test]
fn quiet_silences_per_instance_lines() {
    let env = Env::new();
    let exp = env.write("grid.toml", &grid(1));
    let loud = env.msae(&["run", exp.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&loud.stderr).contains("ran     data"));
    std::fs::remove_dir_all(env.cache()).unwrap();
    let quiet = env.msae(&["-q", "run", exp.to_str().unwrap()]);
    assert!(quiet.status.success());
    // Warnings stay (this grid's short ReLU trainings end dense, which `train` warns about);
    // every other line goes.
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    let other: Vec<&str> = stderr.lines().filter(|l| !l.contains("WARN")).collect();
    assert!(
        other.is_empty(),
        "-q must print no per-instance lines: {other:?}"
    );
    assert!(!stderr.contains("ran "), "{stderr}");
    assert!(String::from_utf8_lossy(&quiet.stdout).contains("13 run, 0 cached, 0 failed"));
}

#[test]
fn outputs_do_not_depend_on_the_number_of_parallel_instances() {
    let one = Env::new();
    let three = Env::new();
    let text_exp = grid(2);
    let e1 = one.write("grid.toml", &text_exp);
    let e3 = three.write("grid.toml", &text_exp);
    let s1 = one.run_json_with(&["-j", "1"], &e1);
    let s3 = three.run_json_with(&["-j", "3"], &e3);
    assert_eq!(s1["run"], 13);
    assert_eq!(s3["run"], 13);
    let (o1, o3) = (
        stored_objects(&one, "grid", &s1),
        stored_objects(&three, "grid", &s3),
    );
    assert!(o1.len() >= 13 * 2, "{}", o1.len());
    assert_same_objects(&o1, &o3, "between -j 1 and -j 3");
}

#[test]
fn kill_9_during_a_parallel_run_loses_only_the_instances_in_flight() {
    let env = Env::new();
    // 60 epochs: each training runs long enough (about a second) for the status poll to see
    // two finished while others run.
    let exp = env.write("grid.toml", &grid(60));
    let e = exp.to_str().unwrap();
    let mut run = spawn_run(&env, e);
    // Kill once two trainings have finished and others are running.
    let before = wait_for_status(&env, e, Duration::from_secs(300), |v| {
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "done" && i["step"] == "sae")
            .count()
            >= 2
            && !states(v, "running").is_empty()
    });
    run.kill().unwrap();
    run.wait().unwrap();
    // What the index holds after the kill (the store is free now: the index itself).
    let after = env.msae_json(&["status", "--json", e]);
    let done_after = states(&after, "done");
    for name in states(&before, "done") {
        assert!(done_after.contains(&name), "{name} was lost: {after}");
    }
    let summary = env.run_json(&exp);
    let ran = with_status(&summary, "ran");
    let cached = with_status(&summary, "cached");
    assert_eq!(cached.len(), done_after.len(), "{summary}");
    for name in &done_after {
        assert!(cached.contains(name), "{name} ran again: {summary}");
    }
    assert_eq!(ran.len() + cached.len(), 13);
    // The resumed store yields the bytes of an uninterrupted run.
    let clean = Env::new();
    let ce = clean.write("grid.toml", &grid(60));
    let clean_summary = clean.run_json(&ce);
    let (a, b) = (
        stored_objects(&env, "grid", &summary),
        stored_objects(&clean, "grid", &clean_summary),
    );
    assert_same_objects(&a, &b, "after the kill and resume");
}
