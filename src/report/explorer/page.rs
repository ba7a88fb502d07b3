//! The explorer's HTML page: a header that says what is shown and where it comes from, the
//! search and sort controls, an empty grid the script fills, the page's settings as inline JSON,
//! and the script and style sheet inline. No latent data: that is in the sidecar files, so the
//! page's size does not depend on the SAE's.

use std::fmt::Write as _;

use crate::report::html::esc;

/// The explorer's script and style sheet, inlined into every explorer page.
pub const SCRIPT: &str = include_str!("explorer.js");
pub const STYLE: &str = include_str!("explorer.css");

/// What the header and the script need to know about one explorer.
pub struct PageInfo {
    pub experiment: String,
    pub instance: String,
    pub latents: usize,
    /// Examples `top_examples` kept per latent.
    pub per_latent: usize,
    pub rows: u64,
    pub code: String,
    /// `instance.output` of the SAE and of the ranked matrix.
    pub sae: String,
    pub data: String,
    pub names_from: Option<String>,
    pub concepts_from: Option<String>,
    /// Where the examples' pictures or texts come from, as a sentence part.
    pub examples_from: String,
    pub thumbs: bool,
    pub levels: Option<Vec<usize>>,
    pub histogram: super::load::HistogramAxis,
    /// Fingerprint of the sources (see `Sources::fingerprint`).
    pub fingerprint: String,
}

/// The marker of a page written from `fingerprint`.
pub fn marker(fingerprint: &str) -> String {
    format!("<meta name=\"msae-explorer\" content=\"{fingerprint}\">")
}

/// A count with thousands separators (6,144).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// JSON inside a `<script>` element: `</` cannot close it.
pub fn inline_json(v: &serde_json::Value) -> String {
    v.to_string().replace("</", "<\\/")
}

pub fn render(p: &PageInfo) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">{}<title>Latents of {} · {} · msae</title><style>{STYLE}</style></head><body>",
        marker(&p.fingerprint),
        esc(&p.instance),
        esc(&p.experiment)
    );
    let _ = write!(
        h,
        "<header><p><a href=\"../../index.html\">← report of {}</a></p><h1>Latent explorer: {}</h1>",
        esc(&p.experiment),
        esc(&p.instance)
    );
    let mut about = format!(
        "{} latents of <code>{}</code>, each with the {} rows of <code>{}</code> ({} rows, {} code) that activate it most; the first {} are shown{}.",
        thousands(p.latents as u64),
        esc(&p.sae),
        p.per_latent,
        esc(&p.data),
        thousands(p.rows),
        esc(&p.code),
        super::chunks::SHOWN.min(p.per_latent),
        p.examples_from
    );
    match &p.names_from {
        Some(n) => {
            let _ = write!(
                about,
                " Names and their cosine from <code>{}</code>.",
                esc(n)
            );
        }
        None => about.push_str(" No `name` step of this SAE has finished: latents have no names."),
    }
    if let Some(c) = &p.concepts_from {
        let _ = write!(about, " Valid concepts (✓) from <code>{}</code>.", esc(c));
    }
    let _ = write!(h, "<p class=\"muted\">{about}</p>");
    h.push_str("<div class=\"controls\"><input id=\"q\" type=\"search\" autocomplete=\"off\" aria-label=\"search by name or index\" placeholder=\"");
    h.push_str(if p.names_from.is_some() {
        "name, or #index"
    } else {
        "#index"
    });
    h.push_str("\"><label>sort by <select id=\"sort\"><option value=\"index\">index</option><option value=\"freq\">frequency</option>");
    if p.names_from.is_some() {
        h.push_str(
            "<option value=\"cos\">name cosine</option><option value=\"name\">name</option>",
        );
    }
    h.push_str("</select></label>");
    if p.concepts_from.is_some() {
        h.push_str("<label><input type=\"checkbox\" id=\"concepts\"> concepts only</label>");
    }
    h.push_str("<label><input type=\"checkbox\" id=\"firing\"> firing only</label><span id=\"status\" class=\"muted\"></span></div></header>");
    h.push_str("<main id=\"grid\"></main><noscript>The explorer draws its cards with JavaScript.</noscript>");
    let config = serde_json::json!({
        "hist": p.histogram,
        "levels": p.levels,
        "thumbs": p.thumbs,
        "concepts": p.concepts_from,
    });
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"explorer-config\">{}</script><script>{SCRIPT}</script><script src=\"latents.js\"></script></body></html>",
        inline_json(&config)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(6144), "6,144");
        assert_eq!(thousands(24_576_000), "24,576,000");
    }

    #[test]
    fn inline_json_cannot_close_its_script() {
        let v = serde_json::json!({ "concepts": "a</script><b" });
        assert_eq!(inline_json(&v), r#"{"concepts":"a<\/script><b"}"#);
    }
}
