//! `msae publish`: the SAELens folder and a model card whose YAML header states what the store
//! recorded — the instance's key, msae version, training parameters, the training data's hash
//! and origin, and every downstream evaluation's metrics.

use crate::common;

use std::path::Path;

use common::{fails_with, Env, Synth};

fn experiment() -> String {
    Synth::new(16, &[48], 1500, 400).experiment("pub")
        + r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 6
expansion = 4
epochs = 1
batch_size = 128

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
ks = [4]

[steps.codes]
kind = "extract"
sae = "sae"
data = "data.test"
"#
}

/// The YAML header of a model card, read as JSON: the subset the card is written in (block maps
/// and lists, plain or JSON-quoted keys, JSON scalars).
fn header(card: &str) -> serde_json::Value {
    let body = card
        .strip_prefix("---\n")
        .expect("the card starts with ---");
    let end = body.find("\n---\n").expect("the header ends with ---");
    let lines: Vec<&str> = body[..end].lines().collect();
    let (value, used) = block(&lines, 0, 0);
    assert_eq!(
        used,
        lines.len(),
        "unparsed header lines from {}",
        lines[used]
    );
    value
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The block starting at `lines[i]`, whose entries sit at `indent`; returns it and the next line.
fn block(lines: &[&str], mut i: usize, indent: usize) -> (serde_json::Value, usize) {
    if lines[i][indent..].starts_with("- ") || lines[i][indent..] == *"-" {
        let mut items = Vec::new();
        while i < lines.len()
            && indent_of(lines[i]) == indent
            && lines[i][indent..].starts_with('-')
        {
            let item = lines[i][indent + 1..].trim_start();
            if looks_like_entry(item) {
                // A map whose first entry shares the dash's line.
                let mut owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                owned[i] = format!("{}{item}", " ".repeat(indent + 2));
                let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
                let (v, next) = block(&refs, i, indent + 2);
                items.push(v);
                i = next;
            } else {
                items.push(scalar(item));
                i += 1;
            }
        }
        return (serde_json::Value::Array(items), i);
    }
    let mut map = serde_json::Map::new();
    while i < lines.len() && indent_of(lines[i]) == indent {
        let line = lines[i].trim_start();
        let (key, rest) = split_entry(line);
        i += 1;
        let value = if rest.is_empty() {
            let (v, next) = block(lines, i, indent_of(lines[i]));
            i = next;
            v
        } else {
            scalar(rest)
        };
        map.insert(key, value);
    }
    (serde_json::Value::Object(map), i)
}

fn looks_like_entry(text: &str) -> bool {
    text.starts_with('"') && serde_json::from_str::<serde_json::Value>(text).is_err()
        || text.contains(": ")
        || text.ends_with(':')
}

/// `key: rest` with a plain or JSON-quoted key.
fn split_entry(line: &str) -> (String, &str) {
    if line.starts_with('"') {
        let mut it = serde_json::Deserializer::from_str(line).into_iter::<String>();
        let key = it.next().unwrap().unwrap();
        let rest = &line[it.byte_offset()..];
        return (key, rest.strip_prefix(':').unwrap().trim());
    }
    let (k, rest) = line.split_once(':').unwrap();
    (k.to_string(), rest.trim())
}

fn scalar(text: &str) -> serde_json::Value {
    match text {
        "[]" => serde_json::json!([]),
        "{}" => serde_json::json!({}),
        _ => serde_json::from_str(text).unwrap_or_else(|e| panic!("`{text}`: {e}")),
    }
}

fn record(env: &Env, instance: &str) -> msae::store::Record {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    store.index.latest("pub", instance).unwrap().unwrap()
}

#[test]
fn the_model_card_states_what_the_store_recorded() {
    let env = Env::new();
    let exp = env.write("pub.toml", &experiment());
    let e = exp.to_str().unwrap();
    // Before the run: nothing to publish yet.
    fails_with(
        &env,
        &["publish", e, "sae", "--to", "out"],
        &["`sae` has not been computed yet", "msae run"],
    );
    assert_eq!(env.run_json(&exp)["failed"], 0);
    let to = env.path("out");
    let out = env.msae(&["publish", e, "sae", "--to", to.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(common::text(&out).contains("a SAELens `topk` SAE with k = 6"));
    for f in ["cfg.json", "sae_weights.safetensors", "README.md"] {
        assert!(to.join(f).is_file(), "{f}");
    }
    let card = std::fs::read_to_string(to.join("README.md")).unwrap();
    let h = header(&card);
    assert_eq!(h["library_name"], "saelens");
    assert!(
        h["tags"].as_array().unwrap().contains(&"topk".into()),
        "{h}"
    );

    let sae = record(&env, "sae");
    let m = &h["msae"];
    assert_eq!(m["key"], sae.key.as_str());
    assert_eq!(m["version"], sae.msae_version.as_str());
    assert_eq!(m["instance"], "sae");
    assert_eq!(m["architecture"], "topk");
    assert_eq!(m["saelens_architecture"], "topk");
    assert_eq!(m["k"], 6);
    assert_eq!(m["d_in"], 16);
    assert_eq!(m["d_sae"], 64);
    assert_eq!(
        m["parameters"],
        serde_json::to_value(&sae.components.params).unwrap(),
        "the training parameters are the keyed ones"
    );
    assert_eq!(m["parameters"]["k"], 6);
    let data = &m["training_data"];
    assert_eq!(data["hash"], sae.components.inputs["data"].as_str());
    assert_eq!(data["from"], "data.train");
    assert_eq!(data["kind"], "synth");
    // The training data's hash is the content hash of the stored matrix.
    let stored = common::output_file(&env, "pub", "data", "train");
    assert!(stored
        .to_str()
        .unwrap()
        .replace('/', "")
        .ends_with(data["hash"].as_str().unwrap()));

    // Every downstream evaluation, with the metrics its record holds.
    let evals = m["evaluations"].as_array().unwrap();
    assert_eq!(evals.len(), 2, "{evals:?}");
    for instance in ["score", "codes"] {
        let r = record(&env, instance);
        let entry = evals.iter().find(|v| v["instance"] == instance).unwrap();
        assert_eq!(entry["key"], r.key.as_str());
        assert_eq!(
            entry["values"],
            serde_json::to_value(&r.metrics).unwrap(),
            "{instance}"
        );
        assert_eq!(entry["inputs"], serde_json::json!(["data = data.test"]));
    }
    assert!(
        card.contains("## Evaluations") && card.contains("fvu@4"),
        "{card}"
    );
    assert_cfg(&to);
}

fn assert_cfg(dir: &Path) {
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["architecture"], "topk");
    assert_eq!(cfg["k"], 6);
    assert_eq!(cfg["metadata"]["sae_lens_version"], "6.0.0");
}

#[test]
fn unknown_or_modelless_instances_are_refused() {
    let env = Env::new();
    let exp = env.write("pub.toml", &experiment());
    let e = exp.to_str().unwrap();
    assert_eq!(env.run_json(&exp)["failed"], 0);
    fails_with(
        &env,
        &["publish", e, "sea", "--to", "out"],
        &["has no instance `sea`", "did you mean `sae`"],
    );
    fails_with(
        &env,
        &["publish", e, "score", "--to", "out"],
        &["`score_topk` step, which makes no SAE model"],
    );
    // A changed parameter: the stored model is no longer this instance's result.
    std::fs::write(&exp, experiment().replace("k = 6", "k = 5")).unwrap();
    fails_with(
        &env,
        &["publish", e, "sae", "--to", "out"],
        &["has not been computed yet (it is changed)"],
    );
}
