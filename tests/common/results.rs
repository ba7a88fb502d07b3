//! Reading what runs stored: summaries, output files, tables and the store's objects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Env;

/// Names of the instances whose `field` is `value` in a JSON listing of instances (`run --json`
/// summaries have a `status`, `status --json` answers a `state`).
pub fn instances_with(listing: &serde_json::Value, field: &str, value: &str) -> Vec<String> {
    listing["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i[field] == value)
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Names of the instances with the given status in a `run --json` summary.
pub fn with_status(summary: &serde_json::Value, status: &str) -> Vec<String> {
    instances_with(summary, "status", status)
}

/// The store file of one output of an instance's last successful run.
pub fn output_file(env: &Env, experiment: &str, instance: &str, output: &str) -> PathBuf {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let record = store
        .index
        .latest(experiment, instance)
        .unwrap()
        .unwrap_or_else(|| panic!("no record for {instance}"));
    let hash = &record.outputs[output].hash;
    store.objects.path(hash)
}

/// A JSON output (reports, epochs, names, scores) of an instance's last successful run.
pub fn output_json(env: &Env, experiment: &str, instance: &str, output: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(output_file(env, experiment, instance, output)).unwrap())
        .unwrap()
}

/// The lines of a text output (texts, labels) of an instance's last successful run.
pub fn output_lines(env: &Env, experiment: &str, instance: &str, output: &str) -> Vec<String> {
    lines_of(&output_file(env, experiment, instance, output))
}

/// The lines of a text file.
pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// `msae table --format json --kind KIND` as rows.
pub fn table_rows(env: &Env, exp: &Path, kind: &str) -> Vec<serde_json::Value> {
    env.msae_json(&[
        "table",
        exp.to_str().unwrap(),
        "--format",
        "json",
        "--kind",
        kind,
    ])
    .as_array()
    .unwrap()
    .clone()
}

/// Every object file of the store (`objects/<prefix>/<hash>`), unordered.
pub fn object_files(env: &Env) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(env.cache().join("objects")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

/// Stored outputs by (instance, output): what two runs that must agree byte for byte compare.
pub type Objects = BTreeMap<(String, String), Vec<u8>>;

/// The bytes of every stored output of every instance of a `run --json` summary; each object's
/// size is checked against its record.
pub fn stored_objects(env: &Env, experiment: &str, summary: &serde_json::Value) -> Objects {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let mut out = Objects::new();
    for inst in summary["instances"].as_array().unwrap() {
        let name = inst["name"].as_str().unwrap();
        let record = store.index.latest(experiment, name).unwrap().unwrap();
        for (output, artifact) in &record.outputs {
            let bytes = std::fs::read(store.objects.path(&artifact.hash)).unwrap();
            assert_eq!(bytes.len() as u64, artifact.size, "{name}.{output}");
            out.insert((name.to_string(), output.clone()), bytes);
        }
    }
    out
}

/// Asserts that two runs stored the same outputs with the same bytes; `what` says which runs.
pub fn assert_same_objects(a: &Objects, b: &Objects, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different outputs stored {what}"
    );
    let differing: Vec<String> = a
        .iter()
        .filter(|(k, bytes)| b[*k] != **bytes)
        .map(|((inst, output), _)| format!("{inst}.{output}"))
        .collect();
    assert!(differing.is_empty(), "outputs differ {what}: {differing:?}");
}
