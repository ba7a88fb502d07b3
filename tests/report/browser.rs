//! Driving Debian's Chromium headless: the rendered DOM of a page and screenshots.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Chromium binary (`MSAE_CHROMIUM` or `chromium` on the path), or `None` with a notice.
pub fn chromium() -> Option<PathBuf> {
    let candidate = std::env::var_os("MSAE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"));
    let ok = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(candidate)
    } else {
        eprintln!(
            "skipping the browser checks: Chromium is not installed (`apt-get install chromium`, as .ci/run does)"
        );
        None
    }
}

/// Chromium headless; `budget_ms` of virtual time for the page's scripts (timers fast-forward
/// once the page is idle, so a generous budget costs no real time).
fn headless(chromium: &Path, profile: &Path, budget_ms: u32) -> Command {
    let mut c = Command::new("timeout");
    c.arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM after the page's scripts ran.
pub fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> String {
    let out = headless(chromium, profile, 20_000)
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// A PNG screenshot of the page at the given window size.
pub fn screenshot(chromium: &Path, page: &Path, png: &Path, size: (u32, u32), profile: &Path) {
    let out = headless(chromium, profile, 5_000)
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success() && png.exists(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Width and height from a PNG's header.
pub fn png_size(png: &Path) -> (u32, u32) {
    let bytes = std::fs::read(png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Measures the page in the browser: appended to a copy of the page, it marks every figure's
/// SVG with the number of its elements that have a non-empty box (`data-drawn`) and its size
/// on screen, every table with its row count, and sorts the first table by a numeric column
/// through a click, recording the column's values afterwards (`data-sorted`).
pub const PROBE: &str = r#"<script>
document.querySelectorAll('figure svg').forEach(function (svg) {
  var n = 0;
  svg.querySelectorAll('polyline,rect,circle,polygon,line,text').forEach(function (e) {
    var b = e.getBBox();
    if (b.width > 0 || b.height > 0) n++;
  });
  var r = svg.getBoundingClientRect();
  svg.setAttribute('data-drawn', n);
  svg.setAttribute('data-box', Math.round(r.width) + 'x' + Math.round(r.height));
});
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.setAttribute('data-rows', t.tBodies[0].rows.length);
  var first = t.tBodies[0].rows[0];
  if (!first) return;
  for (var c = 0; c < first.cells.length; c++) {
    if (first.cells[c].hasAttribute('data-v')) {
      t.tHead.rows[0].cells[c].click();
      var vals = Array.prototype.map.call(t.tBodies[0].rows, function (r) {
        return Number(r.cells[c].getAttribute('data-v'));
      });
      t.setAttribute('data-sorted', JSON.stringify(vals));
      break;
    }
  }
});
</script>"#;

/// A copy of `index.html` with [`PROBE`] appended, beside it (so relative links still work).
pub fn probe_copy(index: &Path) -> PathBuf {
    let html = std::fs::read_to_string(index).unwrap();
    let probe = index.with_file_name("probe.html");
    std::fs::write(&probe, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    probe
}
