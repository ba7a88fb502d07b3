//! `bias` end to end. On data the test makes — rows built from 8 planted directions in 16
//! dimensions, the label `happy` exactly when the direction named `smile` is present — a TopK SAE
//! learns the directions, a `linear_probe` learns the label and a `name` step names the latents
//! after the planted directions: every number of the report then equals an independent float64
//! NumPy computation (`tests/oracles/bias_numpy.py`, which reads the model and probe files
//! itself), ablating `smile` moves the probability of `happy` far more than random latents of
//! its firing frequency while ablating `hat` does not, and the automatic selections find the
//! planted latents. On the real WordNet glosses, ablating the latents named after animals lowers
//! the probe's probability of `noun.animal` more than the control. Bad input is refused with the
//! parameter named.

use crate::common;

use std::collections::BTreeMap;

use common::{output_file, output_json, table_rows, text, write_npy, Env, Gauss};
use serde_json::Value;

const DIM: usize = 16;
/// The planted directions' names; `smile` decides the label, `glasses` the group.
const WORDS: [&str; 8] = [
    "smile", "hat", "glasses", "beard", "scarf", "tie", "earring", "mask",
];

/// Rows of the planted data: each direction present with probability 0.3 (at least one per row)
/// with a coefficient in [0.5, 1.5), plus a little noise. Returns the rows, their labels (`happy`
/// iff `smile` is present) and groups (`glasses` or `plain`).
fn planted_rows(g: &mut Gauss, dirs: &[Vec<f64>], rows: usize) -> (Vec<f32>, String, String) {
    let (mut x, mut labels, mut groups) = (Vec::new(), String::new(), String::new());
    for _ in 0..rows {
        let mut coef: Vec<f64> = (0..dirs.len())
            .map(|_| {
                if g.uniform() < 0.3 {
                    0.5 + g.uniform()
                } else {
                    0.0
                }
            })
            .collect();
        if coef.iter().all(|&c| c == 0.0) {
            let i = ((g.uniform() * dirs.len() as f64) as usize).min(dirs.len() - 1);
            coef[i] = 0.5 + g.uniform();
        }
        for j in 0..DIM {
            let v: f64 = dirs.iter().zip(&coef).map(|(d, c)| c * d[j]).sum();
            x.push((v + 0.03 * g.normal()) as f32);
        }
        labels.push_str(if coef[0] > 0.0 {
            "happy\n"
        } else {
            "neutral\n"
        });
        groups.push_str(if coef[2] > 0.0 {
            "glasses\n"
        } else {
            "plain\n"
        });
    }
    (x, labels, groups)
}

/// Writes the planted data: `train.npy` (2000 rows) and `eval.npy` (800) with `.labels.txt`,
/// `eval.groups.txt`, and the directions as a vocabulary, `dict.npy` with `dict.words.txt`.
fn write_planted(env: &Env) {
    let mut g = Gauss(77);
    let dirs: Vec<Vec<f64>> = (0..WORDS.len())
        .map(|_| {
            let v: Vec<f64> = (0..DIM).map(|_| g.normal()).collect();
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter().map(|a| a / n).collect()
        })
        .collect();
    for (split, rows) in [("train", 2000), ("eval", 800)] {
        let (x, labels, groups) = planted_rows(&mut g, &dirs, rows);
        write_npy(&env.path(&format!("{split}.npy")), rows, DIM, &x);
        env.write(&format!("{split}.labels.txt"), &labels);
        env.write(&format!("{split}.groups.txt"), &groups);
    }
    let dict: Vec<f32> = dirs.iter().flatten().map(|&v| v as f32).collect();
    write_npy(&env.path("dict.npy"), WORDS.len(), DIM, &dict);
    env.write("dict.words.txt", &(WORDS.join("\n") + "\n"));
}

/// The steps every planted experiment shares: imports, the SAE, the probe and the names.
const PLANTED_STEPS: &str = r#"
[steps.train]
kind = "import"
path = "train.npy"
labels = "train.labels.txt"

[steps.eval]
kind = "import"
path = "eval.npy"
labels = "eval.labels.txt"

[steps.attr]
kind = "import"
path = "eval.npy"
labels = "eval.groups.txt"

[steps.dict]
kind = "import"
path = "dict.npy"
texts = "dict.words.txt"

[steps.sae]
kind = "train"
data = "train"
arch = "topk"
k = 3
n_latents = 16
epochs = 10
batch_size = 64
lr = 0.01
schedule = "constant"

[steps.probe]
kind = "linear_probe"
sae = "sae"
train = "train"
train_labels = "train.labels"
eval = "eval"
eval_labels = "eval.labels"
max_epochs = 40
batch_size = 64
lr = 0.01

[steps.names]
kind = "name"
sae = "sae"
vocab = "dict"
words = "dict.texts"
"#;

const PLANTED_BIAS: &str = r#"
[steps.bias]
kind = "bias"
sae = "sae"
probe = "probe.probe"
data = "eval"
labels = "eval.labels"
groups = "attr.labels"
names = "names.names"
concepts = ["smile", "hat"]
scales = [0.0, 1.0, 2.0]
controls = 6
bootstrap = 400

[steps.by_probe]
kind = "bias"
sae = "sae"
probe = "probe.probe"
data = "eval"
labels = "eval.labels"
names = "names.names"
select = "probe"
target = "happy"
n_concepts = 2
bootstrap = 50

[steps.by_group]
kind = "bias"
sae = "sae"
probe = "probe.probe"
data = "eval"
labels = "eval.labels"
groups = "attr.labels"
names = "names.names"
select = "group"
target = "glasses"
n_concepts = 1
bootstrap = 50
"#;

/// Runs the planted experiment; returns its folder and file.
fn run_planted() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    write_planted(&env);
    let exp = env.write(
        "planted.toml",
        &format!("[experiment]\nname = \"planted\"\n{PLANTED_STEPS}{PLANTED_BIAS}"),
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    (env, exp)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The entry of one concept (by name) and scale in a report.
fn effect<'a>(report: &'a Value, name: &str, scale: f64) -> &'a Value {
    let concept = report["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no concept {name} in {report}"));
    concept["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| num(&e["scale"]) == scale)
        .unwrap_or_else(|| panic!("no scale {scale} for {name}"))
}

fn close(got: &Value, want: &Value, what: &str) {
    let (a, b) = (num(got), num(want));
    assert!(
        (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
        "{what}: msae {a} vs NumPy {b}"
    );
}

/// Compares the point estimates of one population (`concept` or `control` side).
fn compare_estimates(got: &Value, want: &Value, classes: &[Value], what: &str) {
    for c in classes {
        let c = c.as_str().unwrap();
        close(
            &got["probability_change"][c]["mean"],
            &want["probability_change"][c],
            &format!("{what} Δp({c})"),
        );
    }
    close(
        &got["flip_rate"]["mean"],
        &want["flip_rate"],
        &format!("{what} flip rate"),
    );
    close(
        &got["accuracy_change"]["mean"],
        &want["accuracy_change"],
        &format!("{what} accuracy change"),
    );
}

#[test]
fn every_estimate_matches_a_float64_numpy_oracle() {
    let Some(python) = common::test_python() else {
        return;
    };
    let (env, _) = run_planted();
    let report = output_json(&env, "planted", "bias", "report");
    let out = env.path("oracle.json");
    common::run_python(
        &python,
        &[
            common::oracle("bias_numpy.py").as_os_str(),
            output_file(&env, "planted", "sae", "model").as_os_str(),
            output_file(&env, "planted", "probe", "probe").as_os_str(),
            env.path("eval.npy").as_os_str(),
            env.path("eval.labels.txt").as_os_str(),
            env.path("eval.groups.txt").as_os_str(),
            output_file(&env, "planted", "bias", "report").as_os_str(),
            out.as_os_str(),
        ],
    );
    let want: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    // Far enough from ties that float32 (relative error ~1e-7 on pre-activations and codes of
    // order 1) cannot change a top-k selection or a prediction.
    let (code_gap, logit_gap) = (num(&want["min_code_gap"]), num(&want["min_logit_gap"]));
    assert!(
        code_gap > 1e-5,
        "a near tie in the top-k selection ({code_gap})"
    );
    assert!(
        logit_gap > 1e-5,
        "a near tie between two logits ({logit_gap})"
    );
    let classes = report["classes"].as_array().unwrap().clone();
    assert_eq!(Value::Array(classes.clone()), want["classes"]);
    assert_eq!(report["groups"], serde_json::json!(["glasses", "plain"]));
    // The baseline, over all rows and per group.
    let populations = ["all", "glasses", "plain"];
    for p in populations {
        let got = if p == "all" {
            &report["baseline"]["all"]
        } else {
            &report["baseline"]["groups"][p]
        };
        let w = &want["baseline"][p];
        assert_eq!(got["rows"], w["rows"], "{p}");
        close(&got["accuracy"], &w["accuracy"], &format!("{p} accuracy"));
        for c in &classes {
            let c = c.as_str().unwrap();
            close(
                &got["probability"][c],
                &w["probability"][c],
                &format!("{p} p({c})"),
            );
        }
    }
    let mut compared = 0;
    for (concept, w) in report["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["concepts"].as_array().unwrap())
    {
        let name = concept["name"].as_str().unwrap();
        let latent = concept["latent"].to_string();
        close(
            &concept["frequency"],
            &want["frequency"][&latent],
            &format!("{name} frequency"),
        );
        for c in concept["controls"].as_array().unwrap() {
            close(
                &c["frequency"],
                &want["frequency"][c["latent"].to_string()],
                "control frequency",
            );
        }
        for (e, we) in concept["effects"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w["effects"].as_array().unwrap())
        {
            let scale = num(&e["scale"]);
            for p in populations {
                let got = if p == "all" {
                    &e["all"]
                } else {
                    &e["groups"][p]
                };
                let wp = &we["populations"][p];
                for side in ["concept", "control"] {
                    compare_estimates(
                        &got[side],
                        &wp[side],
                        &classes,
                        &format!("{name} × {scale} {p} {side}"),
                    );
                    compared += 1;
                }
                // The difference is the concept's estimate minus the control's.
                let d = num(&got["difference"]["flip_rate"]["mean"]);
                let dd = num(&got["concept"]["flip_rate"]["mean"])
                    - num(&got["control"]["flip_rate"]["mean"]);
                assert!((d - dd).abs() < 1e-12, "{name} × {scale} {p} difference");
            }
        }
    }
    assert_eq!(compared, 2 * 3 * 3 * 2);
    let smile = effect(&report, "smile", 0.0);
    eprintln!(
        "planted: NumPy agrees on {compared} estimate sets (2 concepts × 3 scales × 3 populations × concept/control); smallest top-k gap {code_gap:.2e}, logit gap {logit_gap:.2e}; ablating smile: Δp(happy) {:.4}",
        num(&smile["all"]["concept"]["probability_change"]["happy"]["mean"])
    );
}

#[test]
fn the_planted_cause_matters_beyond_chance_and_a_bystander_does_not() {
    let (env, exp) = run_planted();
    let names = output_json(&env, "planted", "names", "names");
    let report = output_json(&env, "planted", "bias", "report");
    // The SAE learned the planted directions the test names concepts by.
    for c in report["concepts"].as_array().unwrap() {
        let latent = c["latent"].as_u64().unwrap() as usize;
        let cos = num(&names[latent]["score"]);
        assert!(
            cos > 0.9,
            "{} is latent {latent} at cosine {cos}",
            c["name"]
        );
    }
    let probe_accuracy = num(&report["baseline"]["all"]["accuracy"]);
    assert!(
        probe_accuracy > 0.9,
        "the probe learned the label: {probe_accuracy}"
    );

    let happy = |e: &Value, side: &str| e["all"][side]["probability_change"]["happy"].clone();
    let iv = |v: &Value| (num(&v["low"]), num(&v["mean"]), num(&v["high"]));
    let smile = effect(&report, "smile", 0.0);
    let (c_low, c_mean, c_high) = iv(&happy(smile, "concept"));
    let (k_low, k_mean, k_high) = iv(&happy(smile, "control"));
    eprintln!(
        "ablating smile: Δp(happy) {c_mean:.4} [{c_low:.4}, {c_high:.4}], control {k_mean:.4} [{k_low:.4}, {k_high:.4}], flip rate {:.4}, accuracy change {:.4}",
        num(&smile["all"]["concept"]["flip_rate"]["mean"]),
        num(&smile["all"]["concept"]["accuracy_change"]["mean"])
    );
    assert!(c_low <= c_mean && c_mean <= c_high);
    assert!(
        c_mean < -0.15,
        "ablating the cause must lower p(happy) strongly: {c_mean}"
    );
    assert!(
        c_high < k_low,
        "the intervals overlap: concept [{c_low}, {c_high}], control [{k_low}, {k_high}]"
    );
    let diff = iv(&smile["all"]["difference"]["probability_change"]["happy"]);
    assert!(diff.2 < 0.0, "concept − control {diff:?}");
    // Only rows with a smile can lose it: in the `happy` rows, the flips.
    assert!(num(&smile["all"]["concept"]["flip_rate"]["mean"]) > 0.15);
    assert!(num(&smile["all"]["concept"]["accuracy_change"]["mean"]) < -0.15);

    let hat = effect(&report, "hat", 0.0);
    let (h_low, h_mean, h_high) = iv(&happy(hat, "concept"));
    let (hk_low, _, hk_high) = iv(&happy(hat, "control"));
    eprintln!("ablating hat: Δp(happy) {h_mean:.4} [{h_low:.4}, {h_high:.4}], control [{hk_low:.4}, {hk_high:.4}]");
    assert!(
        h_mean.abs() < 0.2 * c_mean.abs(),
        "the bystander moves p(happy) by {h_mean}"
    );
    assert!(
        h_low <= hk_high && hk_low <= h_high,
        "the bystander's interval must overlap its control's"
    );

    // Doubling the cause raises p(happy); a factor of 1 changes nothing at all.
    let doubled = num(&happy(effect(&report, "smile", 2.0), "concept")["mean"]);
    assert!(doubled > 0.0, "{doubled}");
    for name in ["smile", "hat"] {
        let e = &effect(&report, name, 1.0)["all"];
        for side in ["concept", "control", "difference"] {
            for v in [
                &e[side]["flip_rate"],
                &e[side]["probability_change"]["happy"],
            ] {
                assert_eq!(iv(v), (0.0, 0.0, 0.0), "{name} × 1 {side}");
            }
        }
    }
    // Per group: the numbers exist for both groups and their rows add up.
    let rows: u64 = ["glasses", "plain"]
        .iter()
        .map(|g| smile["groups"][g]["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 800);
    // Controls are frequency-matched latents other than the concepts.
    let concepts: Vec<u64> = report["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["latent"].as_u64().unwrap())
        .collect();
    for c in report["concepts"].as_array().unwrap() {
        let controls = c["controls"].as_array().unwrap();
        assert_eq!(controls.len(), 6);
        for k in controls {
            assert!(!concepts.contains(&k["latent"].as_u64().unwrap()));
            assert!(num(&k["frequency"]) > 0.0);
        }
    }

    // The automatic selections find the planted latents.
    let smile_latent = report["concepts"][0]["latent"].clone();
    let by_probe = output_json(&env, "planted", "by_probe", "report");
    assert_eq!(
        by_probe["concepts"][0]["latent"], smile_latent,
        "{}",
        by_probe["concepts"]
    );
    assert_eq!(by_probe["selection"]["mode"], "probe");
    let by_group = output_json(&env, "planted", "by_group", "report");
    assert_eq!(
        by_group["concepts"][0]["name"], "glasses",
        "{}",
        by_group["concepts"]
    );
    eprintln!(
        "select = probe (target happy): {} (cosine {:.3}); select = group (target glasses): {} (correlation {:.3})",
        by_probe["concepts"][0]["name"],
        num(&by_probe["concepts"][0]["score"]),
        by_group["concepts"][0]["name"],
        num(&by_group["concepts"][0]["score"])
    );

    // The table shows the largest effect.
    let rows = table_rows(&env, &exp, "bias");
    let row = rows
        .iter()
        .find(|r| r.to_string().contains("\"bias\""))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row["largest_shift_concept"], "smile", "{row}");
    assert_eq!(row["concepts"], 2, "{row}");
    assert!(row["flips_beyond_control"].as_u64().unwrap() >= 1, "{row}");

    // The same experiment in a fresh store on one thread: every step runs again and the report
    // has the same bytes (seeded draws, thread-count independent arithmetic).
    let fresh = Env::new();
    write_planted(&fresh);
    let exp1 = fresh.write("planted.toml", &std::fs::read_to_string(&exp).unwrap());
    let again = fresh.run_json_with(&["--threads", "1"], &exp1);
    assert_eq!(again["failed"], 0, "{again}");
    assert_eq!(
        std::fs::read(output_file(&env, "planted", "bias", "report")).unwrap(),
        std::fs::read(output_file(&fresh, "planted", "bias", "report")).unwrap()
    );
}

/// Animal words: a latent whose `name` is one of these is an animal concept.
const ANIMALS: &[&str] = &[
    "animal",
    "animals",
    "mammal",
    "mammals",
    "bird",
    "birds",
    "fish",
    "fishes",
    "insect",
    "insects",
    "reptile",
    "reptiles",
    "amphibian",
    "snake",
    "snakes",
    "lizard",
    "frog",
    "toad",
    "turtle",
    "dog",
    "dogs",
    "cat",
    "cats",
    "horse",
    "horses",
    "cow",
    "cattle",
    "sheep",
    "goat",
    "pig",
    "deer",
    "bear",
    "wolf",
    "fox",
    "lion",
    "tiger",
    "monkey",
    "ape",
    "rodent",
    "rat",
    "mouse",
    "rabbit",
    "squirrel",
    "bat",
    "whale",
    "dolphin",
    "shark",
    "seal",
    "duck",
    "goose",
    "chicken",
    "hen",
    "owl",
    "eagle",
    "hawk",
    "parrot",
    "sparrow",
    "crow",
    "beetle",
    "butterfly",
    "moth",
    "bee",
    "ant",
    "spider",
    "worm",
    "crab",
    "shellfish",
    "mollusk",
    "snail",
    "octopus",
    "antelope",
    "elephant",
    "giraffe",
    "zebra",
    "camel",
    "kangaroo",
    "marsupial",
    "primate",
    "canine",
    "feline",
    "bovine",
    "equine",
    "avian",
    "ungulate",
    "herbivore",
    "carnivore",
    "predator",
    "prey",
    "beast",
    "creature",
    "wildlife",
    "fauna",
    "species",
    "breed",
    "livestock",
    "poultry",
    "salmon",
    "trout",
    "songbird",
    "crustacean",
    "invertebrate",
    "vertebrate",
    "larva",
    "parasite",
    "bug",
    "fly",
    "mosquito",
    "flea",
    "tick",
    "lobster",
    "shrimp",
    "oyster",
    "clam",
    "jellyfish",
    "coral",
    "eel",
    "mole",
    "otter",
    "weasel",
    "badger",
    "raccoon",
    "hedgehog",
    "porcupine",
    "beaver",
    "hamster",
    "gerbil",
    "guinea pig",
    "pony",
    "donkey",
    "mule",
    "ox",
    "bull",
    "buffalo",
    "bison",
    "moose",
    "elk",
    "reindeer",
    "caribou",
    "gorilla",
    "chimpanzee",
    "baboon",
    "lemur",
    "sloth",
    "armadillo",
    "anteater",
    "hyena",
    "leopard",
    "cheetah",
    "jaguar",
    "panther",
    "cougar",
    "lynx",
    "puma",
    "dinosaur",
    "crocodile",
    "alligator",
    "iguana",
    "python",
    "cobra",
    "viper",
    "pigeon",
    "dove",
    "swan",
    "heron",
    "stork",
    "pelican",
    "penguin",
    "ostrich",
    "falcon",
    "vulture",
    "woodpecker",
    "hummingbird",
    "finch",
    "robin",
    "wren",
    "warbler",
    "gull",
    "flamingo",
    "turkey",
    "quail",
    "pheasant",
    "grasshopper",
    "cricket",
    "locust",
    "cockroach",
    "termite",
    "wasp",
    "hornet",
    "dragonfly",
    "caterpillar",
    "scorpion",
    "centipede",
    "slug",
    "squid",
    "starfish",
    "sponge",
    "zoo",
];

#[test]
fn ablating_animal_concepts_lowers_the_animal_class_on_wordnet_glosses() {
    let files = [
        "wordnet_lexname_train_14670_384.npy",
        "wordnet_lexname_train_14670.labels.txt",
        "wordnet_lexname_test_3667_384.npy",
        "wordnet_lexname_test_3667.labels.txt",
        "disect_minilm_20000_384.npy",
        "disect_minilm_20000.texts.txt",
    ];
    let Some(p) = files
        .iter()
        .map(|f| common::shared_data(f))
        .collect::<Option<Vec<_>>>()
    else {
        eprintln!(
            "skipping: the WordNet glosses or the disect vocabulary are not in ../shared/data"
        );
        return;
    };
    let started = std::time::Instant::now();
    let env = Env::new();
    // The groups: whether a test gloss is an animal's.
    let kind: String = std::fs::read_to_string(&p[3])
        .unwrap()
        .lines()
        .map(|l| {
            if l == "noun.animal" {
                "animal\n"
            } else {
                "other\n"
            }
        })
        .collect();
    env.write("kind.txt", &kind);
    let base = format!(
        r#"[experiment]
name = "wordnet"
seed = 3

[steps.train]
kind = "import"
path = "{}"
labels = "{}"

[steps.test]
kind = "import"
path = "{}"
labels = "{}"

[steps.kind]
kind = "import"
path = "{}"
labels = "kind.txt"

[steps.vocab]
kind = "import"
path = "{}"
texts = "{}"

[steps.sae]
kind = "train"
data = "train"
arch = "topk"
k = 32
expansion = 4.0
epochs = 3
batch_size = 256
lr = 0.001

[steps.probe]
kind = "linear_probe"
sae = "sae"
train = "train"
train_labels = "train.labels"
eval = "test"
eval_labels = "test.labels"
max_epochs = 8
lr = 0.01

[steps.names]
kind = "name"
sae = "sae"
vocab = "vocab"
words = "vocab.texts"
"#,
        p[0].display(),
        p[1].display(),
        p[2].display(),
        p[3].display(),
        p[2].display(),
        p[4].display(),
        p[5].display()
    );
    let exp = env.write("wordnet.toml", &base);
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    // The concepts: every latent whose name is an animal word (one latent per word: a name
    // given twice resolves to the latent closest to it).
    let names = output_json(&env, "wordnet", "names", "names");
    let mut animal: BTreeMap<String, usize> = BTreeMap::new();
    for (j, n) in names.as_array().unwrap().iter().enumerate() {
        let word = n["word"].as_str().unwrap().to_lowercase();
        if ANIMALS.contains(&word.as_str()) {
            animal.entry(word).or_insert(j);
        }
    }
    assert!(
        animal.len() >= 3,
        "too few animal-named latents to test: {animal:?}"
    );
    let list: Vec<String> = animal.keys().map(|w| format!("\"{w}\"")).collect();
    let exp = env.write(
        "wordnet.toml",
        &format!(
            r#"{base}
[steps.bias]
kind = "bias"
sae = "sae"
probe = "probe.probe"
data = "test"
labels = "test.labels"
groups = "kind.labels"
names = "names.names"
concepts = [{}]
controls = 20
bootstrap = 1000

[steps.by_probe]
kind = "bias"
sae = "sae"
probe = "probe.probe"
data = "test"
labels = "test.labels"
groups = "kind.labels"
names = "names.names"
select = "probe"
target = "noun.animal"
n_concepts = 8
bootstrap = 500
"#,
            list.join(", ")
        ),
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let report = output_json(&env, "wordnet", "bias", "report");
    let accuracy = num(&report["baseline"]["all"]["accuracy"]);
    let p_animal = num(&report["baseline"]["all"]["probability"]["noun.animal"]);
    let in_animals = &report["baseline"]["groups"]["animal"];
    println!(
        "wordnet bias (3667 test glosses, 40 lexnames, TopK k 32 × 4, probe accuracy {accuracy:.4}, mean p(noun.animal) {p_animal:.4}; in the {} animal glosses accuracy {:.4}, mean p(noun.animal) {:.4}); ablating each animal-named latent, Δp(noun.animal) over all glosses with 95 % interval vs 20 frequency-matched random latents, then over the animal glosses:",
        in_animals["rows"],
        num(&in_animals["accuracy"]),
        num(&in_animals["probability"]["noun.animal"])
    );
    let iv = |v: &Value| (num(&v["low"]), num(&v["mean"]), num(&v["high"]));
    let mut beyond = 0;
    let mut below = 0;
    let concepts = report["concepts"].as_array().unwrap();
    for c in concepts {
        let e = &c["effects"][0]["all"];
        let (lo, m, hi) = iv(&e["concept"]["probability_change"]["noun.animal"]);
        let (klo, km, khi) = iv(&e["control"]["probability_change"]["noun.animal"]);
        let flip = num(&e["concept"]["flip_rate"]["mean"]);
        let a = &c["effects"][0]["groups"]["animal"];
        let (alo, am, ahi) = iv(&a["concept"]["probability_change"]["noun.animal"]);
        let (aklo, akm, akhi) = iv(&a["control"]["probability_change"]["noun.animal"]);
        println!(
            "  {:<10} #{:<4} fires on {:.4}: Δp {m:+.5} [{lo:+.5}, {hi:+.5}], control {km:+.5} [{klo:+.5}, {khi:+.5}], flip rate {flip:.4}; animal glosses: Δp {am:+.4} [{alo:+.4}, {ahi:+.4}], control {akm:+.4} [{aklo:+.4}, {akhi:+.4}]",
            c["name"].as_str().unwrap(),
            c["latent"],
            num(&c["frequency"])
        );
        if hi < klo {
            beyond += 1;
        }
        if m < 0.0 {
            below += 1;
        }
    }
    println!(
        "  {beyond} of {} concepts lower p(noun.animal) beyond their control (intervals apart); {below} lower it at all; {:.1} s",
        concepts.len(),
        started.elapsed().as_secs_f64()
    );
    // The latents the probe's noun.animal weight points at, and what ablating them does in the
    // animal glosses.
    let by_probe = output_json(&env, "wordnet", "by_probe", "report");
    println!("select = \"probe\", target noun.animal (cosine with the class's weight minus the mean weight); Δp(noun.animal) in the animal glosses:");
    let mut probe_beyond = 0;
    let chosen = by_probe["concepts"].as_array().unwrap();
    for c in chosen {
        let a = &c["effects"][0]["groups"]["animal"];
        let (lo, m, hi) = iv(&a["concept"]["probability_change"]["noun.animal"]);
        let (klo, km, khi) = iv(&a["control"]["probability_change"]["noun.animal"]);
        println!(
            "  {:<10} #{:<4} cosine {:.3}, fires on {:.4}: Δp {m:+.4} [{lo:+.4}, {hi:+.4}], control {km:+.4} [{klo:+.4}, {khi:+.4}]",
            c["name"].as_str().unwrap(),
            c["latent"],
            num(&c["score"]),
            num(&c["frequency"])
        );
        if hi < klo {
            probe_beyond += 1;
        }
    }
    assert!(
        2 * probe_beyond >= chosen.len(),
        "the latents aligned with noun.animal's weight must lower it beyond chance: {probe_beyond} of {}",
        chosen.len()
    );
    // The strongest animal concept's interval lies entirely below its control's.
    let strongest = concepts
        .iter()
        .min_by(|a, b| {
            let v = |c: &Value| {
                num(&c["effects"][0]["all"]["concept"]["probability_change"]["noun.animal"]["mean"])
            };
            v(a).total_cmp(&v(b))
        })
        .unwrap();
    let e = &strongest["effects"][0]["all"];
    let (_, m, hi) = iv(&e["concept"]["probability_change"]["noun.animal"]);
    let (klo, _, _) = iv(&e["control"]["probability_change"]["noun.animal"]);
    assert!(m < 0.0 && hi < klo, "{}: {e}", strongest["name"]);
    assert!(
        2 * beyond >= concepts.len(),
        "most animal concepts must lower p(noun.animal) beyond their controls: {beyond} of {}",
        concepts.len()
    );
}

#[test]
fn a_foreign_probe_an_unknown_concept_and_an_unknown_label_are_refused() {
    let env = Env::new();
    write_planted(&env);
    // Data of another width, with an SAE and a probe of their own.
    let mut g = Gauss(5);
    let other: Vec<f32> = (0..200 * 12).map(|_| g.normal() as f32).collect();
    write_npy(&env.path("other.npy"), 200, 12, &other);
    env.write(
        "other.labels.txt",
        &(0..200)
            .map(|r| if r % 2 == 0 { "a\n" } else { "b\n" })
            .collect::<String>(),
    );
    let mut labels: Vec<String> = std::fs::read_to_string(env.path("eval.labels.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    labels[5] = "surprised".into();
    env.write("bad.labels.txt", &(labels.join("\n") + "\n"));
    let bias = |name: &str, extra: &str| {
        format!(
            "\n[steps.{name}]\nkind = \"bias\"\nsae = \"sae\"\nprobe = \"probe.probe\"\ndata = \"eval\"\nlabels = \"eval.labels\"\nnames = \"names.names\"\nbootstrap = 10\n{extra}\n"
        )
    };
    let steps = [
        r#"
[steps.other]
kind = "import"
path = "other.npy"
labels = "other.labels.txt"

[steps.sae_other]
kind = "train"
data = "other"
arch = "topk"
k = 2
n_latents = 8
epochs = 1
batch_size = 50

[steps.probe_other]
kind = "linear_probe"
sae = "sae_other"
train = "other"
train_labels = "other.labels"
eval = "other"
eval_labels = "other.labels"
max_epochs = 2

[steps.bad]
kind = "import"
path = "eval.npy"
labels = "bad.labels.txt"
"#
        .to_string(),
        bias("foreign", "concepts = [\"smile\"]")
            .replace("probe = \"probe.probe\"", "probe = \"probe_other.probe\""),
        bias("unknown", "concepts = [\"smiel\"]"),
        bias("label", "concepts = [\"0\"]")
            .replace("labels = \"eval.labels\"", "labels = \"bad.labels\""),
        bias("neither", ""),
        bias(
            "both",
            "concepts = [\"smile\"]\nselect = \"probe\"\ntarget = \"happy\"",
        ),
        bias("no_class", "select = \"probe\"\ntarget = \"sad\""),
        bias("stray_target", "concepts = [\"smile\"]\ntarget = \"happy\""),
    ];
    let exp = env.write(
        "errors.toml",
        &format!(
            "[experiment]\nname = \"errors\"\n{PLANTED_STEPS}{}",
            steps.concat()
        ),
    );
    let out = env.msae(&["run", "--keep-going", exp.to_str().unwrap()]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    for part in [
        // The probe of 12-dimensional data against 16-dimensional data and SAE.
        "`probe` (from probe_other) classifies rows of 12 dimensions but `data` (from eval) and the SAE have 16: a probe from other data",
        // A name no latent carries, with the near miss.
        "`concepts`: no latent of this SAE is named `smiel`",
        "did you mean `smile`?",
        // A label the probe has no class for.
        "label `surprised` (row 5 of `labels`, from bad)",
        "is not among the probe's 2 classes",
        // No concepts, or two ways of choosing them.
        "`bias` needs concepts",
        "`concepts` and `select = \"probe\"` both choose the concepts",
        "`target` = `sad` is not among the probe's classes",
        "`target` = `happy` only chooses concepts with `select`",
    ] {
        assert!(shown.contains(part), "expected `{part}` in:\n{shown}");
    }
    assert!(!shown.contains("panicked"), "{shown}");
}
