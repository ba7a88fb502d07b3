//! `import`: both matrix formats, checks of the data, and the real shared embeddings.

use crate::common;

use common::Env;

fn headerless(env: &Env, name: &str, rows: usize, cols: usize, values: &[f32]) {
    assert_eq!(values.len(), rows * cols);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(env.path(name), bytes).unwrap();
}

#[test]
fn npy_and_headerless_files_with_the_same_numbers_give_the_same_object() {
    let env = Env::new();
    let values: Vec<f32> = (0..6 * 4).map(|i| i as f32 * 0.25 - 2.0).collect();
    common::write_npy(&env.path("m.npy"), 6, 4, &values);
    headerless(&env, "ref_model_-1_text_6_4.npy", 6, 4, &values);
    env.write("texts.txt", "a\nb\nc\n\nd e\nf");
    let exp = env.write(
        "i.toml",
        "[steps.a]\nkind = \"import\"\npath = \"m.npy\"\ntexts = \"texts.txt\"\ncols = 4\n\n[steps.b]\nkind = \"import\"\npath = \"ref_model_-1_text_6_4.npy\"\n",
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["run"], 2, "{summary}");
    // One JSON document: an object keyed by step kind.
    let all = env.msae_json(&["table", exp.to_str().unwrap(), "--format", "json"]);
    let rows = &all["import"];
    assert_eq!(all.as_object().unwrap().len(), 1, "{all}");
    assert_eq!(rows[0]["format"], "npy");
    assert_eq!(rows[1]["format"], "headerless");
    assert_eq!(rows[0]["rows"], 6);
    // Same numbers → the same content-addressed matrix object (stored once), plus the texts.
    assert_eq!(common::object_files(&env).len(), 2);
    // The rows keep their texts: `texts` is an output of the import that has them, one stripped
    // entry per row (the empty one included), and absent from the import without them.
    assert_eq!(
        common::output_lines(&env, "i", "a", "texts"),
        ["a", "b", "c", "", "d e", "f"]
    );
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let outputs = |instance: &str| -> Vec<String> {
        let record = store.index.latest("i", instance).unwrap().unwrap();
        record.outputs.keys().cloned().collect()
    };
    assert_eq!(outputs("a"), ["matrix", "texts"]);
    assert_eq!(outputs("b"), ["matrix"]);
}

fn expect_failure(env: &Env, exp_text: &str, needle: &str) {
    let exp = env.write("bad.toml", exp_text);
    let text = common::fails_with(env, &["run", exp.to_str().unwrap()], &[needle]);
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn bad_data_gets_clear_errors() {
    let env = Env::new();
    let mut values: Vec<f32> = vec![0.5; 5 * 3];
    values[7] = f32::NAN;
    common::write_npy(&env.path("nan.npy"), 5, 3, &values);
    expect_failure(
        &env,
        "[steps.x]\nkind = \"import\"\npath = \"nan.npy\"\n",
        "contains 1 non-finite value(s) (NaN or infinity); the first is NaN at row 2, column 1",
    );

    common::write_npy(&env.path("ok.npy"), 5, 3, &[0.5; 15]);
    expect_failure(
        &env,
        "[steps.x]\nkind = \"import\"\npath = \"ok.npy\"\ncols = 384\n",
        "has 3 columns, but `cols = 384` was expected",
    );

    env.write("three.txt", "a\nb\nc\n");
    expect_failure(
        &env,
        "[steps.x]\nkind = \"import\"\npath = \"ok.npy\"\ntexts = \"three.txt\"\n",
        "has 3 lines but the matrix has 5 rows",
    );

    std::fs::write(env.path("short_10_4.npy"), [0u8; 100]).unwrap();
    expect_failure(
        &env,
        "[steps.x]\nkind = \"import\"\npath = \"short_10_4.npy\"\n",
        "size does not match its shape: 10 rows × 4 columns",
    );

    std::fs::write(env.path("noshape.npy"), [0u8; 16]).unwrap();
    expect_failure(
        &env,
        "[steps.x]\nkind = \"import\"\npath = \"noshape.npy\"\n",
        "its shape is unknown",
    );

    expect_failure(
        &env,
        "[steps.x]\nkind = \"import\"\npath = \"nowhere.npy\"\n",
        "does not exist",
    );
}

/// Whether two paths name one file (one inode on one device).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn read_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
}

#[test]
fn a_read_only_npy_file_is_linked_into_the_store_and_others_are_copied() {
    let env = Env::new();
    let values: Vec<f32> = (0..40 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
    common::write_npy(&env.path("frozen.npy"), 40, 8, &values);
    read_only(&env.path("frozen.npy"));
    common::write_npy(&env.path("open.npy"), 40, 8, &values);
    // The same numbers under another header (`=f4`): converted, not linked.
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    common::write_npy_array(&env.path("native.npy"), "=f4", &[40, 8], &bytes);
    read_only(&env.path("native.npy"));
    let mut bad = values.clone();
    bad[13] = f32::INFINITY;
    common::write_npy(&env.path("frozen_bad.npy"), 40, 8, &bad);
    read_only(&env.path("frozen_bad.npy"));
    let exp = env.write(
        "i.toml",
        "[steps.frozen]\nkind = \"import\"\npath = \"frozen.npy\"\n\n[steps.open]\nkind = \"import\"\npath = \"open.npy\"\n\n[steps.native]\nkind = \"import\"\npath = \"native.npy\"\n",
    );
    assert_eq!(env.run_json(&exp)["failed"], 0);
    let stored = |instance: &str| common::output_file(&env, "i", instance, "matrix");
    // All three hold the same bytes, so the store keeps one object: the read-only file itself.
    assert_eq!(stored("frozen"), stored("open"));
    assert_eq!(stored("frozen"), stored("native"));
    assert!(same_file(&stored("frozen"), &env.path("frozen.npy")));
    assert!(!same_file(&stored("frozen"), &env.path("open.npy")));
    assert_eq!(
        std::fs::read(stored("frozen")).unwrap(),
        std::fs::read(env.path("open.npy")).unwrap()
    );
    let all = env.msae_json(&["table", exp.to_str().unwrap(), "--format", "json"]);
    for row in all["import"].as_array().unwrap() {
        assert_eq!(row["rows"], 40, "{row}");
        assert_eq!(row["mean_norm"], all["import"][0]["mean_norm"], "{row}");
    }

    // In a fresh store the writable file is copied, not linked, and the linked file is checked.
    let env2 = Env::new();
    std::fs::copy(env.path("open.npy"), env2.path("open.npy")).unwrap();
    let exp2 = env2.write(
        "j.toml",
        "[steps.open]\nkind = \"import\"\npath = \"open.npy\"\n",
    );
    assert_eq!(env2.run_json(&exp2)["failed"], 0);
    let copy = common::output_file(&env2, "j", "open", "matrix");
    assert!(!same_file(&copy, &env2.path("open.npy")));
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(env2.path("open.npy")).unwrap()
    );
    expect_failure(
        &env,
        "[steps.x]\nkind = \"import\"\npath = \"frozen_bad.npy\"\n",
        "contains 1 non-finite value(s) (NaN or infinity); the first is inf at row 1, column 5",
    );
    assert_eq!(
        std::fs::read(env.path("frozen_bad.npy")).unwrap().len(),
        128 + 40 * 8 * 4
    );
}

#[test]
fn real_shared_embeddings_import_in_both_formats() {
    let (Some(npy), Some(raw), Some(texts)) = (
        common::shared_data("mscoco_minilm_12833_384.npy"),
        common::shared_data("mscoco_all-MiniLM-L6-v2_-1_text_1000_384.npy"),
        common::shared_data("mscoco_minilm_12833.texts.txt"),
    ) else {
        return;
    };
    let env = Env::new();
    let exp = env.write(
        "real.toml",
        &format!(
            "[steps.coco]\nkind = \"import\"\npath = \"{}\"\ntexts = \"{}\"\ncols = 384\n\n[steps.head]\nkind = \"import\"\npath = \"{}\"\n",
            npy.display(),
            texts.display(),
            raw.display()
        ),
    );
    env.run_json(&exp);
    let all = env.msae_json(&["table", exp.to_str().unwrap(), "--format", "json"]);
    let rows = &all["import"];
    assert_eq!(rows[0]["rows"], 12833);
    assert_eq!(rows[1]["rows"], 1000);
    assert_eq!(rows[1]["format"], "headerless");
    // The headerless file is the first 1,000 rows of the .npy one: same first-row norms ~1.
    let n0 = rows[0]["mean_norm"].as_f64().unwrap();
    let n1 = rows[1]["mean_norm"].as_f64().unwrap();
    assert!(
        (n0 - 1.0).abs() < 1e-3 && (n1 - 1.0).abs() < 1e-3,
        "{n0} {n1}"
    );
}
