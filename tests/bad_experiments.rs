//! Every file in tests/bad_experiments/ is a user mistake. Each starts with comment lines
//! `# expect: <text>` (all must appear in the error) and optionally `# at: LINE:COLUMN` (the error
//! must point exactly there). msae must exit with status 1 and never panic.

use crate::common;

#[test]
fn every_bad_experiment_gets_a_clear_message_and_exit_code_1() {
    let dir = common::repo_path("tests/bad_experiments");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "the corpus has only {} files",
        files.len()
    );
    let env = common::Env::new();
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let at: Option<&str> = text.lines().find_map(|l| l.strip_prefix("# at: "));
        // `graph` validates and expands the experiment without touching the store.
        let out = env.msae(&["graph", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{name}: exit code {:?}, stderr:\n{stderr}",
                out.status.code()
            ));
            continue;
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked:\n{stderr}"));
        }
        for e in &expects {
            if !stderr.contains(e) {
                failures.push(format!("{name}: message lacks `{e}`:\n{stderr}"));
            }
        }
        if let Some(at) = at {
            if !stderr.contains(&format!("{name}:{at}\n")) {
                failures.push(format!("{name}: message does not point at {at}:\n{stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn a_missing_experiment_file_is_reported() {
    let env = common::Env::new();
    common::fails_with(
        &env,
        &["run", "does-not-exist.toml"],
        &["cannot read experiment file"],
    );
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let env = common::Env::new();
    let out = env.msae(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
