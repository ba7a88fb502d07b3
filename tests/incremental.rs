//! End to end through the binary: caching, changed grid values, early cut-off, `why`, `plan`.

mod common;

use common::{with_status, Env};

const EXP: &str = r#"
[experiment]
name = "inc"
seed = 7

[steps.data]
kind = "synth"
dim = 16
n_features = [32, 48]
train = 2000
test = 200

[steps.st]
kind = "stats"
data = "data.train"
"#;

#[test]
fn second_run_is_a_no_op_and_a_changed_grid_value_reruns_only_its_branch() {
    let env = Env::new();
    let exp = env.write("inc.toml", EXP);
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

    env.write("inc.toml", &EXP.replace("[32, 48]", "[32, 64]"));
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
    let exp = env.write("e.toml", &EXP.replace("[32, 48]", "32"));
    env.run_json(&exp);
    env.write(
        "e.toml",
        &EXP.replace("[32, 48]", "32")
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
    let out = env.msae(&["why", exp.to_str().unwrap(), "dta"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out).contains("did you mean `data`?"));
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
    let exp = env.write("t.toml", EXP);
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

#[test]
fn outputs_are_byte_identical_across_stores_and_thread_counts() {
    let a = Env::new();
    let b = Env::new();
    let text = "[steps.data]\nkind = \"synth\"\ndim = 8\nn_features = 16\ntrain = 3000\ntest = 100\n\n[steps.st]\nkind = \"stats\"\ndata = \"data.train\"\n";
    let ea = a.write("x.toml", text);
    let eb = b.write("x.toml", text);
    let sa = a.run_json(&ea);
    let out = b
        .command()
        .args(["run", "--json", "--threads", "1", eb.to_str().unwrap()])
        .output()
        .unwrap();
    let sb: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for i in 0..2 {
        assert_eq!(sa["instances"][i]["key"], sb["instances"][i]["key"]);
    }
}

#[test]
fn every_shipped_experiment_is_valid() {
    let env = Env::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
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
    let exp = env.write("g.toml", EXP);
    env.run_json(&exp);
    env.write("g.toml", &EXP.replace("[32, 48]", "[32]"));
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
    let exp = env.write("x.toml", &EXP.replace("[32, 48]", "32"));
    let first = env
        .command()
        .args(["run", "--json", "--threads", "1", exp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(first.status.success());
    let again = env
        .command()
        .args([
            "run",
            "--json",
            "--threads",
            "2",
            "--device",
            "cpu",
            exp.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
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
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = readme
        .find("## Experiment files")
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
