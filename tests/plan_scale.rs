//! Planning cost grows linearly with the sweep: `msae plan` over a grid ten times larger takes
//! about ten times as long, not a hundred. (Expansion once computed, per instance, facts about
//! every candidate input, which made a 16,000-instance plan take 11 s.)

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_succeeds_with, Env};

/// An experiment of `seeds` × 4 `train` instances, each with three downstream steps: 4 · seeds · 4
/// + 1 instances.
fn grid(seeds: usize) -> String {
    let list: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    format!(
        r#"[experiment]
name = "grid"
[steps.data]
kind = "synth"
dim = 16
n_features = 32
train = 256
test = 64
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = [1, 2, 3, 4]
seed = [{}]
[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
[steps.rec]
kind = "recovery"
sae = "sae"
truth = "data.dictionary"
[steps.val]
kind = "validate"
sae = "sae.snapshots"
data = "data.test"
"#,
        list.join(", ")
    )
}

/// The fastest of three `plan` runs (the machine may be busy with other tests).
fn plan_time(env: &Env, seeds: usize) -> Duration {
    let path = env.write(&format!("grid{seeds}.toml"), &grid(seeds));
    let arg = path.to_str().unwrap();
    (0..3)
        .map(|_| {
            let start = Instant::now();
            let out = env.msae(&["plan", arg]);
            let took = start.elapsed();
            assert_succeeds_with(
                &out,
                &[&format!("1 new, 0 changed, {} pending", 16 * seeds)],
            );
            took
        })
        .min()
        .unwrap()
}

#[test]
fn planning_time_per_instance_stays_flat_from_2k_to_20k_instances() {
    let env = Env::new();
    let small = plan_time(&env, 125); // 2,001 instances
    let large = plan_time(&env, 1250); // 20,001 instances
    let per_small = small.as_secs_f64() / 2001.0;
    let per_large = large.as_secs_f64() / 20001.0;
    println!(
        "plan: 2,001 instances {:.3} s ({:.1} µs each), 20,001 instances {:.3} s ({:.1} µs each)",
        small.as_secs_f64(),
        per_small * 1e6,
        large.as_secs_f64(),
        per_large * 1e6
    );
    // Process start and reading the store are a fixed cost that flatters the large plan; a
    // quadratic step would make the large plan's time per instance ten times the small one's.
    assert!(
        per_large < 3.0 * per_small,
        "planning 20,001 instances took {:.1} µs per instance, 2,001 took {:.1}: not linear",
        per_large * 1e6,
        per_small * 1e6
    );
}
