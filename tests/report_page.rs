//! The report page end to end: the quick start's page written during and after a run, every
//! figure and table present and drawn in a real headless browser (Chromium), what the figures
//! draw equal to the tables and outputs (top-k and validation lines, Pareto markers, probe lines,
//! alignment bars), every figure titled with both axes described, every instance's key, timing,
//! device and parameters on the page, a screenshot kept as a test artifact, and the analysis
//! figures (alignment, naming, linear probe, reconstruction against sparsity from `extract`).
//!
//! The screenshot goes to `<target>/tmp/report/quickstart-report.png`. Without Chromium the
//! browser checks are skipped with a notice; the file checks still run.

use crate::common;
use crate::report::{browser, svg};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    assert_succeeds_with, experiment_table, fails_with, output_json, write_blobs, Env, Rounding,
    Synth, BLOB_IMPORTS,
};

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
        let exp = common::repo_path("experiments/quickstart.toml");
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

impl Quickstart {
    /// The store's records of the quick start's instances.
    fn records(&self) -> Vec<msae::store::Record> {
        let store = msae::store::Store::open(&self.env.cache(), "test reader", true).unwrap();
        let records: Vec<_> = store
            .index
            .all_records()
            .unwrap()
            .into_iter()
            .filter(|r| r.experiment == "quickstart")
            .collect();
        assert_eq!(records.len(), 51);
        records
    }
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
    for r in &q.records() {
        assert!(html.contains(&r.key), "no key for {}", r.instance);
    }
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

type Row = serde_json::Map<String, serde_json::Value>;

/// The rows of a result table the page's folder holds (`<kind>.json`).
fn table(dir: &Path, kind: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join(format!("{kind}.json"))).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    rows.into_iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

fn number(row: &Row, column: &str) -> f64 {
    row.get(column)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("{} has no number `{column}`", row["instance"]))
}

/// The one row a legend label names. Labels list the coordinates that differ between the
/// series (`arch=topk, expansion=8`), possibly followed by a note in parentheses.
fn row_of_label(rows: &[Row], label: &str) -> usize {
    let coords = label.split(" (").next().unwrap();
    let wanted: BTreeMap<String, String> = coords
        .split(", ")
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .unwrap_or_else(|| panic!("legend `{label}`"));
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
    matching[0]
}

/// Asserts that a point drawn at pixel `at` shows `value` = (x, y) within `tolerance` pixels.
fn assert_drawn_at(
    what: &str,
    at: (f64, f64),
    value: (f64, f64),
    axes: &(svg::Axis, svg::Axis),
    tolerance: f64,
) {
    let want = (axes.0.pixel(value.0), axes.1.pixel(value.1));
    assert!(
        (at.0 - want.0).abs() <= tolerance && (at.1 - want.1).abs() <= tolerance,
        "{what}: ({}, {}) drawn at {at:?}, expected {want:?} (1 px = {} by {})",
        value.0,
        value.1,
        axes.0.resolution(),
        axes.1.resolution()
    );
}

/// Checks a line chart against table rows: one line and one legend row per table row, each
/// legend row naming its own table row, and each line's points at `expected(row)` (1 px).
fn lines_equal_rows(
    figure: &Path,
    rows: &[Row],
    log_x: bool,
    expected: impl Fn(&Row) -> Vec<(f64, f64)>,
) {
    let svg = std::fs::read_to_string(figure).unwrap();
    let lines = svg::data_lines(&svg);
    let legend = svg::legend(&svg);
    let name = figure.display();
    assert_eq!(lines.len(), rows.len(), "{name}: one line per row");
    assert_eq!(legend.len(), rows.len(), "{name}: one legend row per row");
    let axes = svg::axes(&svg, log_x);
    let mut used = BTreeSet::new();
    for (line, label) in lines.iter().zip(&legend) {
        let i = row_of_label(rows, label);
        assert!(used.insert(i), "{name}: two lines for one row");
        let points = expected(&rows[i]);
        assert!(!points.is_empty(), "{name}: nothing expected for `{label}`");
        assert_eq!(line.len(), points.len(), "{name}: `{label}` point count");
        for (&at, &value) in line.iter().zip(&points) {
            assert_drawn_at(&format!("{name}: `{label}`"), at, value, &axes, 1.0);
        }
    }
}

/// (k, value) of a row's `<prefix>@<k>` columns, by ascending k.
fn at_k(row: &Row, prefix: &str) -> Vec<(f64, f64)> {
    let mut ks: Vec<u64> = row
        .keys()
        .filter(|c| !row[*c].is_null())
        .filter_map(|c| c.strip_prefix(&format!("{prefix}@"))?.parse().ok())
        .collect();
    ks.sort_unstable();
    ks.iter()
        .map(|k| (*k as f64, number(row, &format!("{prefix}@{k}"))))
        .collect()
}

#[test]
fn top_k_figure_lines_equal_the_table() {
    let q = quickstart();
    let rows = table(&q.results, "score_topk");
    assert_eq!(rows.len(), 12);
    for metric in ["fvu", "cos"] {
        lines_equal_rows(
            &q.results.join(format!("figures/score_topk_{metric}.svg")),
            &rows,
            true,
            |row| at_k(row, metric),
        );
    }
}

/// The `epochs` output of a validate instance.
fn epochs(env: &Env, experiment: &str, instance: &str) -> Vec<serde_json::Value> {
    serde_json::from_value(output_json(env, experiment, instance, "epochs")).unwrap()
}

#[test]
fn validate_curves_equal_the_epochs_and_the_table() {
    let q = quickstart();
    let rows = table(&q.results, "validate");
    assert_eq!(rows.len(), 12);
    let per_instance: BTreeMap<String, Vec<serde_json::Value>> = rows
        .iter()
        .map(|r| {
            let name = r["instance"].as_str().unwrap();
            (name.to_string(), epochs(&q.env, "quickstart", name))
        })
        .collect();
    for field in ["fvu_sparse", "cos_sparse"] {
        lines_equal_rows(
            &q.results.join(format!("figures/validate_{field}.svg")),
            &rows,
            false,
            |row| {
                let eps = &per_instance[row["instance"].as_str().unwrap()];
                assert_eq!(eps.len() as f64, number(row, "epochs"));
                // The table holds the last epoch's value.
                let last = eps.last().unwrap()[field].as_f64().unwrap();
                assert_eq!(last, number(row, field), "{}", row["instance"]);
                eps.iter()
                    .enumerate()
                    .map(|(e, m)| ((e + 1) as f64, m[field].as_f64().unwrap()))
                    .collect()
            },
        );
    }
    // Each Matryoshka run: one curve per nesting level, ending at the table's level_fvu@k.
    let mut level_figures = 0;
    for row in &rows {
        let name = row["instance"].as_str().unwrap();
        let eps = &per_instance[name];
        let Some(levels) = eps.last().unwrap()["levels"]
            .as_array()
            .filter(|l| !l.is_empty())
        else {
            continue;
        };
        level_figures += 1;
        let file = q.results.join(format!(
            "figures/validate_levels_{}.svg",
            msae::report::figures::slug(name)
        ));
        let svg = std::fs::read_to_string(&file).unwrap();
        let (lines, legend) = (svg::data_lines(&svg), svg::legend(&svg));
        assert_eq!(lines.len(), levels.len(), "{name}: one line per level");
        let axes = svg::axes(&svg, false);
        for (li, ((line, label), level)) in lines.iter().zip(&legend).zip(levels).enumerate() {
            let k = level["k"].as_u64().unwrap();
            assert_eq!(label, &format!("level k={k}"));
            assert_eq!(
                level["fvu"].as_f64().unwrap(),
                number(row, &format!("level_fvu@{k}"))
            );
            assert_eq!(line.len(), eps.len());
            for (e, (&at, m)) in line.iter().zip(eps).enumerate() {
                let v = m["levels"][li]["fvu"].as_f64().unwrap();
                assert_drawn_at(
                    &format!("{name} level k={k}"),
                    at,
                    ((e + 1) as f64, v),
                    &axes,
                    1.0,
                );
            }
        }
    }
    assert_eq!(level_figures, 4, "the four Matryoshka runs");
}

/// Checks the reconstruction-against-sparsity scatter plot: per SAE (in legend order) a filled
/// marker at its sparse (L0, FVU) and a hollow one of the same colour and shape at its dense
/// (L0, FVU), as `expected(row)` gives them ([sparse, dense]).
fn pareto_equals_rows(figure: &Path, rows: &[Row], expected: impl Fn(&Row) -> [(f64, f64); 2]) {
    let svg = std::fs::read_to_string(figure).unwrap();
    let (plot, legend_markers) = svg::plot_and_legend_markers(&svg);
    let labels = svg::legend(&svg);
    assert_eq!(plot.len(), 2 * rows.len(), "two markers per SAE");
    assert_eq!(legend_markers.len(), rows.len(), "one legend row per SAE");
    // After the SAEs, the legend explains the markers.
    assert_eq!(
        labels[rows.len()..][..2],
        ["filled: sparse code", "hollow: dense code"]
    );
    let axes = svg::axes(&svg, true);
    let mut used = BTreeSet::new();
    for ((pair, key), label) in plot.chunks(2).zip(&legend_markers).zip(&labels) {
        let i = row_of_label(rows, label);
        assert!(used.insert(i), "two marker pairs for `{label}`");
        let [sparse, dense] = expected(&rows[i]);
        for (m, value, hollow) in [(&pair[0], sparse, false), (&pair[1], dense, true)] {
            assert_eq!(m.hollow, hollow, "`{label}`: {m:?}");
            assert_eq!(
                (&m.colour, m.shape),
                (&key.colour, key.shape),
                "`{label}`: drawn unlike its legend row"
            );
            let what = format!("`{label}` {}", if hollow { "dense" } else { "sparse" });
            assert_drawn_at(&what, (m.x, m.y), value, &axes, 1.5);
        }
    }
}

#[test]
fn pareto_points_equal_the_tables() {
    let q = quickstart();
    let rows = table(&q.results, "validate");
    let train = table(&q.results, "train");
    // From validate: L0 = latents × (1 − zero fraction) of the last epoch; FVU as in the table.
    pareto_equals_rows(&q.results.join("figures/pareto.svg"), &rows, |row| {
        let name = row["instance"].as_str().unwrap();
        let sae = &train[row_of_label(
            &train,
            &name_coords(name)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        )];
        let n = number(sae, "n_latents");
        let last = epochs(&q.env, "quickstart", name).pop().unwrap();
        let dense_zero = last["zero_fraction_dense"].as_f64().unwrap();
        [
            (
                n * (1.0 - number(row, "zero_fraction_sparse")),
                number(row, "fvu_sparse"),
            ),
            (n * (1.0 - dense_zero), number(row, "fvu_dense")),
        ]
    });
}

/// Every figure in the folder has a title (the page's caption of it) and both axis
/// descriptions.
fn figures_are_labelled(dir: &Path) {
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let names = figure_files(dir);
    assert!(!names.is_empty());
    for name in names {
        let svg = std::fs::read_to_string(dir.join(format!("figures/{name}.svg"))).unwrap();
        let labels = svg::labels(&svg);
        assert!(!labels.x_desc.trim().is_empty() && !labels.y_desc.trim().is_empty());
        let anchor = format!("id=\"fig-{name}\"");
        let figure = &html[html.find(&anchor).unwrap()..];
        let caption = &figure[figure.find("<figcaption>").unwrap() + "<figcaption>".len()..];
        let caption = svg::unescape(&caption[..caption.find(" · ").unwrap()]);
        assert_eq!(labels.title, caption, "{name}: the title");
    }
}

#[test]
fn quickstart_figures_have_titles_and_axis_descriptions() {
    figures_are_labelled(&quickstart().results);
}

/// The name/value rows of the `<table class="kv">` tables in `html`.
fn key_values(html: &str) -> BTreeMap<String, String> {
    html.split("<tr><th>")
        .skip(1)
        .map(|row| {
            let (k, rest) = row.split_once("</th><td>").unwrap();
            let v = &rest[..rest.find("</td></tr>").unwrap()];
            (svg::unescape(k), svg::unescape(v))
        })
        .collect()
}

/// Whether a parameter shown on the page (read as JSON where it is JSON) is the keyed value:
/// keys write floats as `"f:<shortest text>"` so that 1 and 1.0 differ; the page writes them as
/// numbers.
fn same_parameter(shown: &serde_json::Value, keyed: &serde_json::Value) -> bool {
    use serde_json::Value::{Array, Number, String};
    match (shown, keyed) {
        (Number(n), String(k)) => k
            .strip_prefix("f:")
            .and_then(|f| f.parse::<f64>().ok())
            .is_some_and(|f| Some(f) == n.as_f64()),
        (Array(a), Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_parameter(x, y))
        }
        (s, k) => s == k,
    }
}

#[test]
fn every_instance_shows_its_parameters_key_timing_and_device() {
    let q = quickstart();
    let html = std::fs::read_to_string(q.results.join("index.html")).unwrap();
    for r in &q.records() {
        let anchor = format!(
            "<details id=\"inst-{}\">",
            msae::report::figures::slug(&r.instance)
        );
        let at = html
            .find(&anchor)
            .unwrap_or_else(|| panic!("no section for {}", r.instance));
        let section = &html[at..at + html[at..].find("</details>").unwrap()];
        let (head, rest) = section
            .split_once("<p><b>Parameters</b></p>")
            .unwrap_or_else(|| panic!("{}: no parameters", r.instance));
        let params = key_values(&rest[..rest.find("<p><b>").unwrap_or(rest.len())]);
        let head = key_values(head);
        let who = &r.instance;
        assert_eq!(head["key"], r.key, "{who}");
        assert_eq!(
            head["timing"],
            format!(
                "{:.2} s, finished {}",
                r.seconds,
                msae::report::html::utc(r.finished_unix)
            ),
            "{who}"
        );
        assert!(r.seconds > 0.0, "{who}");
        let device = r.exec["device"].as_str().unwrap();
        assert_eq!(head["device"], device, "{who}");
        assert!(device == "cpu" || device.starts_with("cuda"), "{who}");
        // Every keyed parameter, with its value.
        assert!(!r.components.params.is_empty(), "{who}");
        for (name, value) in &r.components.params {
            let shown = params
                .get(name)
                .unwrap_or_else(|| panic!("{who}: parameter {name} not shown"));
            let shown_value = serde_json::from_str(shown)
                .unwrap_or_else(|_| serde_json::Value::String(shown.clone()));
            let same = same_parameter(&shown_value, value);
            assert!(
                same,
                "{who}: parameter {name} shown as `{shown}`, keyed {value}"
            );
        }
    }
}

/// Two seeds of a TopK SAE on labelled blobs, and every analysis step on them.
fn analysis_experiment() -> String {
    experiment_table(
        "analysis",
        "description = \"two seeds of a TopK SAE on labelled blobs: alignment, naming, linear probe\"\n",
    ) + BLOB_IMPORTS
        + ANALYSIS_STEPS
}

const ANALYSIS_STEPS: &str = r#"
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
    write_blobs(&env, 7, Rounding::Sum);
    let exp = env.write("analysis.toml", &analysis_experiment());
    env.run_json(&exp);
    // `msae report` rewrites the page from the store alone.
    let dir = env.path("results/analysis");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_succeeds_with(
        &env.msae(&["report", exp.to_str().unwrap()]),
        &["results/analysis/index.html"],
    );
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
    let top = output_json(&env, "analysis", "names[seed=1]", "top_latents");
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
    // Pareto from extract: per SAE a filled marker at the sparse code's (L0, FVU) and a hollow
    // one at the dense code's, the extract table's values.
    let pareto = std::fs::read_to_string(dir.join("figures/pareto.svg")).unwrap();
    assert!(pareto.contains("from `extract`"));
    let extract = table(&dir, "extract");
    assert_eq!(extract.len(), 2);
    pareto_equals_rows(&dir.join("figures/pareto.svg"), &extract, |row| {
        [
            (number(row, "sparse_active"), number(row, "sparse_fvu")),
            (number(row, "active"), number(row, "fvu")),
        ]
    });
    // Linear probe: each SAE's curve at the table's metric@k, its own macro-F1 in the legend.
    let probe = table(&dir, "linear_probe");
    assert_eq!(probe.len(), 2);
    for metric in ["macro_f1", "kl", "agreement"] {
        let file = dir.join(format!("figures/linear_probe_{metric}.svg"));
        lines_equal_rows(&file, &probe, true, |row| {
            let points = at_k(row, metric);
            assert_eq!(
                points.iter().map(|p| p.0).collect::<Vec<_>>(),
                [1.0, 2.0, 4.0]
            );
            points
        });
        for label in svg::legend(&std::fs::read_to_string(&file).unwrap()) {
            let row = &probe[row_of_label(&probe, &label)];
            let f1 = format!("(probe macro-F1 {:.3})", number(row, "macro_f1"));
            assert!(label.ends_with(&f1), "`{label}` lacks {f1}");
        }
    }
    // Alignment: the bars are the histogram output's counts and add up to the matched pairs.
    let align = table(&dir, "align");
    let pairs = number(&align[0], "n_pairs");
    assert_eq!(pairs, 32.0, "one pair per latent");
    let hist = output_json(&env, "analysis", "seeds", "histogram");
    let counts: Vec<f64> = hist["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .filter(|c| *c > 0.0)
        .collect();
    let svg_text = std::fs::read_to_string(dir.join("figures/align_seeds.svg")).unwrap();
    let (_, y) = svg::axes(&svg_text, false);
    let heights: Vec<f64> = svg::bars(&svg_text)
        .iter()
        .map(|&(_, top, _, bottom)| y.value(top) - y.value(bottom))
        .collect();
    assert_eq!(heights.len(), counts.len(), "one bar per non-empty bin");
    for (h, c) in heights.iter().zip(&counts) {
        assert!(
            (h - c).abs() <= 1.5 * y.resolution(),
            "a bar of height {h} for {c} pairs (1 px = {})",
            y.resolution()
        );
    }
    let total: f64 = heights.iter().map(|h| h.round()).sum();
    assert_eq!(total, pairs, "bar heights {heights:?}");
    figures_are_labelled(&dir);
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
    fails_with(&env, &["report", "missing.toml"], &["missing.toml"]);
    assert!(!env.path("results").exists());
}

/// One good step, an import of a missing file, and a step that reads it.
fn broken_experiment() -> String {
    Synth::new(8, &[8], 64, 16).experiment_with(
        "broken",
        "description = \"one good step, an import of a missing file, and a step that reads it\"\n",
    ) + BROKEN_STEPS
}

const BROKEN_STEPS: &str = r#"
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
    let exp = env.write("broken.toml", &broken_experiment());
    fails_with(&env, &["run", "--keep-going", exp.to_str().unwrap()], &[]);
    let index = env.path("results/broken/index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    assert_eq!(state_of(&html, "data"), "done");
    assert_eq!(state_of(&html, "emb"), "failed");
    assert_eq!(state_of(&html, "st"), "skipped");
    assert!(html.contains("the file `missing.npy` given as `path` does not exist"));
    assert!(html.contains("input `emb` did not finish"));
    // Outside a run the store tells done, failed last time, and not run.
    assert_succeeds_with(&env.msae(&["report", exp.to_str().unwrap()]), &[]);
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
