//! The shipped experiment `experiments/interpret_wordnet.toml` end to end through the binary,
//! offline, on the real WordNet glosses and vocabulary embedded with all-MiniLM-L6-v2 (beside the
//! checkout) and the real MiniLM encoder (a test asset): one SAE, then every interpretation step.
//! The checks are the facts each step must show on real data, not numbers copied from a run.

use crate::common;

use common::{output_json, output_lines, with_status, Env};
use serde_json::Value;

/// The files of ../shared/data the experiment reads, in the order its steps name them.
const SHARED: &[&str] = &[
    "wordnet_lexname_train_14670_384.npy",
    "wordnet_lexname_train_14670.labels.txt",
    "wordnet_lexname_train_14670.texts.txt",
    "wordnet_lexname_test_3667_384.npy",
    "wordnet_lexname_test_3667.labels.txt",
    "wordnet_lexname_test_3667.texts.txt",
    "disect_minilm_20000_384.npy",
    "disect_minilm_20000.texts.txt",
];

const EXP: &str = "interpret_wordnet";

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_interpretation_experiment_runs_every_step_on_real_glosses() {
    let Some(shared) = SHARED
        .iter()
        .map(|f| common::shared_data(f))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let Some(minilm) = common::test_asset("all-MiniLM-L6-v2") else {
        return;
    };
    let started = std::time::Instant::now();
    let env = Env::new();
    // The shipped file as it is, beside what it reads relative to itself: the data folder of
    // ../shared, the category names of experiments/data and the linked model.
    let shipped = common::repo_path("experiments/interpret_wordnet.toml");
    let toml = std::fs::read_to_string(&shipped).unwrap();
    let shared_dir = shared[0].parent().unwrap().canonicalize().unwrap();
    let toml = toml.replace("../../shared/data/", &format!("{}/", shared_dir.display()));
    assert!(
        toml.lines()
            .all(|l| l.starts_with('#') || !l.contains("../")),
        "every path is rewritten"
    );
    let exp = env.write("experiments/interpret_wordnet.toml", &toml);
    let data = env.path("experiments/data");
    std::fs::create_dir_all(&data).unwrap();
    let lexnames = common::repo_path("experiments/data/wordnet_lexnames.txt");
    std::fs::copy(&lexnames, data.join("wordnet_lexnames.txt")).unwrap();
    std::fs::create_dir_all(env.path("experiments/models")).unwrap();
    std::os::unix::fs::symlink(&minilm, env.path("experiments/models/all-MiniLM-L6-v2")).unwrap();

    let summary = common::json_of(
        &env.offline()
            .args(["run", "--json", exp.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let ran = with_status(&summary, "ran");
    let steps = [
        "glosses",
        "held_out",
        "vocab",
        "categories",
        "sae",
        "names",
        "top",
        "concepts",
        "zero_shot",
        "search",
        "probe",
        "bias",
    ];
    assert_eq!(ran.len(), steps.len(), "one instance per step: {summary}");
    for step in steps {
        assert!(
            ran.iter().any(|r| r == step),
            "{step} did not run: {summary}"
        );
    }

    // The zero-shot classes are the 40 categories, named exactly as the glosses' labels.
    let categories = output_lines(&env, EXP, "categories", "texts");
    let labels = common::lines_of(&shared[4]);
    let mut distinct = labels.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(categories, distinct);

    // Every latent is named by a vocabulary word; some names are concepts.
    let names = output_json(&env, EXP, "names", "names");
    let n = names.as_array().unwrap().len();
    assert_eq!(n, 768, "expansion 2 of 384 dimensions");
    let vocabulary = common::lines_of(&shared[7]);
    assert!(names
        .as_array()
        .unwrap()
        .iter()
        .all(|w| vocabulary.contains(&w["word"].as_str().unwrap().to_string())));
    let concepts = output_json(&env, EXP, "concepts", "concepts");
    let concepts = concepts.as_array().unwrap();
    assert!(!concepts.is_empty() && concepts.len() <= n);
    for c in concepts {
        let latent = c["latent"].as_u64().unwrap() as usize;
        assert_eq!(c["name"], names[latent]["word"], "{c}");
        let f = num(&c["frequency"]);
        assert!((0.0..=1.0).contains(&f), "{c}");
    }

    // Top examples: every latent's strongest held-out glosses, in decreasing activation.
    let top = output_json(&env, EXP, "top", "latents");
    assert_eq!(top["rows"], 3667);
    let glosses = common::lines_of(&shared[5]);
    let per_latent = top["latents"].as_array().unwrap();
    assert_eq!(per_latent.len(), n);
    let firing = per_latent
        .iter()
        .find(|l| !l["top"].as_array().unwrap().is_empty())
        .expect("some latent fires on the held-out glosses");
    let examples = firing["top"].as_array().unwrap();
    assert!(examples.len() <= 8);
    for pair in examples.windows(2) {
        assert!(num(&pair[0]["value"]) >= num(&pair[1]["value"]), "{firing}");
    }
    let row = examples[0]["row"].as_u64().unwrap() as usize;
    assert_eq!(examples[0]["text"].as_str().unwrap(), glosses[row]);

    // Zero-shot: far above chance (1/40) on the embeddings themselves.
    let zs = output_json(&env, EXP, "zero_shot", "report");
    assert_eq!(
        (zs["classes"].as_u64(), zs["rows"].as_u64()),
        (Some(40), Some(3667))
    );
    assert!(
        num(&zs["original"]["accuracy"]) > 4.0 / 40.0,
        "{}",
        zs["original"]
    );

    // Concept search: 37 queries × (2 added latents × 3 strengths + 1 ablation); a strength of 0
    // is the query itself, so its nearest neighbours keep it whole.
    let search = output_json(&env, EXP, "search", "results");
    let edits = search["edits"].as_array().unwrap();
    assert_eq!(edits.len(), 3);
    for edit in edits {
        for result in edit["results"].as_array().unwrap() {
            let queries = result["queries"].as_array().unwrap();
            assert_eq!(queries.len(), 37);
            assert!(queries
                .iter()
                .all(|q| q["neighbours"].as_array().unwrap().len() == 5));
            if result["strength"] == 0.0 && edit["op"] == "add" {
                assert!((num(&result["kept"]) - 1.0).abs() < 1e-6, "{result}");
            }
        }
    }

    // The probe learns the 40 categories far above chance, and mostly keeps its answer on the
    // SAE's reconstructions.
    let probe = output_json(&env, EXP, "probe", "report");
    assert_eq!(probe["probe"]["classes"], 40);
    assert!(
        num(&probe["probe"]["best_macro_f1"]) > 0.2,
        "{}",
        probe["probe"]
    );
    let agreement = num(&probe["dense"]["eval"]["agreement_mean"]);
    assert!((0.5..=1.0).contains(&agreement), "{}", probe["dense"]);

    // Bias: four concepts chosen for noun.animal, each with its frequency-matched control, over
    // all glosses and per category.
    let bias = output_json(&env, EXP, "bias", "report");
    let chosen = bias["concepts"].as_array().unwrap();
    assert_eq!(chosen.len(), 4);
    for c in chosen {
        let controls = c["controls"].as_array().unwrap();
        assert_eq!(controls.len(), 5, "{c}");
        assert!(controls.iter().all(|k| k["latent"] != c["latent"]), "{c}");
        let effect = &c["effects"][0];
        for side in ["concept", "control"] {
            let change = &effect["all"][side]["probability_change"]["noun.animal"];
            assert!(num(&change["low"]) <= num(&change["high"]), "{c}");
        }
        assert!(
            effect["groups"]["noun.animal"]["control"].is_object(),
            "{c}"
        );
        assert_eq!(effect["groups"].as_object().unwrap().len(), 40);
    }
    println!(
        "interpret_wordnet: {} concepts of {n} latents; zero-shot accuracy {:.3}; {:.1} s",
        concepts.len(),
        num(&zs["original"]["accuracy"]),
        started.elapsed().as_secs_f64()
    );
}
