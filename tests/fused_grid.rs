//! Through the binary: the trainings of a grid that read the same batches, trained together in
//! one pass over the data (`--fuse`), give every instance the bytes of training it alone; a
//! fused run killed mid-way resumes to the same bytes; trainings that read other batches never
//! join a group.

use crate::common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{assert_same_objects, fails_with, stored_objects, walk, Env, Objects, Synth};

/// Data, a grid of five trainings of every architecture and two sizes that share their batches,
/// one training with another batch size, and scores of each.
fn grid(epochs: u32) -> String {
    Synth::new(24, &[48], 3000, 300).experiment_with("fused", "seed = 4\n")
        + &format!(
            r#"
[steps.sae]
kind = "train"
data = "data.train"
expansion = [2, 3]
epochs = {epochs}
batch_size = 100
checkpoint_steps = 7

[[steps.sae.variant]]
arch = "topk"
k = 4

[[steps.sae.variant]]
arch = "msae"
nesting_start = 4

[[steps.sae.variant]]
arch = "relu"

[steps.other]
kind = "train"
data = "data.train"
arch = "batchtopk"
k = 4
expansion = 2
epochs = {epochs}
batch_size = 64

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
"#
        )
}

/// Metrics of an instance's record, by name.
type Metrics = BTreeMap<String, serde_json::Value>;

/// Every stored output of every instance, with the record's metrics.
fn stored(env: &Env, summary: &serde_json::Value) -> (Objects, BTreeMap<String, Metrics>) {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let mut metrics = BTreeMap::new();
    for inst in summary["instances"].as_array().unwrap() {
        let name = inst["name"].as_str().unwrap();
        let record = store.index.latest("fused", name).unwrap().unwrap();
        metrics.insert(name.to_string(), record.metrics);
    }
    drop(store);
    (stored_objects(env, "fused", summary), metrics)
}

#[test]
fn a_fused_grid_gives_every_instance_the_bytes_of_training_it_alone() {
    let (alone, fused) = (Env::new(), Env::new());
    let ea = alone.write("grid.toml", &grid(3));
    let ef = fused.write("grid.toml", &grid(3));
    let sa = alone.run_json_with(&["--fuse", "1"], &ea);
    let sf = fused.run_json_with(&["--fuse", "8"], &ef);
    // data + 6 trainings of the grid + 1 other + 6 scores.
    assert_eq!(sa["run"], 14, "{sa}");
    assert_eq!(sf["run"], 14, "{sf}");
    let ((oa, ma), (of, mf)) = (stored(&alone, &sa), stored(&fused, &sf));
    assert!(oa.len() >= 14 * 2, "{}", oa.len());
    assert_same_objects(&oa, &of, "between a fused run and trainings alone");
    // The six trainings of the grid ran as one group: they share one training time, which
    // trainings run one after another never do; the training with another batch size did not
    // join them.
    let seconds =
        |m: &BTreeMap<String, Metrics>, name: &str| m[name]["train_seconds"].as_f64().unwrap();
    let grid_names: Vec<&String> = mf.keys().filter(|n| n.starts_with("sae[")).collect();
    assert_eq!(grid_names.len(), 6, "{grid_names:?}");
    let group = seconds(&mf, grid_names[0]);
    for name in &grid_names {
        assert_eq!(
            seconds(&mf, name),
            group,
            "{name} did not train with the group"
        );
    }
    assert_ne!(seconds(&mf, "other"), group);
    let alone_times: Vec<f64> = grid_names.iter().map(|n| seconds(&ma, n)).collect();
    assert!(
        alone_times.windows(2).any(|w| w[0] != w[1]),
        "{alone_times:?}"
    );
}

#[test]
fn a_fused_run_killed_mid_way_resumes_to_the_bytes_of_an_uninterrupted_run() {
    let env = Env::new();
    let exp = env.write("grid.toml", &grid(40));
    let e = exp.to_str().unwrap();
    let mut run = env.spawn(&["run", "--fuse", "8", e], Stdio::null(), Stdio::null());
    // Kill once the group has written checkpoints (every 7 steps, 30 steps an epoch).
    let partial = env.cache().join("partial");
    let start = Instant::now();
    loop {
        let checkpoints = walk(&partial)
            .iter()
            .filter(|p| p.ends_with("checkpoint.safetensors"))
            .count();
        if checkpoints >= 6 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoints appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    run.kill().unwrap();
    run.wait().unwrap();
    let resumed = env.run_json_with(&["--fuse", "8"], &exp);
    let clean = Env::new();
    let ce = clean.write("grid.toml", &grid(40));
    let clean_summary = clean.run_json_with(&["--fuse", "1"], &ce);
    assert_same_objects(
        &stored(&env, &resumed).0,
        &stored(&clean, &clean_summary).0,
        "after a kill and a fused resume",
    );
}

#[test]
fn fuse_zero_is_refused() {
    let env = Env::new();
    let exp = env.write("grid.toml", &grid(1));
    fails_with(
        &env,
        &["run", "--fuse", "0", exp.to_str().unwrap()],
        &["--fuse must be at least 1"],
    );
}
