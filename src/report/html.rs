//! HTML text helpers and the page's fixed style sheet and script (inline: the page needs no
//! network).

use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG document as an inline element: the XML declaration, if any, dropped.
pub fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// Unix seconds as a UTC date and time.
pub fn utc(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// A two-column table of name/value rows.
pub fn key_values(rows: &[(String, String)]) -> String {
    let mut out = String::from("<table class=\"kv\">");
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    out.push_str("</table>");
    out
}

pub const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 20px 60px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 14px; } .muted { color: #666; } .progress { color: #a35f00; font-weight: bold; }
figure { margin: 18px 0; overflow-x: auto; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 14px; color: #444; }
table.data { border-collapse: collapse; font-size: 13px; margin: 8px 0 20px; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
table.data td:first-child, table.data th:first-child { text-align: left; }
table.data th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.data th[aria-sort=ascending]::after { content: " ▲"; } table.data th[aria-sort=descending]::after { content: " ▼"; }
.scroll { overflow-x: auto; max-width: 100%; }
table.kv { border-collapse: collapse; font-size: 13px; margin: 4px 0 10px; }
table.kv th { text-align: left; padding: 2px 10px 2px 0; font-weight: 600; vertical-align: top; }
table.kv td { padding: 2px 0; font-family: ui-monospace, monospace; word-break: break-all; }
details { border: 1px solid #ddd; border-radius: 4px; margin: 4px 0; padding: 4px 10px; }
summary { cursor: pointer; font-family: ui-monospace, monospace; font-size: 13px; }
.state { display: inline-block; min-width: 64px; padding: 0 6px; border-radius: 3px; color: #000; font-family: system-ui, sans-serif; font-size: 12px; text-align: center; }
pre.error { background: #fff3ee; border-left: 3px solid #d55e00; padding: 6px; white-space: pre-wrap; }
"#;

/// Sorts a table by the clicked column: numbers by value (`data-v`), text in natural order.
pub const SORT_SCRIPT: &str = r#"
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var key = function (row) {
      var c = row.cells[col], v = c.getAttribute('data-v');
      return v !== null && v !== '' && !isNaN(Number(v)) ? Number(v) : c.textContent;
    };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), r;
      if (typeof x === 'number' && typeof y === 'number') r = x - y;
      else r = String(x).localeCompare(String(y), undefined, { numeric: true });
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
