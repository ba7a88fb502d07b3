//! The layers of `docs/architecture.md` hold: the engine (runner, loader, report, store) and the
//! domain (step kinds, SAEs, embedding, metrics) are two legs that meet only in `cli` and in the
//! step contract. Every `crate::…`, `$crate::…` and `super::…` path in `src/` that names another
//! top-level module must be allowed by the list: down its own leg, into the contract, or from
//! `cli`. The list itself must name every top-level module once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a top-level module stands: its leg and its rank within the leg (1 = highest).
#[derive(Debug, Clone, PartialEq)]
struct Place {
    leg: String,
    rank: usize,
}

/// Top-level module → its place in the architecture doc's list. Each line of the list reads
/// `- LEG RANK: \`module\`, \`module\` — what they do` (the top line has no rank).
fn documented_layers(doc: &str) -> BTreeMap<String, Place> {
    let start = doc
        .find("<!-- layers -->")
        .expect("the architecture doc has a `<!-- layers -->` list");
    let end = doc[start..]
        .find("<!-- /layers -->")
        .expect("the layer list ends with `<!-- /layers -->`")
        + start;
    let mut layers = BTreeMap::new();
    for line in doc[start..end].lines() {
        let Some(item) = line.trim_start().strip_prefix("- ") else {
            continue;
        };
        let (place, names) = item.split_once(':').expect("`- LEG RANK: ...`");
        let mut words = place.split_whitespace();
        let leg = words.next().expect("a leg").to_string();
        let rank = words
            .next()
            .map_or(0, |r| r.parse().expect("a rank number"));
        assert!(
            ["top", "engine", "contract", "domain"].contains(&leg.as_str()),
            "unknown leg `{leg}`"
        );
        // The names before the dash are the line's modules, each in backquotes.
        let head = names.split(" — ").next().unwrap();
        for name in head.split('`').skip(1).step_by(2) {
            let previous = layers.insert(
                name.to_string(),
                Place {
                    leg: leg.clone(),
                    rank,
                },
            );
            assert!(previous.is_none(), "`{name}` is listed twice");
        }
    }
    layers
}

/// Whether code in `from` may use `to`: `top` uses anything; within a leg only lower lines;
/// the engine and the domain meet only in the contract, which uses nothing outside itself.
fn allowed(from: &Place, to: &Place) -> bool {
    match (from.leg.as_str(), to.leg.as_str()) {
        ("top", _) => true,
        (a, b) if a == b => to.rank > from.rank,
        ("engine" | "domain", "contract") => true,
        _ => false,
    }
}

/// One import that points up or sideways.
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    from: String,
    to: String,
}

/// The module path of a source file (`src/a/b.rs` → [a, b], `src/a/mod.rs` → [a]).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// Identifiers that start each path after position `at` (just past `crate::`): one, or each
/// first segment of a `{a::…, b, …}` group.
fn first_segments(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = text.strip_prefix('{') else {
        return vec![ident(text)];
    };
    let mut out = Vec::new();
    let mut depth = 0;
    let mut item_start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.push(ident(&group[item_start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ident(&group[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The top-level modules a file's code (comments left out) names through `crate::`,
/// `$crate::` or a `super::` chain that leaves its own top-level module.
fn imported_tops(module: &[String], source: &str, tops: &BTreeMap<String, Place>) -> Vec<String> {
    // Comments removed line by line, then one text: a `use crate::{…}` group may wrap.
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        found.extend(first_segments(&rest[i + "crate::".len()..]));
        rest = &rest[i + "crate::".len()..];
    }
    let mut rest = code;
    while let Some(i) = rest.find("super::") {
        // Count the chain, then see whether it climbs to the crate root.
        let before = &rest[..i];
        let preceded_by_path = before.ends_with("::");
        let mut after = &rest[i..];
        let mut ups = 0;
        while let Some(r) = after.strip_prefix("super::") {
            ups += 1;
            after = r;
        }
        if !preceded_by_path && ups >= module.len() {
            // An inline module (e.g. `mod tests`) adds a level this count does not see, so
            // only a name that is a top-level module counts.
            found.extend(
                first_segments(after)
                    .into_iter()
                    .filter(|s| tops.contains_key(s)),
            );
        }
        rest = after;
    }
    found
}

fn violations(root: &Path, tops: &BTreeMap<String, Place>) -> Vec<Violation> {
    let mut out = Vec::new();
    for file in rust_files(root) {
        let relative = file.strip_prefix(root).unwrap();
        let module = module_path(relative);
        let Some(own) = module.first() else { continue };
        let Some(own_place) = tops.get(own) else {
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for to in imported_tops(&module, &source, tops) {
            if &to == own {
                continue;
            }
            if !tops.get(&to).is_some_and(|to| allowed(own_place, to)) {
                out.push(Violation {
                    file: relative.display().to_string(),
                    from: own.clone(),
                    to,
                });
            }
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The crate's top-level modules: folders and files of `src/` besides the crate roots.
fn top_level_modules(src: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_string)
            }
        })
        .filter(|n| n != "lib" && n != "main")
        .collect();
    out.sort();
    out
}

#[test]
fn every_import_follows_the_documented_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let layers = documented_layers(&doc);
    let listed: Vec<String> = layers.keys().cloned().collect();
    assert_eq!(
        listed,
        top_level_modules(&root.join("src")),
        "the architecture doc's layer list and src/ name different top-level modules"
    );
    let found = violations(&root.join("src"), &layers);
    assert!(
        found.is_empty(),
        "imports against the layers of docs/architecture.md:\n{}",
        found
            .iter()
            .map(|v| format!("  {}: `{}` uses `{}`", v.file, v.from, v.to))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_check_catches_upward_sideways_cross_leg_and_wrapped_imports() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let doc = "<!-- layers -->\n- top: `app` — a\n- engine 1: `run` — b\n- engine 2: `store`, `log` — c\n- contract 1: `contract` — d\n- domain 1: `kinds` — e\n- domain 2: `model`, `data` — f\n<!-- /layers -->\n";
    let layers = documented_layers(doc);
    // Allowed: top to anything, down a leg, into the contract from both legs, within a module,
    // comments, and super:: inside the module.
    write(
        "app/mod.rs",
        "use crate::run::x;\nuse crate::{\n    kinds::y,\n    model,\n};\n",
    );
    write(
        "run/a.rs",
        "use crate::store::z;\nuse crate::contract::Step;\nuse super::b;\nuse crate::run::c;\n// crate::kinds::in_a_comment\nmod tests { use super::super::b; }\n",
    );
    write("kinds/mod.rs", "use crate::{contract::Step, model::Sae};\n");
    // Planted: the engine naming the domain (plainly and inside a group wrapped over lines),
    // the domain naming the engine, the contract naming a leg, up a leg, sideways, up through
    // super:: from a top-level file, and up through a macro's `$crate`.
    write("store/mod.rs", "use crate::kinds::Train;\n");
    write(
        "run/b.rs",
        "use crate::{\n    store::Store,\n    model::{\n        Sae,\n    },\n};\n",
    );
    write("model/mod.rs", "use crate::{data, run::Thing};\n");
    write("contract/mod.rs", "use crate::store::Objects;\n");
    write("data.rs", "fn f() { super::kinds::g(); }\n");
    write("kinds/m.rs", "fn f() -> $crate::app::T { todo!() }\n");
    let mut found: Vec<(String, String)> = violations(src, &layers)
        .into_iter()
        .map(|v| (v.file, v.to))
        .collect();
    found.sort();
    let expected = [
        ("contract/mod.rs", "store"),
        ("data.rs", "kinds"),
        ("kinds/m.rs", "app"),
        ("model/mod.rs", "data"),
        ("model/mod.rs", "run"),
        ("run/b.rs", "model"),
        ("store/mod.rs", "kinds"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(found, expected);
}
