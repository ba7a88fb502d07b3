//! End to end through the binary: caching, changed grid values, early cut-off, `why`, `plan`.

use crate::common;

use common::{assert_same_objects, fails_with, with_status, Env, Synth};

/// Synthetic data of two sizes and their statistics.
fn inc_experiment() -> String {
    Synth::new(16, &[32, 48], 2000, 200).experiment_with("inc", "seed = 7\n")
        + "\n[steps.st]\nkind = \"stats\"\ndata = \"data.train\"\n"
}

#[test]
fn second_run_is_a_no_op_and_a_changed_grid_value_reruns_only_its_branch() {
    let env = Env::new();
    let exp = env.write("inc.toml", &inc_experiment());
    let first = env.run_json(&exp);
    assert_eq!(first["run"], 4, "{first}");
    assert_eq!(first["cached"], 0);

    let second = env.run_json(&exp);
    assert_eq!(second["run"], 0, "{second}");
    assert_eq!(second["cached"], 4);
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    assert!(
        common::text(&out).contains("0 run, 4 cached, 0 failed"),
        "{}",
        common::text(&out)
    );

    env.write(
        "inc.toml",
        &inc_experiment().replace("[32, 48]", "[32, 64]"),
    );
    let plan = env.msae(&["plan", exp.to_str().unwrap()]);
    let plan_text = common::text(&plan);
    assert!(
        plan_text.contains("new      data[n_features=64]"),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("pending  st[n_features=64]"),
        "{plan_text}"
    );
    let third = env.run_json(&exp);
    assert_eq!(
        with_status(&third, "ran"),
        vec!["data[n_features=64]", "st[n_features=64]"],
        "{third}"
    );
    assert_eq!(
        with_status(&third, "cached"),
        vec!["data[n_features=32]", "st[n_features=32]"]
    );
}

#[test]
fn a_changed_parameter_is_explained_by_why() {
    let env = Env::new();
    let exp = env.write("e.toml", &inc_experiment().replace("[32, 48]", "32"));
    env.run_json(&exp);
    env.write(
        "e.toml",
        &inc_experiment()
            .replace("[32, 48]", "32")
            .replace("train = 2000", "train = 1500"),
    );
    let out = env.msae(&["why", exp.to_str().unwrap(), "data"]);
    let text = common::text(&out);
    assert!(text.contains("param train: 2000 → 1500"), "{text}");
    let out = env.msae(&["why", exp.to_str().unwrap(), "st"]);
    assert!(
        common::text(&out).contains("its input `data` runs again"),
        "{}",
        common::text(&out)
    );
    fails_with(
        &env,
        &["why", exp.to_str().unwrap(), "dta"],
        &["did you mean `data`?"],
    );
}

#[test]
fn an_upstream_rerun_with_identical_bytes_leaves_downstream_cached() {
    let env = Env::new();
    let values: Vec<f32> = (0..40 * 8)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    common::write_npy(&env.path("a.npy"), 40, 8, &values);
    std::fs::copy(env.path("a.npy"), env.path("b.npy")).unwrap();
    let exp_text = "[steps.emb]\nkind = \"import\"\npath = \"a.npy\"\n\n[steps.st]\nkind = \"stats\"\ndata = \"emb\"\n";
    let exp = env.write("cut.toml", exp_text);
    assert_eq!(env.run_json(&exp)["run"], 2);

    env.write("cut.toml", &exp_text.replace("a.npy", "b.npy"));
    let out = env.msae(&["why", exp.to_str().unwrap(), "emb"]);
    assert!(
        common::text(&out).contains("file path: path a.npy → b.npy"),
        "{}",
        common::text(&out)
    );
    let summary = env.run_json(&exp);
    assert_eq!(with_status(&summary, "ran"), vec!["emb"], "{summary}");
    assert_eq!(with_status(&summary, "cached"), vec!["st"], "{summary}");

    // Editing the file's content (same path) is noticed through its hash.
    let mut changed = values.clone();
    changed[3] = 0.5;
    common::write_npy(&env.path("b.npy"), 40, 8, &changed);
    let summary = env.run_json(&exp);
    assert_eq!(with_status(&summary, "ran"), vec!["emb", "st"], "{summary}");
}

#[test]
fn results_tables_are_written_and_printed() {
    let env = Env::new();
    let exp = env.write("t.toml", &inc_experiment());
    env.run_json(&exp);
    let md = std::fs::read_to_string(env.path("results/inc/synth.md")).unwrap();
    assert!(md.contains("| data[n_features=32] | 32 |"), "{md}");
    let csv = env.msae(&[
        "table",
        exp.to_str().unwrap(),
        "--format",
        "csv",
        "--kind",
        "stats",
    ]);
    let text = String::from_utf8_lossy(&csv.stdout);
    assert!(text.starts_with("instance,n_features,"), "{text}");
    assert_eq!(text.lines().count(), 3);
    let graph = env.msae(&["graph", exp.to_str().unwrap(), "--format", "dot"]);
    assert!(String::from_utf8_lossy(&graph.stdout).contains("train→data"));
}

/// Every architecture, trained and then scored, validated, extracted and matched, on small
/// synthetic data: batches large enough that the parallel kernels split their work (parts of
/// 256 rows, groups of 512 output rows, threaded matrix products) across both threads.
fn threaded() -> String {
    Synth::new(32, &[64], 4096, 1200)
        .extra("active = 3.0\n")
        .experiment_with("threads", "seed = 3\n")
        + THREADED_STEPS
}

const THREADED_STEPS: &str = r#"
[steps.st]
kind = "stats"
data = "data.train"

[steps.sae]
kind = "train"
data = "data.train"
n_latents = 256
epochs = 2
batch_size = 1024
lr = 0.004

[[steps.sae.variant]]
arch = "topk"
k = 4

[[steps.sae.variant]]
arch = "batchtopk"
k = 4

[[steps.sae.variant]]
arch = "msae"
nesting_start = 8

[[steps.sae.variant]]
arch = "relu"
l1 = 0.003

[[steps.sae.variant]]
arch = "jumprelu"

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
ks = [2, 8]

[steps.val]
kind = "validate"
sae = "sae.snapshots"
data = "data.test"

[steps.ex]
kind = "extract"
sae = "sae"
data = "data.test"

[steps.recovery]
kind = "recovery"
sae = "sae"
truth = "data.dictionary"
"#;

/// Every stored output of every instance of a run (`common::stored_objects`), after checking
/// that each training ran with `threads` worker threads.
fn stored_outputs(
    env: &Env,
    experiment: &str,
    summary: &serde_json::Value,
    threads: u64,
) -> common::Objects {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    for inst in summary["instances"].as_array().unwrap() {
        let name = inst["name"].as_str().unwrap();
        if name.starts_with("sae[") {
            let record = store.index.latest(experiment, name).unwrap().unwrap();
            assert_eq!(record.exec["threads"], threads, "{name}: {:?}", record.exec);
        }
    }
    drop(store);
    common::stored_objects(env, experiment, summary)
}

#[test]
fn outputs_are_byte_identical_across_stores_and_thread_counts() {
    let runs: Vec<(Env, serde_json::Value)> = ["1", "2"]
        .into_iter()
        .map(|threads| {
            let env = Env::new();
            let exp = env.write("x.toml", &threaded());
            let summary = env.run_json_with(&["--threads", threads], &exp);
            assert_eq!(summary["failed"], 0, "{summary}");
            (env, summary)
        })
        .collect();
    let [(one, s1), (two, s2)] = &runs[..] else {
        unreachable!()
    };
    // 1 synth, 1 stats and five of each SAE step.
    assert_eq!(s1["run"], 2 + 5 * 5, "{s1}");
    let a = stored_outputs(one, "threads", s1, 1);
    let b = stored_outputs(two, "threads", s2, 2);
    assert_same_objects(&a, &b, "between 1 and 2 threads");
    // Equal bytes mean equal keys downstream: every instance has the same key in both stores.
    for (x, y) in s1["instances"]
        .as_array()
        .unwrap()
        .iter()
        .zip(s2["instances"].as_array().unwrap())
    {
        assert_eq!((&x["name"], &x["key"]), (&y["name"], &y["key"]));
    }
}

#[test]
fn every_shipped_experiment_is_valid() {
    let env = Env::new();
    let dir = common::repo_path("experiments");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = env.msae(&["graph", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                common::text(&out)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} experiment files found");
    // The checkpoint-import example needs nothing outside the checkout: run it.
    let summary = env.run_json(&dir.join("reference_checkpoints.toml"));
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["run"], 10, "{summary}");
}

#[test]
fn gc_removes_what_no_experiment_reaches_and_keeps_the_rest() {
    let env = Env::new();
    let exp = env.write("g.toml", &inc_experiment());
    env.run_json(&exp);
    env.write("g.toml", &inc_experiment().replace("[32, 48]", "[32]"));
    let dry = env.msae(&["gc", "--dry-run", exp.to_str().unwrap()]);
    let dry_text = common::text(&dry);
    assert!(
        dry_text.contains("would remove 2 record(s), 6 object(s)"),
        "{dry_text}"
    );
    let du_before = common::text(&env.msae(&["cache", "du"]));
    assert!(
        du_before.contains("| inc | data | synth | 2 |"),
        "{du_before}"
    );
    let out = env.msae(&["gc", exp.to_str().unwrap()]);
    let text = common::text(&out);
    assert!(
        text.contains("removed 2 record(s), 6 object(s), 0 checkpoint folder(s)"),
        "{text}"
    );
    assert!(!text.contains(": 0 B freed"), "{text}");
    assert!(common::text(&env.msae(&["cache", "du"])).contains("| inc | data | synth | 1 |"));
    assert_eq!(env.run_json(&exp)["run"], 0);
    assert!(env.msae(&["cache", "verify"]).status.success());
}

#[test]
fn execution_settings_are_recorded_but_not_keyed() {
    let env = Env::new();
    let exp = env.write("x.toml", &inc_experiment().replace("[32, 48]", "32"));
    env.run_json_with(&["--threads", "1"], &exp);
    let summary = env.run_json_with(&["--threads", "2", "--device", "cpu"], &exp);
    assert_eq!(summary["run"], 0, "{summary}");
}

#[test]
fn relative_paths_resolve_against_the_experiment_folder() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("sub/data")).unwrap();
    common::write_npy(&env.path("sub/data/m.npy"), 4, 3, &[0.25; 12]);
    let exp = env.write(
        "sub/e.toml",
        "[steps.x]\nkind = \"import\"\npath = \"data/m.npy\"\n",
    );
    // Run from the parent folder: the path must still be found next to the experiment.
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::text(&out));
}

#[test]
fn the_readme_toml_example_is_a_valid_experiment() {
    let readme = std::fs::read_to_string(common::repo_path("docs/experiments.md")).unwrap();
    let section = readme
        .find("## TOML reference")
        .expect("TOML reference section");
    let start = readme[section..].find("```toml").unwrap() + section + "```toml".len();
    let end = readme[start..].find("```").unwrap() + start;
    let env = Env::new();
    let exp = env.write("readme.toml", &readme[start..end]);
    let out = env.msae(&["graph", exp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("recovery[arch=msae,expansion=8,n_features=512,weighting=rw]"));
}

#[test]
fn a_no_op_run_leaves_the_results_folder_as_it_is_until_something_differs() {
    let env = Env::new();
    let exp = env.write("inc.toml", &inc_experiment());
    let first = env.run_json(&exp);
    let dir = env.path(first["results"].as_str().unwrap());
    let page = dir.join("index.html");
    let written = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = written(&page);
    let fingerprint = || std::fs::read_to_string(dir.join(".written-for.txt")).unwrap();
    let first_print = fingerprint();
    // Past the page's one-second clock, so that a rewrite would change its bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(env.run_json(&exp)["cached"], 4);
    assert_eq!(written(&page), before, "a no-op run rewrote the page");
    // Another experiment text (same keys) is another page: written again.
    env.write("inc.toml", &(inc_experiment() + "# a comment\n"));
    assert_eq!(env.run_json(&exp)["cached"], 4);
    assert_ne!(
        written(&page),
        before,
        "the changed experiment's page was not written"
    );
    assert_ne!(fingerprint(), first_print);
    // A page that is gone is written again.
    std::fs::remove_file(&page).unwrap();
    assert_eq!(env.run_json(&exp)["cached"], 4);
    assert!(page.is_file());
}
