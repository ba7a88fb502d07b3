//! `zero_shot` end to end: on data the test makes (5 classes in 16 dimensions, a small TopK SAE)
//! every number of its report equals an independent float64 NumPy computation
//! (`tests/oracles/zero_shot_numpy.py`, which reads the model's safetensors file itself); on the
//! real WordNet glosses with class embeddings from the real MiniLM encoder it is far above
//! chance; and bad input is refused with the parameter named.

use crate::common;

use common::{output_file, output_json, table_rows, text, write_npy, Env, Gauss};

const CLASSES: [&str; 5] = ["cat", "dog", "bird", "fish", "horse"];
const ROWS: usize = 300;
const DIM: usize = 16;

/// Writes `data.npy` (300 rows: class r % 5's direction, a shared offset and noise),
/// `labels.txt`, `classes.npy` (each class direction, slightly perturbed: the text side of the
/// gap) and `class_names.txt`.
fn write_inputs(env: &Env) {
    let mut g = Gauss(2024);
    let directions: Vec<Vec<f32>> = (0..CLASSES.len())
        .map(|_| (0..DIM).map(|_| g.normal() as f32).collect())
        .collect();
    let offset: Vec<f32> = (0..DIM).map(|_| 0.8 * g.normal() as f32).collect();
    let mut data = Vec::with_capacity(ROWS * DIM);
    let mut labels = String::new();
    for r in 0..ROWS {
        let c = r % CLASSES.len();
        for j in 0..DIM {
            data.push(directions[c][j] + offset[j] + 1.6 * g.normal() as f32);
        }
        labels.push_str(CLASSES[c]);
        labels.push('\n');
    }
    let classes: Vec<f32> = directions
        .iter()
        .flat_map(|d| {
            d.iter()
                .map(|&v| v + 0.3 * g.normal() as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    write_npy(&env.path("data.npy"), ROWS, DIM, &data);
    write_npy(&env.path("classes.npy"), CLASSES.len(), DIM, &classes);
    env.write("labels.txt", &labels);
    env.write("class_names.txt", &(CLASSES.join("\n") + "\n"));
}

const EXPERIMENT: &str = r#"
[experiment]
name = "zs"

[steps.data]
kind = "import"
path = "data.npy"
labels = "labels.txt"

[steps.classes]
kind = "import"
path = "classes.npy"
texts = "class_names.txt"

[steps.sae]
kind = "train"
data = "data"
arch = "topk"
k = 4
n_latents = 64
epochs = 2
batch_size = 32
lr = 0.01

[steps.zs]
kind = "zero_shot"
sae = "sae"
data = "data"
labels = "data.labels"
classes = "classes"
class_names = "classes.texts"

[steps.zs_small]
kind = "zero_shot"
sae = "sae"
data = "data"
labels = "data.labels"
classes = "classes"
class_names = "classes.texts"
ks = [1, 4, 100]
logit_scale = 20.0
batch_size = 7
"#;

fn close(got: &serde_json::Value, want: &serde_json::Value, what: &str) {
    if want.is_null() {
        assert!(got.is_null(), "{what}: {got} vs null");
        return;
    }
    let (a, b) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!(
        (a - b).abs() <= 1e-4 * b.abs().max(1e-2),
        "{what}: msae {a} vs NumPy {b}"
    );
}

#[test]
fn every_number_of_the_report_matches_a_float64_numpy_oracle() {
    let Some(python) = common::test_python() else {
        return;
    };
    let env = Env::new();
    write_inputs(&env);
    let exp = env.write("zs.toml", EXPERIMENT);
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let model = output_file(&env, "zs", "sae", "model");
    for (instance, scale, ks) in [("zs", "100", "16,32,64"), ("zs_small", "20", "1,4,64")] {
        let report = output_json(&env, "zs", instance, "report");
        let out = env.path(&format!("{instance}.oracle.json"));
        common::run_python(
            &python,
            &[
                common::oracle("zero_shot_numpy.py").as_os_str(),
                model.as_os_str(),
                env.path("data.npy").as_os_str(),
                env.path("classes.npy").as_os_str(),
                env.path("labels.txt").as_os_str(),
                env.path("class_names.txt").as_os_str(),
                std::ffi::OsStr::new(scale),
                std::ffi::OsStr::new(ks),
                out.as_os_str(),
            ],
        );
        let want: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        // With the two largest logits of every row this far apart, float32 cannot flip a
        // prediction, so accuracies and agreements must match exactly (up to rounding).
        let gap = want["min_gap"].as_f64().unwrap();
        assert!(gap > 1e-3, "{instance}: the data have a near tie ({gap})");
        assert_eq!(report["classes"], 5, "{report}");
        assert_eq!(report["rows"], ROWS, "{report}");
        assert_eq!(report["class_names"], serde_json::json!(CLASSES));
        let ks: Vec<&str> = ks.split(',').collect();
        assert_eq!(
            report["ks"],
            serde_json::json!(ks
                .iter()
                .map(|k| k.parse::<u64>().unwrap())
                .collect::<Vec<_>>())
        );
        let mut entries = vec![
            (
                "original".to_string(),
                &report["original"],
                &want["original"],
            ),
            ("dense".to_string(), &report["dense"], &want["dense"]),
        ];
        for k in &ks {
            entries.push((format!("k = {k}"), &report["topk"][k], &want["topk"][k]));
        }
        for (what, got, want) in entries {
            for field in [
                "accuracy",
                "cross_entropy",
                "agreement",
                "accuracy_recovered",
            ] {
                close(
                    &got[field],
                    &want[field],
                    &format!("{instance} {what} {field}"),
                );
            }
        }
        let accuracy = report["original"]["accuracy"].as_f64().unwrap();
        assert!(
            accuracy > 0.5 && accuracy < 1.0,
            "the data must be neither trivial nor hopeless ({accuracy})"
        );
        eprintln!(
            "{instance}: original {accuracy:.4}, dense {:.4}, k = {}: {:.4}; NumPy agrees, smallest top-2 gap {gap:.3}",
            report["dense"]["accuracy"].as_f64().unwrap(),
            ks[0],
            report["topk"][ks[0]]["accuracy"].as_f64().unwrap()
        );
    }
    let rows = table_rows(&env, &exp, "zero_shot");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = rows
        .iter()
        .find(|r| r.to_string().contains("\"zs_small\""))
        .unwrap_or_else(|| panic!("{rows:?}"));
    for metric in [
        "accuracy",
        "dense_accuracy",
        "dense_recovered",
        "dense_agreement",
        "accuracy@1",
        "recovered@1",
        "accuracy@64",
        "recovered@64",
    ] {
        assert!(row.get(metric).is_some(), "{metric} missing in {row}");
    }
}

/// A readable name for each WordNet lexicographer category, unique among the 40: a noun
/// category by its own name, a verb category by what its verbs do.
fn readable(lexname: &str) -> String {
    let (pos, cat) = lexname.split_once('.').unwrap();
    if pos == "noun" {
        return if cat == "Tops" { "entity" } else { cat }.to_string();
    }
    match cat {
        "body" => "grooming and bodily functions",
        "change" => "changing",
        "cognition" => "thinking",
        "communication" => "telling and speaking",
        "competition" => "fighting and competing",
        "consumption" => "eating and drinking",
        "contact" => "touching",
        "creation" => "making",
        "emotion" => "feeling emotions",
        "motion" => "moving",
        "perception" => "perceiving",
        "possession" => "having and giving",
        "social" => "social activities",
        "stative" => "being",
        "weather" => "weather",
        other => panic!("unknown verb category {other}"),
    }
    .to_string()
}

#[test]
fn real_wordnet_glosses_against_minilm_class_names() {
    let (Some(model), Some(train), Some(test), Some(test_labels)) = (
        common::test_asset("all-MiniLM-L6-v2"),
        common::shared_data("wordnet_lexname_train_14670_384.npy"),
        common::shared_data("wordnet_lexname_test_3667_384.npy"),
        common::shared_data("wordnet_lexname_test_3667.labels.txt"),
    ) else {
        return;
    };
    let env = Env::new();
    let lexnames: Vec<String> = std::fs::read_to_string(&test_labels)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut categories = lexnames.clone();
    categories.sort();
    categories.dedup();
    assert_eq!(categories.len(), 40);
    let names: Vec<String> = categories.iter().map(|c| readable(c)).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 40, "readable names must be unique: {names:?}");
    env.write("class_names.txt", &(names.join("\n") + "\n"));
    let labels: String = lexnames
        .iter()
        .map(|l| readable(l) + "\n")
        .collect::<String>();
    env.write("labels.txt", &labels);
    let exp = env.write(
        "wordnet.toml",
        &format!(
            r#"[experiment]
name = "wordnet"

[steps.train]
kind = "import"
path = "{train}"

[steps.test]
kind = "import"
path = "{test}"
labels = "labels.txt"

[steps.classes]
kind = "embed"
model = "{model}"
source = "text"
path = "class_names.txt"
templates = ["a word about {{}}."]

[steps.sae]
kind = "train"
data = "train"
arch = "topk"
k = 32
expansion = 4.0
epochs = 5
batch_size = 256
lr = 0.001

[steps.zs]
kind = "zero_shot"
sae = "sae"
data = "test"
labels = "test.labels"
classes = "classes"
class_names = "classes.texts"
"#,
            train = train.display(),
            test = test.display(),
            model = model.display(),
        ),
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let report = output_json(&env, "wordnet", "zs", "report");
    assert_eq!(report["classes"], 40);
    assert_eq!(report["rows"], 3667);
    let acc = |entry: &serde_json::Value| entry["accuracy"].as_f64().unwrap();
    let original = acc(&report["original"]);
    println!(
        "wordnet zero-shot (40 classes, 3667 glosses, MiniLM, TopK k 32 × 4):\n  original accuracy {:.4} (chance 0.025), cross-entropy {:.4}",
        original,
        report["original"]["cross_entropy"].as_f64().unwrap()
    );
    let mut entries = vec![("dense".to_string(), &report["dense"])];
    for k in report["ks"].as_array().unwrap() {
        entries.push((format!("k = {k}"), &report["topk"][k.to_string()]));
    }
    for (what, e) in entries {
        println!(
            "  {what}: accuracy {:.4}, recovered {:.4}, agreement {:.4}, cross-entropy {:.4}",
            acc(e),
            e["accuracy_recovered"].as_f64().unwrap(),
            e["agreement"].as_f64().unwrap(),
            e["cross_entropy"].as_f64().unwrap()
        );
    }
    assert!(
        original > 4.0 / 40.0,
        "original accuracy {original} is not clearly above chance (1/40)"
    );
}

#[test]
fn an_unknown_label_and_class_embeddings_of_another_width_are_refused() {
    let env = Env::new();
    write_inputs(&env);
    let mut labels: Vec<String> = CLASSES
        .iter()
        .cycle()
        .take(ROWS)
        .map(|s| s.to_string())
        .collect();
    labels[7] = "zebra".into();
    env.write("bad_labels.txt", &(labels.join("\n") + "\n"));
    let exp = env.write(
        "label.toml",
        &EXPERIMENT
            .replace("name = \"zs\"", "name = \"label\"")
            .replace("labels = \"labels.txt\"", "labels = \"bad_labels.txt\""),
    );
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    for part in ["label `zebra`", "row 7 of `labels`", "`class_names`"] {
        assert!(shown.contains(part), "expected `{part}` in:\n{shown}");
    }

    write_npy(&env.path("wide.npy"), 5, 17, &[0.5; 85]);
    let exp = env.write(
        "wide.toml",
        &EXPERIMENT
            .replace("name = \"zs\"", "name = \"wide\"")
            .replace("path = \"classes.npy\"", "path = \"wide.npy\""),
    );
    let out = env.msae(&["run", exp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("`classes`") && shown.contains("17 columns but the SAE and `data` have 16"),
        "{shown}"
    );
}
