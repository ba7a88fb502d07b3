//! The report page end to end: the quick start's page written during and after a run, every
//! figure and table present and drawn in a real headless browser (Chromium), the top-k figure's
//! lines equal to the table's values, a screenshot kept as a test artifact, and the analysis
//! figures (alignment, naming, linear probe, reconstruction against sparsity from `extract`).
//!
//! The screenshot goes to `<target>/tmp/report/quickstart-report.png`. Without Chromium the
//! browser checks are skipped with a notice; the file checks still run.

#[path = "report/browser.rs"]
mod browser;
mod common;
#[path = "report/svg.rs"]
mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{text, write_npy, Env};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The quick start (about 45 s in a test build), run once for every test of this file.
struct Quickstart {
    env: Env,
    results: PathBuf,
    /// `done` counts of the pages seen while the run was in progress.
    live_done: Vec<usize>,
}

fn done_count(html: &str) -> Option<usize> {
    let i = html.find(" done")?;
    let digits: String = html[..i]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

fn quickstart() -> &'static Quickstart {
    static RUN: OnceLock<Quickstart> = OnceLock::new();
    RUN.get_or_init(|| {
        let env = Env::new();
        let results = env.path("results");
        let exp = repo("experiments/quickstart.toml");
        let mut child = env
            .command()
            .args(["-q", "run"])
            .arg(&exp)
            .arg("--results")
            .arg(&results)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("msae runs");
        let index = results.join("quickstart/index.html");
        let mut live_done = Vec::new();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if let Ok(html) = std::fs::read_to_string(&index) {
                if html.contains("A run is in progress") {
                    if let Some(n) = done_count(&html) {
                        if live_done.last() != Some(&n) {
                            live_done.push(n);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "the quick start failed");
        Quickstart {
            env,
            results: results.join("quickstart"),
            live_done,
        }
    })
}

const QUICKSTART_FIGURES: [&str; 10] = [
    "pareto",
    "recovery",
    "score_topk_cos",
    "score_topk_fvu",
    "validate_cos_sparse",
    "validate_fvu_sparse",
    "validate_levels_val_arch_msae_expansion_4_nesting_start_8_weighting_rw",
    "validate_levels_val_arch_msae_expansion_4_nesting_start_8_weighting_uw",
    "validate_levels_val_arch_msae_expansion_8_nesting_start_8_weighting_rw",
    "validate_levels_val_arch_msae_expansion_8_nesting_start_8_weighting_uw",
];

fn figure_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("figures"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".svg")
                .to_string()
        })
        .collect()
}

/// Checks the rendered DOM: every expected figure drawn at a visible size, every table with its
/// rows and sorted by a click.
fn check_in_browser(dir: &Path, figures: &BTreeSet<String>, tables: &BTreeMap<&str, usize>) {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let probe = browser::probe_copy(&dir.join("index.html"));
    let profile = tempfile::tempdir().unwrap();
    let dom = browser::dump_dom(&chromium, &probe, profile.path());
    let figs = svg::tags(&dom, "figure");
    let plots: Vec<&str> = figs
        .iter()
        .copied()
        .filter(|t| svg::attr(t, "class") == Some("plot"))
        .collect();
    let ids: BTreeSet<String> = plots
        .iter()
        .map(|t| {
            svg::attr(t, "id")
                .unwrap()
                .trim_start_matches("fig-")
                .to_string()
        })
        .collect();
    assert_eq!(&ids, figures, "figures on the page");
    let svgs = svg::tags(&dom, "svg");
    // The graph plus one SVG per figure, each drawn (many visible elements) at a readable size.
    assert_eq!(svgs.len(), figures.len() + 1);
    for s in &svgs {
        let drawn: usize = svg::attr(s, "data-drawn").unwrap().parse().unwrap();
        let (w, h) = svg::attr(s, "data-box").unwrap().split_once('x').unwrap();
        let (w, h): (f64, f64) = (w.parse().unwrap(), h.parse().unwrap());
        assert!(
            drawn >= 15,
            "an SVG with only {drawn} visible elements: {s}"
        );
        assert!(w >= 400.0 && h >= 200.0, "an SVG drawn at {w}×{h}: {s}");
    }
    let rendered: BTreeMap<String, usize> = svg::tags(&dom, "table")
        .iter()
        .filter(|t| svg::attr(t, "class") == Some("data sortable"))
        .map(|t| {
            let sorted: Vec<f64> =
                serde_json::from_str(svg::attr(t, "data-sorted").unwrap()).expect("sorted values");
            assert!(
                sorted.windows(2).all(|w| w[0] <= w[1]),
                "a click did not sort the column ascending: {sorted:?}"
            );
            (
                String::new(),
                svg::attr(t, "data-rows").unwrap().parse().unwrap(),
            )
        })
        .collect::<Vec<_>>()
        .into_iter()
        .zip(tables.keys())
        .map(|((_, n), k)| (k.to_string(), n))
        .collect();
    let expected: BTreeMap<String, usize> =
        tables.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    assert_eq!(rendered, expected, "tables (kind → rows) on the page");
    for kind in tables.keys() {
        assert!(
            dom.contains(&format!("id=\"table-{kind}\"")),
            "no table {kind}"
        );
    }
}

#[test]
fn quickstart_page_has_every_figure_and_table_drawn_in_a_browser() {
    let q = quickstart();
    let html = std::fs::read_to_string(q.results.join("index.html")).unwrap();
    assert!(
        !html.contains("A run is in progress"),
        "the final page still says running"
    );
    assert_eq!(done_count(&html), Some(51));
    assert!(html.contains("planted-dictionary data"), "the description");
    for external in ["src=\"http", "href=\"http", "url(http", "@import", "<link"] {
        assert!(
            !html.contains(external),
            "the page must not need the network: {external}"
        );
    }
    let expected: BTreeSet<String> = QUICKSTART_FIGURES.iter().map(|s| s.to_string()).collect();
    assert_eq!(figure_files(&q.results), expected);
    // Every instance with its key, and links to copied outputs that exist.
    let store = msae::store::Store::open(&q.env.cache(), "test reader", true).unwrap();
    let records: Vec<_> = store
        .index
        .all_records()
        .unwrap()
        .into_iter()
        .filter(|r| r.experiment == "quickstart")
        .collect();
    assert_eq!(records.len(), 51);
    for r in &records {
        assert!(html.contains(&r.key), "no key for {}", r.instance);
    }
    drop(store);
    let mut links = 0;
    for part in html.split("href=\"outputs/").skip(1) {
        let rel = &part[..part.find('"').unwrap()];
        assert!(
            q.results.join("outputs").join(rel).is_file(),
            "missing {rel}"
        );
        links += 1;
    }
    assert!(links >= 51, "only {links} output links");
    let tables = BTreeMap::from([
        ("import", 1),
        ("recovery", 12),
        ("score_topk", 12),
        ("stats", 1),
        ("synth", 1),
        ("train", 12),
        ("validate", 12),
    ]);
    check_in_browser(&q.results, &expected, &tables);
}

#[test]
fn the_page_is_rewritten_while_the_run_progresses() {
    let q = quickstart();
    assert!(
        q.live_done.len() >= 3,
        "pages seen during the run: {:?}",
        q.live_done
    );
    assert!(
        q.live_done.windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        q.live_done
    );
    assert!(*q.live_done.last().unwrap() < 51);
}

#[test]
fn quickstart_screenshot_is_kept() {
    let q = quickstart();
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let png = artifacts().join("quickstart-report.png");
    std::fs::remove_file(&png).ok();
    let profile = tempfile::tempdir().unwrap();
    browser::screenshot(
        &chromium,
        &q.results.join("index.html"),
        &png,
        (1280, 2400),
        profile.path(),
    );
    assert_eq!(browser::png_size(&png), (1280, 2400));
    assert!(
        std::fs::metadata(&png).unwrap().len() > 50_000,
        "a blank screenshot"
    );
    eprintln!("screenshot: {}", png.display());
}

/// Coordinates from an instance name: `score[arch=topk,k=8]` → {arch: topk, k: 8}.
fn name_coords(name: &str) -> BTreeMap<String, String> {
    let inner = name
        .split_once('[')
        .map_or("", |(_, r)| r.trim_end_matches(']'));
    inner
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn top_k_figure_lines_equal_the_table() {
    let q = quickstart();
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(q.results.join("score_topk.json")).unwrap())
            .unwrap();
    assert_eq!(rows.len(), 12);
    for metric in ["fvu", "cos"] {
        let figure =
            std::fs::read_to_string(q.results.join(format!("figures/score_topk_{metric}.svg")))
                .unwrap();
        let lines = svg::data_lines(&figure);
        let legend = svg::legend(&figure);
        assert_eq!(lines.len(), rows.len(), "one line per SAE");
        assert_eq!(legend.len(), rows.len(), "one legend row per SAE");
        let (x_axis, y_axis) = svg::axes(&figure, true);
        let mut used = BTreeSet::new();
        for (line, label) in lines.iter().zip(&legend) {
            // The legend row drawn with this line names the SAE by its coordinates.
            let wanted: BTreeMap<String, String> = label
                .split(", ")
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            let matching: Vec<usize> = (0..rows.len())
                .filter(|&i| {
                    let have = name_coords(rows[i]["instance"].as_str().unwrap());
                    wanted.iter().all(|(k, v)| have.get(k) == Some(v))
                })
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "legend `{label}` matches rows {matching:?}"
            );
            assert!(used.insert(matching[0]), "two lines for one SAE");
            let row = rows[matching[0]].as_object().unwrap();
            let mut ks: Vec<u64> = row
                .keys()
                .filter(|c| !row[*c].is_null())
                .filter_map(|c| c.strip_prefix(&format!("{metric}@"))?.parse().ok())
                .collect();
            ks.sort_unstable();
            assert_eq!(line.len(), ks.len(), "{label}: one point per k");
            for (&(px, py), k) in line.iter().zip(&ks) {
                let v = row[&format!("{metric}@{k}")].as_f64().unwrap();
                assert!(
                    (px - x_axis.pixel(*k as f64)).abs() <= 1.0,
                    "{label}: k={k} drawn at x={px}, expected {}",
                    x_axis.pixel(*k as f64)
                );
                assert!(
                    (py - y_axis.pixel(v)).abs() <= 1.0,
                    "{label}: {metric}@{k} = {v} drawn at y={py}, expected {} (1 px = {})",
                    y_axis.pixel(v),
                    y_axis.resolution()
                );
            }
        }
    }
}

/// `rows` points from 4 Gaussian blobs in 16 dimensions, labels "a".."d" (a 64-bit LCG with
/// Box–Muller, so the data are the same everywhere).
fn blobs(state: &mut u64, rows: usize) -> (Vec<f32>, String) {
    let mut uniform = || {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity(rows * 16);
    let mut labels = String::new();
    for r in 0..rows {
        let class = r % 4;
        for j in 0..16 {
            let (u, v) = (uniform(), uniform());
            let noise = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            let centre = if j / 2 == class { 3.0 } else { 0.0 };
            x.push((centre + 0.5 * noise) as f32);
        }
        labels.push_str(["a", "b", "c", "d"][class]);
        labels.push('\n');
    }
    (x, labels)
}

const ANALYSIS: &str = r#"
[experiment]
name = "analysis"
description = "two seeds of a TopK SAE on labelled blobs: alignment, naming, linear probe"

[steps.train]
kind = "import"
path = "train.npy"
labels = "train.labels.txt"

[steps.eval]
kind = "import"
path = "eval.npy"
labels = "eval.labels.txt"

[steps.sae]
kind = "train"
data = "train"
arch = "topk"
k = 4
n_latents = 32
epochs = 4
batch_size = 32
lr = 0.01
schedule = "constant"
seed = [1, 2]

[steps.codes]
kind = "extract"
sae = "sae"
data = "eval"

[steps.seeds]
kind = "align"
a = "sae[seed=1]"
b = "sae[seed=2]"

[steps.names]
kind = "name"
sae = "sae"
vocab = "train"
words = "train.labels"
top = 8

[steps.probe]
kind = "linear_probe"
sae = "sae"
train = "train"
train_labels = "train.labels"
eval = "eval"
eval_labels = "eval.labels"
ks = [1, 2, 4]
batch_size = 32
lr = 0.01
"#;

#[test]
fn analysis_figures_are_drawn_by_msae_report() {
    let env = Env::new();
    let mut state = 7u64;
    let (train, train_labels) = blobs(&mut state, 400);
    let (eval, eval_labels) = blobs(&mut state, 200);
    write_npy(&env.path("train.npy"), 400, 16, &train);
    write_npy(&env.path("eval.npy"), 200, 16, &eval);
    env.write("train.labels.txt", &train_labels);
    env.write("eval.labels.txt", &eval_labels);
    let exp = env.write("analysis.toml", ANALYSIS);
    env.run_json(&exp);
    // `msae report` rewrites the page from the store alone.
    let dir = env.path("results/analysis");
    std::fs::remove_dir_all(&dir).unwrap();
    let out = env.msae(&["report", exp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("results/analysis/index.html"));
    let figures: BTreeSet<String> = [
        "align_seeds",
        "linear_probe_agreement",
        "linear_probe_kl",
        "linear_probe_macro_f1",
        "name_names_seed_1",
        "name_names_seed_2",
        "pareto",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(figure_files(&dir), figures);
    // Naming figure: the most frequent latent is named on the page's figure.
    let top = std::fs::read_to_string(common::output_file(
        &env,
        "analysis",
        "names[seed=1]",
        "top_latents",
    ))
    .unwrap();
    let top: serde_json::Value = serde_json::from_str(&top).unwrap();
    let first = &top[0];
    let label = format!(
        "#{} {} ({:.2})",
        first["latent"],
        first["word"].as_str().unwrap(),
        first["score"].as_f64().unwrap()
    );
    let name_svg = std::fs::read_to_string(dir.join("figures/name_names_seed_1.svg")).unwrap();
    assert!(
        name_svg.contains(&label),
        "`{label}` not in the naming figure"
    );
    // Pareto from extract: one filled and one hollow marker per SAE.
    let pareto = std::fs::read_to_string(dir.join("figures/pareto.svg")).unwrap();
    assert!(pareto.contains("from `extract`"));
    let tables = BTreeMap::from([
        ("align", 1),
        ("extract", 2),
        ("import", 2),
        ("linear_probe", 2),
        ("name", 2),
        ("train", 2),
    ]);
    check_in_browser(&dir, &figures, &tables);
}

#[test]
fn report_of_an_unknown_experiment_file_fails_cleanly() {
    let env = Env::new();
    let out = env.msae(&["report", "missing.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("missing.toml"));
    assert!(!env.path("results").exists());
}

const BROKEN: &str = r#"
[experiment]
name = "broken"
description = "one good step, an import of a missing file, and a step that reads it"

[steps.data]
kind = "synth"
dim = 8
n_features = 8
train = 64
test = 16

[steps.emb]
kind = "import"
path = "missing.npy"

[steps.st]
kind = "stats"
data = "emb"
"#;

/// The state label shown in front of an instance on the page.
fn state_of(html: &str, instance: &str) -> String {
    let anchor = format!("id=\"inst-{instance}\"");
    let at = html
        .find(&anchor)
        .unwrap_or_else(|| panic!("no instance {instance}"));
    let span = &html[at..];
    let start = span.find("<span class=\"state\"").unwrap();
    let text = &span[start..];
    let open = text.find('>').unwrap() + 1;
    let close = text.find("</span>").unwrap();
    text[open..close].to_string()
}

#[test]
fn failed_and_skipped_instances_show_their_state_and_error() {
    let env = Env::new();
    let exp = env.write("broken.toml", BROKEN);
    let out = env.msae(&["run", "--keep-going", exp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let index = env.path("results/broken/index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    assert_eq!(state_of(&html, "data"), "done");
    assert_eq!(state_of(&html, "emb"), "failed");
    assert_eq!(state_of(&html, "st"), "skipped");
    assert!(html.contains("the file `missing.npy` given as `path` does not exist"));
    assert!(html.contains("input `emb` did not finish"));
    // Outside a run the store tells done, failed last time, and not run.
    let out = env.msae(&["report", exp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let html = std::fs::read_to_string(&index).unwrap();
    assert_eq!(state_of(&html, "data"), "done");
    assert_eq!(state_of(&html, "emb"), "failed");
    assert_eq!(state_of(&html, "st"), "not run");
    assert!(
        html.contains("failed (1)"),
        "the graph's legend counts the failure"
    );
    let tables = BTreeMap::from([("synth", 1)]);
    check_in_browser(&env.path("results/broken"), &BTreeSet::new(), &tables);
}
