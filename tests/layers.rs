//! The layers of README.md's architecture list depend only downwards: every `crate::…`,
//! `$crate::…` and `super::…` path in `src/` that names another top-level module must name one
//! on a lower line of the list. The list itself must name every top-level module once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level module → its line in the README list (0 = top).
fn documented_layers(readme: &str) -> BTreeMap<String, usize> {
    let start = readme
        .find("<!-- layers -->")
        .expect("README.md has a `<!-- layers -->` list");
    let end = readme[start..]
        .find("<!-- /layers -->")
        .expect("the layer list ends with `<!-- /layers -->`")
        + start;
    let mut layers = BTreeMap::new();
    let lines = readme[start..end]
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()));
    for (rank, line) in lines.enumerate() {
        // The names before the dash are the line's modules, each in backquotes.
        let head = line.split(" — ").next().unwrap();
        for name in head.split('`').skip(1).step_by(2) {
            let previous = layers.insert(name.to_string(), rank);
            assert!(previous.is_none(), "`{name}` is listed twice");
        }
    }
    layers
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
fn imported_tops(module: &[String], source: &str, tops: &BTreeMap<String, usize>) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap();
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
    }
    found
}

fn violations(root: &Path, tops: &BTreeMap<String, usize>) -> Vec<Violation> {
    let mut out = Vec::new();
    for file in rust_files(root) {
        let relative = file.strip_prefix(root).unwrap();
        let module = module_path(relative);
        let Some(own) = module.first() else { continue };
        let Some(&own_rank) = tops.get(own) else {
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for to in imported_tops(&module, &source, tops) {
            if &to == own {
                continue;
            }
            let allowed = tops.get(&to).is_some_and(|&rank| rank > own_rank);
            if !allowed {
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
fn every_import_points_down_the_documented_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let layers = documented_layers(&readme);
    let listed: Vec<String> = layers.keys().cloned().collect();
    assert_eq!(
        listed,
        top_level_modules(&root.join("src")),
        "README's layer list and src/ name different top-level modules"
    );
    let found = violations(&root.join("src"), &layers);
    assert!(
        found.is_empty(),
        "imports against the layer order of README.md:\n{}",
        found
            .iter()
            .map(|v| format!("  {}: `{}` uses `{}`", v.file, v.from, v.to))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_check_catches_upward_sideways_and_grouped_imports() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let readme =
        "<!-- layers -->\n1. `top` — a\n2. `mid`, `side` — b\n3. `low` — c\n<!-- /layers -->\n";
    let layers = documented_layers(readme);
    // Allowed: downwards, within the module, comments, and super:: inside the module.
    write(
        "top/mod.rs",
        "use crate::mid::x;\nuse crate::{low::y, side};\n",
    );
    write(
        "mid/a.rs",
        "use crate::low::z;\nuse super::b;\nuse crate::mid::c;\n// crate::top::in_a_comment\nmod tests { use super::super::b; }\n",
    );
    // Up, sideways (same line), up inside a group, up through super:: from a top-level file,
    // and up through a macro's `$crate`.
    write("low/mod.rs", "use crate::{data, top::Thing};\n");
    write("side.rs", "fn f() { super::mid::g(); }\n");
    write("mid/m.rs", "fn f() -> $crate::side::T { todo!() }\n");
    let mut found: Vec<(String, String)> = violations(src, &layers)
        .into_iter()
        .map(|v| (v.file, v.to))
        .collect();
    found.sort();
    let expected = [
        ("low/mod.rs", "data"),
        ("low/mod.rs", "top"),
        ("mid/m.rs", "side"),
        ("side.rs", "mid"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(found, expected);
}
