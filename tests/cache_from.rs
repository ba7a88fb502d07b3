//! `--cache-from`: a read-only upstream store (a team's shared results) serves every instance it
//! holds, objects verified by content hash on the way in; a damaged upstream object is reported
//! and its instance computed locally, never copied; nothing is ever written upstream.

use crate::common;

use std::path::Path;

use common::{output_file, text, with_status, Env, Synth};

const STEPS: &str = r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = [2, 4]
epochs = 1
batch_size = 64

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
"#;

fn experiment(env: &Env) -> String {
    let path = env.write(
        "team.toml",
        &(Synth::new(8, &[16], 256, 64).experiment("team") + STEPS),
    );
    path.to_str().unwrap().to_string()
}

fn table(env: &Env, exp: &str) -> String {
    let out = env.msae(&["table", exp, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_upstream_store_serves_verified_results_and_is_never_written() {
    let team = Env::new();
    let team_exp = experiment(&team);
    let first = team.run_json(Path::new(&team_exp));
    assert_eq!(with_status(&first, "ran").len(), 5, "{first}");
    // The team's table (reading its store as its owner), then the store is frozen.
    let team_table = table(&team, &team_exp);
    let upstream = team.cache();
    let upstream_arg = upstream.to_str().unwrap();
    let frozen = common::file_hashes(&upstream);

    // A colleague's empty store: everything comes from upstream, nothing runs.
    let mine = Env::new();
    let exp = experiment(&mine);
    let summary = mine.run_json_with(&["--cache-from", upstream_arg], Path::new(&exp));
    assert_eq!(
        with_status(&summary, "ran"),
        Vec::<String>::new(),
        "{summary}"
    );
    assert_eq!(with_status(&summary, "cached").len(), 5, "{summary}");
    assert_eq!(table(&mine, &exp), team_table.replace(&team_exp, &exp));
    // The copies are the local store's own: a later run without the upstream serves them too.
    let again = mine.run_json(Path::new(&exp));
    assert_eq!(with_status(&again, "cached").len(), 5, "{again}");
    assert_eq!(
        common::file_hashes(&upstream),
        frozen,
        "the upstream store was written"
    );

    // The environment variable works the same.
    let env_var = Env::new();
    let exp3 = experiment(&env_var);
    let out = env_var
        .command()
        .args(["run", "--json", &exp3])
        .env("MSAE_CACHE_FROM", upstream_arg)
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(with_status(&summary, "cached").len(), 5, "{summary}");

    // One flipped byte in the score report upstream: detected, not copied, computed here.
    let damaged = output_file(&team, "team", "score[k=4]", "scores");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&damaged, &bytes).unwrap();
    let frozen = common::file_hashes(&upstream);
    let fresh = Env::new();
    let exp4 = experiment(&fresh);
    let out = fresh
        .command()
        .args(["run", "--json", "--cache-from", upstream_arg, &exp4])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("of score[k=4] in the upstream store")
            && stderr.contains("is damaged (its content hashes to"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        with_status(&summary, "ran"),
        vec!["score[k=4]".to_string()],
        "{summary}"
    );
    assert_eq!(with_status(&summary, "cached").len(), 4, "{summary}");
    // The local result is the right one (equal to the team's before the damage).
    assert_eq!(
        table(&fresh, &exp4),
        table(&mine, &exp).replace(&exp, &exp4)
    );
    let local = output_file(&fresh, "team", "score[k=4]", "scores");
    assert_ne!(
        std::fs::read(&local).unwrap(),
        bytes,
        "the damaged object was copied"
    );
    assert_eq!(
        common::file_hashes(&upstream),
        frozen,
        "the upstream store was written"
    );
}

#[test]
fn a_folder_that_is_not_a_store_is_refused() {
    let env = Env::new();
    let exp = experiment(&env);
    std::fs::create_dir_all(env.path("empty")).unwrap();
    common::fails_with(
        &env,
        &[
            "run",
            "--cache-from",
            env.path("empty").to_str().unwrap(),
            &exp,
        ],
        &[
            "the upstream store",
            "has no published index (snapshot.json)",
        ],
    );
    common::fails_with(
        &env,
        &[
            "run",
            "--cache-from",
            env.path("missing").to_str().unwrap(),
            &exp,
        ],
        &["does not exist or is not a folder"],
    );
}
