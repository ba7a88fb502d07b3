//! The report page: `results/<experiment>/index.html` with the experiment's description, its
//! graph, every figure and table, and every instance's parameters, key, timings, device and
//! outputs. The folder is self-contained (inline style and script, figures as inline SVG and as
//! files, small outputs copied beside the page), so it opens from the file system or any server.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::figures::{self, slug, Figure, FinishedRecords};
use super::html::{esc, inline_svg, key_values, utc, SORT_SCRIPT, STYLE};
use super::state::{PageState, State};
use super::{dag, explorer, outputs, table};
use crate::experiment::{Experiment, Plan};
use crate::store::Objects;

/// Seconds between reloads of a page written during a run.
const RELOAD_SECONDS: u32 = 5;

/// Writes a file through a temporary name, so a reader never sees half of it; unchanged files
/// are left alone.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes the figures as files and removes figure files no longer drawn.
fn write_figures(dir: &Path, figs: &[Figure]) -> Result<()> {
    let fig_dir = dir.join("figures");
    std::fs::create_dir_all(&fig_dir)?;
    let mut names = BTreeSet::new();
    for f in figs {
        let name = format!("{}.svg", f.id);
        write_atomic(&fig_dir.join(&name), &f.svg)?;
        names.insert(name);
    }
    for e in std::fs::read_dir(&fig_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".svg") && !names.contains(&name) {
            std::fs::remove_file(e.path()).ok();
        }
    }
    Ok(())
}

fn table_html(t: &table::Table) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<h3 id=\"table-{0}\">{0}</h3><p class=\"muted\">{1} row(s); also as <a href=\"{0}.md\">Markdown</a>, <a href=\"{0}.csv\">CSV</a>, <a href=\"{0}.json\">JSON</a>; click a column to sort.</p>",
        esc(&t.kind),
        t.rows.len()
    );
    out.push_str("<div class=\"scroll\"><table class=\"data sortable\"><thead><tr>");
    for c in &t.columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &t.rows {
        out.push_str("<tr>");
        for (i, v) in row.iter().enumerate() {
            let text = table::cell(v);
            let text = if i == 0 {
                format!("<a href=\"#inst-{}\">{}</a>", slug(&text), esc(&text))
            } else {
                esc(&text)
            };
            match v {
                serde_json::Value::Number(n) => {
                    let _ = write!(out, "<td data-v=\"{n}\">{text}</td>");
                }
                _ => {
                    let _ = write!(out, "<td>{text}</td>");
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn instance_html(
    exp: &Experiment,
    plan: &Plan,
    snap: &PageState,
    objects: &Objects,
    dir: &Path,
    index: usize,
    kept: &mut BTreeSet<String>,
) -> Result<String> {
    let inst = &plan.instances[index];
    let state = snap.states[index];
    let mut out = String::new();
    let _ = write!(
        out,
        "<details id=\"inst-{}\"><summary><span class=\"state\" style=\"background:{}\">{}</span> {} <span class=\"muted\">({})</span></summary>",
        slug(&inst.name),
        state.css(),
        state.label(),
        esc(&inst.name),
        esc(inst.kind.kind())
    );
    if let Some(e) = snap.errors.get(&index) {
        let _ = write!(out, "<pre class=\"error\">{}</pre>", esc(e));
    }
    let mut rows: Vec<(String, String)> = vec![("step".into(), esc(&inst.step))];
    if let Some(r) = &snap.records[index] {
        rows.push(("key".into(), esc(&r.key)));
        rows.push((
            "timing".into(),
            format!("{:.2} s, finished {}", r.seconds, utc(r.finished_unix)),
        ));
        for (k, v) in &r.exec {
            rows.push((k.clone(), esc(&json_text(v))));
        }
        rows.push(("msae version".into(), esc(&r.msae_version)));
    }
    for (param, input) in &inst.inputs {
        let up = &plan.instances[input.instance].name;
        rows.push((
            format!("input {param}"),
            format!(
                "<a href=\"#inst-{}\">{}</a>.{}",
                slug(up),
                esc(up),
                esc(&input.output)
            ),
        ));
    }
    for (param, (written, _)) in &inst.files {
        rows.push((format!("file {param}"), esc(written)));
    }
    out.push_str(&key_values(&rows));
    let params: Vec<(String, String)> = inst
        .params
        .iter()
        .map(|(k, v)| {
            let v = serde_json::to_value(v).unwrap_or_default();
            (k.clone(), esc(&json_text(&v)))
        })
        .collect();
    if !params.is_empty() {
        out.push_str("<p><b>Parameters</b></p>");
        out.push_str(&key_values(&params));
    }
    if let Some(r) = &snap.records[index] {
        if !r.metrics.is_empty() {
            let metrics: Vec<(String, String)> = r
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), esc(&table::cell(v))))
                .collect();
            out.push_str("<p><b>Metrics</b></p>");
            out.push_str(&key_values(&metrics));
        }
        let mut outs = Vec::new();
        for (name, a) in &r.outputs {
            let size = indicatif::HumanBytes(a.size).to_string();
            let cell = match outputs::copy(objects, dir, a, name, kept)? {
                Some(rel) => format!("<a href=\"{}\">{}</a> ({size})", esc(&rel), esc(&rel)),
                None => format!(
                    "{size}, in the store: <code>msae export {} '{}' --output {} --to DIR</code>",
                    esc(&exp.path.display().to_string()),
                    esc(&inst.name),
                    esc(name)
                ),
            };
            outs.push((name.clone(), cell));
        }
        out.push_str("<p><b>Outputs</b></p>");
        out.push_str(&key_values(&outs));
    }
    out.push_str("</details>");
    Ok(out)
}

/// The section linking to each latent explorer (none when no `top_examples` has finished).
fn explorer_html(e: &explorer::Explorers) -> String {
    let mut out = String::new();
    if e.links.is_empty() && e.searches.is_empty() && e.problems.is_empty() {
        return out;
    }
    out.push_str("<h2 id=\"explorer\">Latent explorer</h2><p class=\"muted\">A page of latent cards per <code>top_examples</code> instance: name, frequency, level, activation histogram and top examples; search by name or index, sort by frequency or name cosine.</p><ul>");
    for l in &e.links {
        let _ = write!(
            out,
            "<li><a href=\"{}\">{}</a>: {} latents of <code>{}</code>{}{}</li>",
            esc(&l.href),
            esc(&l.instance),
            l.latents,
            esc(&l.sae),
            if l.names { ", named" } else { "" },
            if l.thumbnails {
                ", with thumbnails"
            } else {
                ""
            }
        );
    }
    out.push_str("</ul>");
    if !e.searches.is_empty() {
        out.push_str("<p class=\"muted\">Concept search: per <code>concept_search</code> instance, per query and edit one row of neighbours per strength, labelled with the step's metrics.</p><ul>");
        for s in &e.searches {
            let _ = write!(
                out,
                "<li><a href=\"{}\">{}</a>: {} queries × {} edit(s) in <code>{}</code>{}</li>",
                esc(&s.href),
                esc(&s.instance),
                s.queries,
                s.edits,
                esc(&s.gallery),
                if s.thumbnails {
                    ", with thumbnails"
                } else {
                    ""
                }
            );
        }
        out.push_str("</ul>");
    }
    for p in &e.problems {
        let _ = write!(out, "<pre class=\"error\">{}</pre>", esc(p));
    }
    out
}

/// Writes the page, its figures, tables and copied outputs into `dir`; returns the page's path.
pub fn write(
    dir: &Path,
    exp: &Experiment,
    plan: &Plan,
    snap: &PageState,
    objects: &Objects,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Whatever this write leaves, it is not a finished run's results until the run says so.
    super::freshness::forget(dir);
    let finished = FinishedRecords {
        plan,
        records: &snap.records,
        objects,
    };
    let (figs, problems) = figures::build(&finished);
    write_figures(dir, &figs)?;
    let explorers = explorer::write_all(dir, &finished);
    let tables = table::build(plan, &snap.records);
    table::write_all(dir, &tables)?;

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} · msae</title>",
        esc(&exp.name)
    );
    if snap.in_progress {
        let _ = write!(
            html,
            "<meta http-equiv=\"refresh\" content=\"{RELOAD_SECONDS}\">"
        );
    }
    let _ = write!(html, "<style>{STYLE}</style></head><body>");
    let _ = write!(html, "<h1>{}</h1>", esc(&exp.name));
    if let Some(d) = &exp.description {
        let _ = write!(html, "<p class=\"description\">{}</p>", esc(d));
    }
    let counts: Vec<String> = State::ALL
        .iter()
        .map(|s| (s, snap.states.iter().filter(|t| *t == s).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {}", s.label()))
        .collect();
    let _ = write!(
        html,
        "<p class=\"muted\">{} instance(s): {}. Experiment file <code>{}</code>. Page written {}.</p>",
        plan.instances.len(),
        counts.join(", "),
        esc(&exp.path.display().to_string()),
        utc(crate::store::now_unix())
    );
    if snap.in_progress {
        let _ = write!(
            html,
            "<p class=\"progress\">A run is in progress: this page shows what has finished so far and reloads every {RELOAD_SECONDS} s.</p>"
        );
    }
    html.push_str("<nav><a href=\"#graph\">Graph</a><a href=\"#figures\">Figures</a>");
    if !explorers.links.is_empty()
        || !explorers.searches.is_empty()
        || !explorers.problems.is_empty()
    {
        html.push_str("<a href=\"#explorer\">Latent explorer</a>");
    }
    html.push_str("<a href=\"#tables\">Tables</a><a href=\"#instances\">Instances</a></nav>");

    html.push_str("<h2 id=\"graph\">Graph</h2><p class=\"muted\">One box per step, one square per instance, coloured by state; a line joins a step to the steps that read its outputs.</p>");
    let _ = write!(
        html,
        "<figure class=\"dag\">{}</figure>",
        inline_svg(&dag::render(plan, &snap.states)?)
    );

    html.push_str("<h2 id=\"figures\">Figures</h2>");
    if figs.is_empty() {
        html.push_str("<p class=\"muted\">No figure yet: none of the finished steps has one.</p>");
    }
    for p in &problems {
        let _ = write!(html, "<pre class=\"error\">{}</pre>", esc(p));
    }
    for f in &figs {
        let _ = write!(
            html,
            "<figure class=\"plot\" id=\"fig-{0}\" data-kind=\"{1}\">{2}<figcaption>{3} · <a href=\"figures/{0}.svg\">figures/{0}.svg</a></figcaption></figure>",
            esc(&f.id),
            esc(&f.kind),
            inline_svg(&f.svg),
            esc(&f.title)
        );
    }

    html.push_str(&explorer_html(&explorers));

    html.push_str("<h2 id=\"tables\">Tables</h2>");
    if tables.is_empty() {
        html.push_str("<p class=\"muted\">No finished instance yet.</p>");
    }
    for t in &tables {
        html.push_str(&table_html(t));
    }

    html.push_str("<h2 id=\"instances\">Instances</h2>");
    let mut kept = BTreeSet::new();
    for inst in &plan.instances {
        html.push_str(&instance_html(
            exp, plan, snap, objects, dir, inst.index, &mut kept,
        )?);
    }
    // Mid-run, instances not reached yet refer to nothing: pruning then would delete the copies
    // of their previous results only to copy them again when they are served.
    if !snap.in_progress {
        outputs::prune(dir, &kept);
    }
    let _ = writeln!(html, "<script>{SORT_SCRIPT}</script></body></html>");
    let path = dir.join("index.html");
    write_atomic(&path, &html)?;
    Ok(path)
}
