//! The latent explorer end to end: a TopK SAE of 6,144 latents trained on planted-feature data,
//! named against a vocabulary, its concepts found and its top examples ranked; the report then
//! has an explorer page whose cards render in headless Chromium, with thumbnails, search by name
//! and by index, sorting by frequency and name cosine, cards drawn lazily as the page scrolls,
//! and the page and its chunk files within the bounds the README states.
//!
//! Thumbnails come from a `thumbnails` output of the step that produced the ranked matrix. Here
//! that step is an `import`, which writes none, so the test builds the archive in the format
//! `embed` writes (one `<row>.jpg` per row, in row order, at most 64 px) and adds it to the
//! import's record in the store before `msae report` runs. Each row's thumbnail is a mosaic of
//! the colours of the features planted in it, so a latent that learned a feature shows its
//! colour. A screenshot goes to `<target>/tmp/report/explorer.png`.

use crate::common;
use crate::report::browser;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{output_json, write_npy, Env, Gauss};

/// The bounds the README and docs/report.md state.
const PAGE_BOUND: u64 = 32 << 10;
const CHUNK_BOUND: u64 = 512 << 10;
const CHUNK_LATENTS: usize = 256;

const LATENTS: usize = 6144;
const ROWS: usize = 2000;
const DIM: usize = 32;

/// The planted features: each a colour with its name (the vocabulary words of the features).
const COLOURS: [(&str, [u8; 3]); 24] = [
    ("crimson", [220, 20, 60]),
    ("orange", [255, 140, 0]),
    ("gold", [255, 200, 0]),
    ("olive", [128, 128, 0]),
    ("lime", [50, 205, 50]),
    ("forest", [34, 110, 34]),
    ("teal", [0, 128, 128]),
    ("cyan", [0, 200, 220]),
    ("sky", [120, 190, 240]),
    ("navy", [20, 30, 120]),
    ("indigo", [75, 0, 130]),
    ("violet", [150, 80, 220]),
    ("magenta", [220, 0, 180]),
    ("pink", [255, 150, 190]),
    ("brown", [120, 70, 20]),
    ("tan", [210, 180, 140]),
    ("black", [10, 10, 10]),
    ("grey", [128, 128, 128]),
    ("white", [250, 250, 250]),
    ("maroon", [110, 0, 20]),
    ("salmon", [250, 128, 114]),
    ("mint", [160, 240, 200]),
    ("plum", [140, 60, 110]),
    ("rust", [180, 70, 30]),
];

/// Vocabulary rows besides the features: random directions with ordinary words.
const OTHER_WORDS: [&str; 16] = [
    "stone", "river", "cloud", "paper", "engine", "garden", "window", "bridge", "candle", "forest",
    "harbor", "ladder", "mirror", "pepper", "saddle", "tunnel",
];

const EXPERIMENT: &str = r#"
[experiment]
name = "explore"
description = "A wide TopK SAE on rows made of planted colour features, for the latent explorer."

[steps.data]
kind = "import"
path = "rows.npy"
labels = "labels.txt"

[steps.attr]
kind = "import"
path = "rows.npy"
labels = "groups.txt"

[steps.vocab]
kind = "import"
path = "vocab.npy"
texts = "words.txt"

[steps.sae]
kind = "train"
data = "data"
arch = "topk"
k = 8
n_latents = 6144
epochs = 1
batch_size = 128
lr = 0.004

[steps.names]
kind = "name"
sae = "sae"
vocab = "vocab"
words = "vocab.texts"

[steps.concepts]
kind = "concepts"
sae = "sae"
names = "names.names"
rule = "cosine"
min_cosine = 0.5

[steps.top]
kind = "top_examples"
sae = "sae"
data = "data"
n = 16

[steps.search]
kind = "concept_search"
sae = "sae"
queries = "data"
query_rows = [0, 1, 2]
gallery = "data"
gallery_labels = "data.labels"
names = "names.names"
edits = ["add 0", "scale 1"]
strength_unit = "code"
strengths = [0.0, 4.0, 16.0]
k = 6

[steps.probe]
kind = "linear_probe"
sae = "sae"
train = "data"
train_labels = "data.labels"
eval = "data"
eval_labels = "data.labels"
max_epochs = 8
batch_size = 256
lr = 0.01

[steps.bias]
kind = "bias"
sae = "sae"
probe = "probe.probe"
data = "data"
labels = "data.labels"
groups = "attr.labels"
names = "names.names"
select = "probe"
target = "crimson"
n_concepts = 3
scales = [0.0, 2.0]
controls = 4
bootstrap = 100
"#;

// ---- the data -------------------------------------------------------------------------------

fn unit(g: &mut Gauss) -> Vec<f32> {
    let v: Vec<f64> = (0..DIM).map(|_| g.normal()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / norm) as f32).collect()
}

/// Rows of one to three planted features each (with their weights), plus a little noise.
fn rows(g: &mut Gauss, features: &[Vec<f32>]) -> (Vec<f32>, Vec<Vec<(usize, f64)>>) {
    let mut values = Vec::with_capacity(ROWS * DIM);
    let mut planted = Vec::with_capacity(ROWS);
    for _ in 0..ROWS {
        let count = 1 + (g.uniform() * 3.0) as usize;
        let mut chosen: Vec<(usize, f64)> = Vec::new();
        while chosen.len() < count {
            let f = (g.uniform() * features.len() as f64) as usize;
            if chosen.iter().all(|(c, _)| *c != f) {
                chosen.push((f, 0.5 + 1.5 * g.uniform()));
            }
        }
        let mut row = vec![0f64; DIM];
        for (f, w) in &chosen {
            for (r, x) in row.iter_mut().zip(&features[*f]) {
                *r += w * *x as f64;
            }
        }
        values.extend(row.iter().map(|r| (r + 0.05 * g.normal()) as f32));
        planted.push(chosen);
    }
    (values, planted)
}

// ---- thumbnails: baseline JPEGs of flat 8×8 blocks --------------------------------------------

/// Bits of a JPEG scan, 0xFF bytes stuffed with 0x00.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                if self.acc == 0xff {
                    self.out.push(0);
                }
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1);
        }
        self.out
    }
}

/// A baseline JPEG of `side`×`side` pixels (a multiple of 8) whose 8×8 blocks are the flat
/// colours `blocks` in raster order. A flat block has only its DC coefficient, 8·(level − 128)
/// with a quantiser of 1, so the file needs two tiny Huffman tables of its own: DC categories
/// 0–11 as 4-bit codes and an AC table with the end-of-block code alone.
fn mosaic_jpeg(side: usize, blocks: &[[u8; 3]]) -> Vec<u8> {
    assert_eq!(blocks.len(), (side / 8) * (side / 8));
    let mut out = vec![0xff, 0xd8];
    out.extend([
        0xff, 0xe0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);
    out.extend([0xff, 0xdb, 0, 67, 0]);
    out.extend([1u8; 64]);
    let s = side as u16;
    out.extend([0xff, 0xc0, 0, 17, 8]);
    out.extend(s.to_be_bytes());
    out.extend(s.to_be_bytes());
    out.push(3);
    for id in 1..=3u8 {
        out.extend([id, 0x11, 0]);
    }
    let mut dht = vec![0x00];
    dht.extend((1..=16).map(|len| if len == 4 { 12u8 } else { 0 }));
    dht.extend(0..12u8);
    dht.push(0x10);
    dht.extend((1..=16).map(|len| (len == 1) as u8));
    dht.push(0x00);
    out.extend([0xff, 0xc4]);
    out.extend(((dht.len() + 2) as u16).to_be_bytes());
    out.extend(dht);
    out.extend([0xff, 0xda, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 63, 0]);
    let mut bits = Bits::default();
    let mut previous = [0i32; 3];
    for &[r, g, b] in blocks {
        let (r, g, b) = (r as f64, g as f64, b as f64);
        let ycc = [
            0.299 * r + 0.587 * g + 0.114 * b,
            128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b,
            128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b,
        ];
        for c in 0..3 {
            let dc = ((ycc[c] - 128.0) * 8.0).round() as i32;
            let diff = dc - previous[c];
            previous[c] = dc;
            let category = 32 - diff.unsigned_abs().leading_zeros();
            bits.put(category, 4);
            if category > 0 {
                let v = if diff < 0 { diff - 1 } else { diff };
                bits.put(v as u32 & ((1 << category) - 1), category);
            }
            bits.put(0, 1);
        }
    }
    out.extend(bits.finish());
    out.extend([0xff, 0xd9]);
    out
}

/// A row's thumbnail: 8×8 blocks of 8 pixels, each the colour of one of its features, drawn in
/// proportion to the features' weights.
fn thumbnail(g: &mut Gauss, planted: &[(usize, f64)]) -> Vec<u8> {
    let total: f64 = planted.iter().map(|(_, w)| w).sum();
    let blocks: Vec<[u8; 3]> = (0..64)
        .map(|_| {
            let mut pick = g.uniform() * total;
            let mut colour = COLOURS[planted[0].0 % COLOURS.len()].1;
            for (f, w) in planted {
                colour = COLOURS[f % COLOURS.len()].1;
                if pick < *w {
                    break;
                }
                pick -= w;
            }
            colour
        })
        .collect();
    mosaic_jpeg(64, &blocks)
}

/// The archive `embed` writes: one `<row>.jpg` member per row, in row order.
fn write_thumbnails(path: &Path, thumbs: &[Vec<u8>]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (row, jpeg) in thumbs.iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_size(jpeg.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{row}.jpg"), jpeg.as_slice())
            .unwrap();
    }
    b.finish().unwrap();
}

/// Adds `thumbnails` (and `items`) to the record of the `data` import, as if it had written
/// them.
fn attach_thumbnails(env: &Env, tar: &Path, items: &Path) {
    let store = msae::store::Store::open(&env.cache(), "test writer", true).unwrap();
    let mut record = store
        .index
        .latest("explore", "data")
        .unwrap()
        .expect("the import finished");
    for (name, file) in [("thumbnails", tar), ("items", items)] {
        let (hash, size) = store.objects.insert(file).unwrap();
        record
            .outputs
            .insert(name.into(), msae::store::ArtifactRecord { hash, size });
    }
    store.index.put(&record).unwrap();
}

// ---- the run, shared by the tests ----------------------------------------------------------

struct Explored {
    env: Env,
    dir: PathBuf,
    names: Vec<serde_json::Value>,
    top: serde_json::Value,
    concepts: BTreeSet<u64>,
}

fn explored() -> &'static Explored {
    static RUN: OnceLock<Explored> = OnceLock::new();
    RUN.get_or_init(|| {
        let env = Env::new();
        let mut g = Gauss(17);
        let features: Vec<Vec<f32>> = (0..COLOURS.len()).map(|_| unit(&mut g)).collect();
        let (values, planted) = rows(&mut g, &features);
        write_npy(&env.path("rows.npy"), ROWS, DIM, &values);
        let mut vocab: Vec<f32> = features.concat();
        let mut words: Vec<String> = COLOURS.iter().map(|(n, _)| n.to_string()).collect();
        for w in OTHER_WORDS {
            vocab.extend(unit(&mut g));
            words.push(w.to_string());
        }
        write_npy(&env.path("vocab.npy"), words.len(), DIM, &vocab);
        std::fs::write(env.path("words.txt"), words.join("\n") + "\n").unwrap();
        let thumbs: Vec<Vec<u8>> = planted.iter().map(|p| thumbnail(&mut g, p)).collect();
        write_thumbnails(&env.path("thumbnails.tar"), &thumbs);
        let items: String = (0..ROWS).map(|r| format!("mosaics/{r:05}.png\n")).collect();
        std::fs::write(env.path("items.txt"), items).unwrap();
        // A row's class is its heaviest feature's colour; its group, one feature or several.
        let mut labels = String::new();
        let mut groups = String::new();
        for p in &planted {
            let heaviest = p.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
            labels.push_str(COLOURS[heaviest].0);
            labels.push('\n');
            groups.push_str(if p.len() == 1 { "single\n" } else { "mixed\n" });
        }
        std::fs::write(env.path("labels.txt"), labels).unwrap();
        std::fs::write(env.path("groups.txt"), groups).unwrap();

        let exp = env.write("explore.toml", EXPERIMENT);
        let summary = env.run_json(&exp);
        assert_eq!(summary["failed"], 0, "{summary}");
        attach_thumbnails(&env, &env.path("thumbnails.tar"), &env.path("items.txt"));
        common::assert_succeeds_with(&env.msae(&["report", exp.to_str().unwrap()]), &[]);

        let names = output_json(&env, "explore", "names", "names")
            .as_array()
            .unwrap()
            .clone();
        let concepts = output_json(&env, "explore", "concepts", "concepts")
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["latent"].as_u64().unwrap())
            .collect();
        let top = output_json(&env, "explore", "top", "latents");
        Explored {
            dir: env.path("results/explore"),
            env,
            names,
            top,
            concepts,
        }
    })
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- files ---------------------------------------------------------------------------------

#[test]
fn the_page_and_its_chunks_stay_within_the_stated_bounds() {
    let e = explored();
    let folder = e.dir.join("explorer/top");
    let page = std::fs::read_to_string(folder.join("index.html")).unwrap();
    let page_bytes = page.len() as u64;
    println!("explorer page: {page_bytes} bytes (bound {PAGE_BOUND})");
    assert!(page_bytes < PAGE_BOUND, "{page_bytes} bytes");
    for external in ["src=\"http", "href=\"http", "url(http", "@import", "<link"] {
        assert!(
            !page.contains(external),
            "the page needs the network: {external}"
        );
    }
    let main = std::fs::read_to_string(e.dir.join("index.html")).unwrap();
    assert!(
        main.contains("href=\"explorer/top/index.html\""),
        "the report page links to the explorer"
    );
    let mut chunks: Vec<(String, u64)> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|f| f.unwrap())
        .filter(|f| f.file_name().to_string_lossy().starts_with("chunk-"))
        .map(|f| {
            (
                f.file_name().to_string_lossy().to_string(),
                f.metadata().unwrap().len(),
            )
        })
        .collect();
    chunks.sort();
    let largest = chunks.iter().map(|c| c.1).max().unwrap();
    let total: u64 = chunks.iter().map(|c| c.1).sum();
    let list = std::fs::metadata(folder.join("latents.js")).unwrap().len();
    println!(
        "{} chunks, largest {largest} bytes, {total} in all; latent list {list} bytes",
        chunks.len()
    );
    assert!(largest <= CHUNK_BOUND, "a chunk of {largest} bytes");
    // Every latent is in exactly one chunk, in order, at most CHUNK_LATENTS a chunk.
    let mut seen = Vec::new();
    for (i, (name, _)) in chunks.iter().enumerate() {
        assert_eq!(name, &format!("chunk-{i:04}.js"));
        let text = std::fs::read_to_string(folder.join(name)).unwrap();
        let prefix = format!("msaeExplorer.chunk({i},");
        let json = text
            .strip_prefix(&prefix)
            .and_then(|t| t.trim_end().strip_suffix(");"))
            .expect("a chunk script");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let latents = v["latents"].as_array().unwrap();
        assert!(latents.len() <= CHUNK_LATENTS);
        seen.extend(latents.iter().map(|l| l["l"].as_u64().unwrap() as usize));
        // Every shown row of a latent that fires has its thumbnail, as a JPEG data URI.
        for l in latents {
            for ex in l["t"].as_array().unwrap() {
                let row = ex[0].as_u64().unwrap().to_string();
                let uri = v["thumbs"][&row].as_str().expect("a thumbnail");
                assert!(uri.starts_with("data:image/jpeg;base64,/9j/"), "{row}");
                assert_eq!(
                    v["items"][&row].as_str().unwrap(),
                    format!("mosaics/{:05}.png", row.parse::<usize>().unwrap())
                );
            }
        }
    }
    assert_eq!(seen, (0..LATENTS).collect::<Vec<_>>());
    // The page loads the list and runs offline; it is not rewritten when nothing changed.
    let modified = std::fs::metadata(folder.join("chunk-0000.js"))
        .unwrap()
        .modified()
        .unwrap();
    let exp = e.env.path("explore.toml");
    common::assert_succeeds_with(&e.env.msae(&["report", exp.to_str().unwrap()]), &[]);
    let again = std::fs::metadata(folder.join("chunk-0000.js"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(modified, again, "an unchanged explorer was rewritten");
}

// ---- in the browser ------------------------------------------------------------------------

/// Driven inside a copy of the explorer page: waits for the visible cards (and their images),
/// records them, then sorts, searches and scrolls through the page's own controls, recording
/// the cards after each step. The record is written as JSON into `<pre id="probe">`.
const PROBE: &str = r#"<script>
(function () {
  var log = {}, q = document.getElementById('q'), sort = document.getElementById('sort');
  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll('#grid .card'))
      .sort(function (a, b) { return a.dataset.pos - b.dataset.pos; });
  }
  function visible(e) {
    var r = e.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight && r.right > 0 && r.left < window.innerWidth;
  }
  function ready() {
    var c = cards();
    return c.length > 0 && c.every(function (e) {
      return e.dataset.full === '1' && Array.prototype.every.call(
        e.querySelectorAll('img'), function (i) { return i.complete; });
    });
  }
  function record(name) {
    var c = cards();
    log[name] = {
      status: document.getElementById('status').textContent,
      cards: c.map(function (e) {
        return { latent: Number(e.dataset.latent), count: Number(e.dataset.count),
                 cos: e.dataset.cos === undefined ? null : Number(e.dataset.cos),
                 name: e.dataset.name || null, visible: visible(e),
                 concept: !!e.querySelector('.concept'), bars: e.querySelectorAll('svg.hist rect').length,
                 images: Array.prototype.map.call(e.querySelectorAll('img'), function (i) { return i.naturalWidth; }) };
      }),
      chunkScripts: document.querySelectorAll('script[src^="chunk-"]').length
    };
  }
  function set(input, value, event) { input.value = value; input.dispatchEvent(new Event(event)); }
  var steps = [
    function () { record('initial'); set(sort, 'freq', 'change'); },
    function () { record('frequency'); set(sort, 'cos', 'change'); },
    function () { record('cosine'); set(sort, 'index', 'change'); set(q, NAME, 'input'); },
    function () { record('name'); set(q, '#4321', 'input'); },
    function () {
      record('index'); set(q, '', 'input');
      // To the row of cards that holds latent 3000 (cards of 274 px, gaps of 12 px).
      var grid = document.getElementById('grid');
      var cols = Math.max(1, Math.floor((grid.clientWidth + 12) / 286));
      log.columns = cols;
      window.scrollTo(0, grid.getBoundingClientRect().top + window.scrollY + Math.floor(3000 / cols) * 268);
    },
    function () { record('scrolled'); }
  ];
  var step = 0, tries = 0;
  (function next() {
    if (step === steps.length) {
      var pre = document.createElement('pre');
      pre.id = 'probe';
      pre.textContent = JSON.stringify(log);
      document.body.appendChild(pre);
      return;
    }
    // Scrolling redraws on the page's next tick: the scrolled record waits for cards on screen.
    var settled = ready() && (step < steps.length - 1 || cards().some(visible));
    if (settled || ++tries > 600) { tries = 0; steps[step++](); }
    setTimeout(next, 20);
  })();
})();
</script>"#;

fn probe_result(dom: &str) -> serde_json::Value {
    let start = dom.find("<pre id=\"probe\">").expect("the probe finished") + 16;
    let end = dom[start..].find("</pre>").unwrap() + start;
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap()
}

/// Latents of the name output whose name contains `needle` (case-insensitively).
fn named_like(names: &[serde_json::Value], needle: &str) -> BTreeSet<u64> {
    names
        .iter()
        .filter(|n| n["word"].as_str().unwrap().to_lowercase().contains(needle))
        .map(|n| n["latent"].as_u64().unwrap())
        .collect()
}

fn cards(log: &serde_json::Value, step: &str) -> Vec<serde_json::Value> {
    log[step]["cards"].as_array().unwrap().clone()
}

fn field(cards: &[serde_json::Value], name: &str) -> Vec<f64> {
    cards.iter().map(|c| c[name].as_f64().unwrap()).collect()
}

#[test]
fn cards_render_search_sort_and_scroll_in_a_browser() {
    let e = explored();
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let rows = e.top["rows"].as_f64().unwrap();
    let count: Vec<u64> = e.top["latents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["frequency"].as_f64().unwrap() * rows).round() as u64)
        .collect();
    // The name searched for: the most frequent latent's, a colour word.
    let busiest = (0..LATENTS)
        .max_by_key(|&j| (count[j], std::cmp::Reverse(j)))
        .unwrap();
    let name = e.names[busiest]["word"].as_str().unwrap().to_string();
    let expected_named = named_like(&e.names, &name);
    let folder = e.dir.join("explorer/top");
    let page = std::fs::read_to_string(folder.join("index.html")).unwrap();
    let probe = folder.join("probe.html");
    let script = PROBE.replace("NAME", &serde_json::to_string(&name).unwrap());
    std::fs::write(&probe, page.replace("</body>", &format!("{script}</body>"))).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let dom = browser::dump_dom(&chromium, &probe, profile.path());
    let log = probe_result(&dom);
    let chunk_files = std::fs::read_dir(&folder)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("chunk-")
        })
        .count();

    // Index order: the first latents, drawn lazily (a few rows of cards, a few chunks loaded).
    let initial = cards(&log, "initial");
    assert!(
        !initial.is_empty() && initial.len() < 60,
        "{} cards",
        initial.len()
    );
    let latents: Vec<u64> = initial
        .iter()
        .map(|c| c["latent"].as_u64().unwrap())
        .collect();
    assert_eq!(latents, (0..initial.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        log["initial"]["status"],
        format!("showing 6,144 of 6,144 latents")
    );
    for c in &initial {
        let j = c["latent"].as_u64().unwrap() as usize;
        assert_eq!(c["count"].as_u64().unwrap(), count[j], "latent {j}");
        assert_eq!(c["name"], e.names[j]["word"], "latent {j}");
        assert_eq!(
            c["concept"].as_bool().unwrap(),
            e.concepts.contains(&(j as u64))
        );
    }
    let loaded = log["initial"]["chunkScripts"].as_u64().unwrap() as usize;
    assert!(
        loaded >= 1 && loaded < chunk_files,
        "{loaded} of {chunk_files} chunks loaded"
    );

    // Frequency: descending, starting at the busiest latent; every visible card's thumbnails
    // decoded (one per shown example), its histogram drawn.
    let by_freq = cards(&log, "frequency");
    let counts = field(&by_freq, "count");
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    assert_eq!(by_freq[0]["latent"].as_u64().unwrap() as usize, busiest);
    let mut images = 0;
    for c in by_freq.iter().filter(|c| c["visible"].as_bool().unwrap()) {
        let j = c["latent"].as_u64().unwrap() as usize;
        let shown = e.top["latents"][j]["top"].as_array().unwrap().len().min(8);
        let widths: Vec<u64> = c["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        assert_eq!(widths.len(), shown, "latent {j}");
        assert!(widths.iter().all(|&w| w == 64), "latent {j}: {widths:?}");
        assert!(
            c["bars"].as_u64().unwrap() > 0,
            "latent {j} has no histogram"
        );
        images += widths.len();
    }
    assert!(images >= 16, "only {images} thumbnails seen");

    // Name cosine: descending.
    let cosines = field(&cards(&log, "cosine"), "cos");
    assert!(cosines.windows(2).all(|w| w[0] >= w[1]), "{cosines:?}");
    let best_cos = e
        .names
        .iter()
        .map(|n| (n["score"].as_f64().unwrap() * 1000.0).round() / 1000.0)
        .fold(f64::MIN, f64::max);
    assert_eq!(cosines[0], best_cos);

    // Search by name: the status counts every match.
    let named = cards(&log, "name");
    assert_eq!(
        log["name"]["status"],
        format!("showing {} of 6,144 latents", expected_named.len())
    );
    // In index order, the cards drawn are the first matches.
    let drawn: Vec<u64> = named
        .iter()
        .map(|c| c["latent"].as_u64().unwrap())
        .collect();
    assert!(!drawn.is_empty());
    let first: Vec<u64> = expected_named.iter().copied().take(drawn.len()).collect();
    assert_eq!(drawn, first);
    // Search by index: the one latent.
    let one = cards(&log, "index");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["latent"], 4321);
    assert_eq!(log["index"]["status"], "showing 1 of 6,144 latents");

    // Scrolled to the row of latent 3000: the cards there are drawn, with the data of their
    // own chunk, and the cards of the top are gone.
    let scrolled = cards(&log, "scrolled");
    let latents: Vec<u64> = scrolled
        .iter()
        .map(|c| c["latent"].as_u64().unwrap())
        .collect();
    assert!(scrolled.len() < 60, "{} cards", scrolled.len());
    let visible: Vec<u64> = scrolled
        .iter()
        .filter(|c| c["visible"].as_bool().unwrap())
        .map(|c| c["latent"].as_u64().unwrap())
        .collect();
    assert!(visible.contains(&3000), "visible {visible:?}");
    assert!(
        latents.iter().all(|&l| (2900..3100).contains(&l)),
        "{latents:?}"
    );
    for c in &scrolled {
        let j = c["latent"].as_u64().unwrap() as usize;
        assert_eq!(c["count"].as_u64().unwrap(), count[j], "latent {j}");
        assert_eq!(c["bars"].as_u64().unwrap() > 0, count[j] > 0, "latent {j}");
    }
    println!(
        "{} columns; cards: {} at the top, {} scrolled to latents {}..={}; {} thumbnails decoded; {} chunk scripts of {chunk_files}",
        log["columns"],
        initial.len(),
        scrolled.len(),
        latents.first().unwrap(),
        latents.last().unwrap(),
        images,
        log["scrolled"]["chunkScripts"]
    );
}

#[test]
fn explorer_screenshot_is_kept() {
    let e = explored();
    let Some(chromium) = browser::chromium() else {
        return;
    };
    // The busiest latents first, as a person would look at them.
    let folder = e.dir.join("explorer/top");
    let page = std::fs::read_to_string(folder.join("index.html")).unwrap();
    let shot = folder.join("screenshot.html");
    let script = "<script>var s = document.getElementById('sort'); s.value = 'freq'; s.dispatchEvent(new Event('change'));</script>";
    std::fs::write(&shot, page.replace("</body>", &format!("{script}</body>"))).unwrap();
    let png = artifacts().join("explorer.png");
    let profile = tempfile::tempdir().unwrap();
    browser::screenshot(&chromium, &shot, &png, (1200, 800), profile.path());
    assert_eq!(browser::png_size(&png), (1200, 800));
    let bytes = std::fs::metadata(&png).unwrap().len();
    println!("screenshot {} ({bytes} bytes)", png.display());
    assert!(bytes > 20_000, "a nearly empty screenshot: {bytes} bytes");
}

#[test]
fn without_thumbnails_or_names_the_cards_show_the_producers_texts() {
    // The same SAE's explorer in a smaller experiment: texts of the producer instead of
    // thumbnails, no `name` step.
    let env = Env::new();
    let mut g = Gauss(3);
    let values: Vec<f32> = (0..300 * 8).map(|_| g.normal() as f32).collect();
    write_npy(&env.path("m.npy"), 300, 8, &values);
    let texts: String = (0..300).map(|r| format!("line <{r}>\n")).collect();
    std::fs::write(env.path("texts.txt"), texts).unwrap();
    let exp = env.write(
        "small.toml",
        r#"
[experiment]
name = "small"

[steps.data]
kind = "import"
path = "m.npy"
texts = "texts.txt"

[steps.sae]
kind = "train"
data = "data"
arch = "topk"
k = 2
n_latents = 40
epochs = 1
batch_size = 32

[steps.top]
kind = "top_examples"
sae = "sae"
data = "data"
n = 3

[steps.search]
kind = "concept_search"
sae = "sae"
queries = "data"
query_rows = [5, 6]
gallery = "data"
edits = ["add 0"]
strength_unit = "code"
strengths = [0.0, 1.0]
k = 3
"#,
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let folder = env.path("results/small/explorer/top");
    let page = std::fs::read_to_string(folder.join("index.html")).unwrap();
    assert!(
        page.contains("No `name` step of this SAE has finished"),
        "{page}"
    );
    assert!(page.contains("as texts from <code>data.texts</code>"));
    assert!(
        !page.contains("value=\"cos\""),
        "no cosine sort without names"
    );
    let chunk = std::fs::read_to_string(folder.join("chunk-0000.js")).unwrap();
    let doc = output_json(&env, "small", "top", "latents");
    let texts: BTreeMap<String, String> = doc["latents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["top"].as_array().unwrap().clone())
        .map(|ex| {
            let row = ex["row"].as_u64().unwrap();
            (row.to_string(), format!("line <{row}>"))
        })
        .collect();
    assert!(!texts.is_empty());
    let json = chunk
        .strip_prefix("msaeExplorer.chunk(0,")
        .and_then(|t| t.trim_end().strip_suffix(");"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    for (row, text) in &texts {
        assert_eq!(v["texts"][row].as_str(), Some(text.as_str()), "row {row}");
    }
    assert!(v["thumbs"].as_object().unwrap().is_empty());

    // The concept search over the same texts shows each neighbour's text, and the query's own.
    let search =
        std::fs::read_to_string(env.path("results/small/explorer/search/index.html")).unwrap();
    assert!(
        search.contains("as texts from <code>data.texts</code>"),
        "{search}"
    );
    let chunk =
        std::fs::read_to_string(env.path("results/small/explorer/search/chunk-0000.js")).unwrap();
    let v: serde_json::Value = serde_json::from_str(
        chunk
            .strip_prefix("msaeSearch.chunk(0,")
            .and_then(|t| t.trim_end().strip_suffix(");"))
            .unwrap(),
    )
    .unwrap();
    let results = output_json(&env, "small", "search", "results");
    let mut shown = 0;
    for r in results["edits"][0]["results"].as_array().unwrap() {
        for q in r["queries"].as_array().unwrap() {
            let row = q["row"].as_u64().unwrap();
            assert_eq!(v["qtexts"][row.to_string()], format!("line <{row}>"));
            for n in q["neighbours"].as_array().unwrap() {
                let row = n["row"].as_u64().unwrap();
                assert_eq!(v["texts"][row.to_string()], format!("line <{row}>"));
                shown += 1;
            }
        }
    }
    assert_eq!(shown, 2 * 2 * 3);
}

/// The members of a tar archive by name.
fn tar_members(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn thumbnails_an_embed_step_writes_reach_the_cards() {
    use base64::Engine as _;
    let env = Env::new();
    common::tiny_clip_byte_level(&env.path("clip"));
    common::write_folder(&env.path("photos"), &common::pictures(24));
    let exp = env.write(
        "pictures.toml",
        r#"
[experiment]
name = "pictures"

[steps.photos]
kind = "embed"
model = "clip"
source = "images"
path = "photos"

[steps.sae]
kind = "train"
data = "photos"
arch = "topk"
k = 2
n_latents = 16
epochs = 1
batch_size = 8

[steps.top]
kind = "top_examples"
sae = "sae"
data = "photos"
n = 4
"#,
    );
    let summary = env.run_json(&exp);
    assert_eq!(summary["failed"], 0, "{summary}");
    let members = tar_members(&common::output_file(
        &env,
        "pictures",
        "photos",
        "thumbnails",
    ));
    let items = common::output_lines(&env, "pictures", "photos", "items");
    let texts = common::output_lines(&env, "pictures", "photos", "texts");
    let folder = env.path("results/pictures/explorer/top");
    let page = std::fs::read_to_string(folder.join("index.html")).unwrap();
    assert!(
        page.contains("as thumbnails from <code>photos.thumbnails</code>."),
        "{page}"
    );
    let chunk = std::fs::read_to_string(folder.join("chunk-0000.js")).unwrap();
    let json = chunk
        .strip_prefix("msaeExplorer.chunk(0,")
        .and_then(|t| t.trim_end().strip_suffix(");"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut shown = 0;
    for l in v["latents"].as_array().unwrap() {
        for ex in l["t"].as_array().unwrap() {
            let row = ex[0].as_u64().unwrap() as usize;
            let key = row.to_string();
            let uri = v["thumbs"][&key].as_str().unwrap();
            let b64 = uri.strip_prefix("data:image/jpeg;base64,").unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            assert_eq!(bytes, members[&format!("{row}.jpg")], "row {row}");
            assert_eq!(v["items"][&key].as_str().unwrap(), items[row]);
            assert_eq!(v["texts"][&key].as_str().unwrap(), texts[row]);
            shown += 1;
        }
    }
    assert!(shown > 0);
    println!("{shown} examples shown, each with the embed's own thumbnail, item and caption");
}

// ---- concept search and bias -----------------------------------------------------------------

/// Driven inside a copy of a concept-search page: waits for the blocks on screen and their
/// images, records per block and strength row the strength, the label and the decoded widths of
/// the neighbours' thumbnails; then switches to the second edit and records again.
const SEARCH_PROBE: &str = r#"<script>
(function () {
  var log = {}, pick = document.getElementById('edit');
  function blocks() {
    return Array.prototype.slice.call(document.querySelectorAll('#list .query'))
      .sort(function (a, b) { return a.dataset.q - b.dataset.q; });
  }
  function ready() {
    var b = blocks();
    return b.length > 0 && b.every(function (e) {
      return e.dataset.full === '1' && Array.prototype.every.call(
        e.querySelectorAll('img'), function (i) { return i.complete; });
    });
  }
  function record(name) {
    log[name] = blocks().map(function (b) {
      return { q: Number(b.dataset.q), rows: Array.prototype.map.call(b.querySelectorAll('.srow'), function (r) {
        return { strength: r.dataset.strength, label: r.querySelector('.slabel').textContent,
                 images: Array.prototype.map.call(r.querySelectorAll('img'), function (i) { return i.naturalWidth; }) };
      }) };
    });
    log[name + 'Edits'] = pick.options.length;
  }
  var steps = [
    function () { record('first'); pick.value = '1'; pick.dispatchEvent(new Event('change')); },
    function () { record('second'); }
  ];
  var step = 0, tries = 0;
  (function next() {
    if (step === steps.length) {
      var pre = document.createElement('pre');
      pre.id = 'probe';
      pre.textContent = JSON.stringify(log);
      document.body.appendChild(pre);
      return;
    }
    if (ready() || ++tries > 600) { tries = 0; steps[step++](); }
    setTimeout(next, 20);
  })();
})();
</script>"#;

/// The strengths of a result as the page writes them (`ablate` for none).
fn strength_key(r: &serde_json::Value) -> String {
    match r["strength"].as_f64() {
        Some(s) => format!("{s}"),
        None => "ablate".into(),
    }
}

#[test]
fn concept_search_rows_show_loaded_thumbnails_for_every_strength() {
    let e = explored();
    let results = output_json(&e.env, "explore", "search", "results");
    let folder = e.dir.join("explorer/search");
    let page = std::fs::read_to_string(folder.join("index.html")).unwrap();
    let page_bytes = page.len() as u64;
    println!("concept-search page: {page_bytes} bytes (bound {PAGE_BOUND})");
    assert!(page_bytes < PAGE_BOUND, "{page_bytes} bytes");
    for external in ["src=\"http", "href=\"http", "url(http", "@import", "<link"] {
        assert!(!page.contains(external), "the page needs the network");
    }
    assert!(page.contains("as thumbnails from <code>data.thumbnails</code>"));
    let main = std::fs::read_to_string(e.dir.join("index.html")).unwrap();
    assert!(main.contains("href=\"explorer/search/index.html\""));
    // The chunk holds every query's neighbours as the step listed them, each with its thumbnail.
    let chunk = std::fs::read_to_string(folder.join("chunk-0000.js")).unwrap();
    let v: serde_json::Value = serde_json::from_str(
        chunk
            .strip_prefix("msaeSearch.chunk(0,")
            .and_then(|t| t.trim_end().strip_suffix(");"))
            .expect("a chunk script"),
    )
    .unwrap();
    let queries = v["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 3);
    for (q, entry) in queries.iter().enumerate() {
        for (ei, edit) in results["edits"].as_array().unwrap().iter().enumerate() {
            for (ri, r) in edit["results"].as_array().unwrap().iter().enumerate() {
                let want: Vec<u64> = r["queries"][q]["neighbours"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["row"].as_u64().unwrap())
                    .collect();
                let got: Vec<u64> = entry["e"][ei][ri][3]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n[0].as_u64().unwrap())
                    .collect();
                assert_eq!(got, want, "query {q}, edit {ei}, result {ri}");
                for row in got {
                    let uri = v["thumbs"][row.to_string()].as_str().expect("a thumbnail");
                    assert!(uri.starts_with("data:image/jpeg;base64,/9j/"));
                }
            }
        }
    }

    let Some(chromium) = browser::chromium() else {
        return;
    };
    let probe = folder.join("probe.html");
    std::fs::write(
        &probe,
        page.replace("</body>", &format!("{SEARCH_PROBE}</body>")),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let log = probe_result(&browser::dump_dom(&chromium, &probe, profile.path()));
    assert_eq!(log["firstEdits"], 2);
    let png = artifacts().join("concept-search.png");
    browser::screenshot(
        &chromium,
        &folder.join("index.html"),
        &png,
        (1200, 800),
        profile.path(),
    );
    let mut rows_seen = 0;
    let mut images = 0;
    for (name, edit) in [("first", 0), ("second", 1)] {
        let spec = &results["edits"][edit];
        let strengths: Vec<String> = spec["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(strength_key)
            .collect();
        let blocks = log[name].as_array().unwrap();
        assert!(!blocks.is_empty(), "no query block drawn for edit {edit}");
        for b in blocks {
            let rows = b["rows"].as_array().unwrap();
            let drawn: Vec<String> = rows
                .iter()
                .map(|r| r["strength"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(drawn, strengths, "edit {edit}, query {}", b["q"]);
            for (r, spec) in rows.iter().zip(spec["results"].as_array().unwrap()) {
                let label = r["label"].as_str().unwrap();
                assert!(label.contains("act ") && label.contains("kept "), "{label}");
                assert!(label.contains("label "), "no label share: {label}");
                let widths: Vec<u64> = r["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_u64().unwrap())
                    .collect();
                assert_eq!(widths.len(), 6, "{}", strength_key(spec));
                assert!(widths.iter().all(|&w| w == 64), "{widths:?}");
                rows_seen += 1;
                images += widths.len();
            }
        }
    }
    println!(
        "concept search: {} + {} query blocks drawn, {rows_seen} strength rows, {images} thumbnails decoded",
        log["first"].as_array().unwrap().len(),
        log["second"].as_array().unwrap().len()
    );
}

/// Appended to a copy of the report page: every interval mark of the bias figure with its
/// data and its box on screen.
const BIAS_PROBE: &str = r#"<script>
var marks = Array.prototype.map.call(
  document.querySelectorAll('figure[data-kind="bias"] svg g.ci'), function (g) {
    var b = g.getBBox();
    return { of: g.dataset.of, latent: Number(g.dataset.latent), concept: g.dataset.concept, scale: Number(g.dataset.scale),
             panel: g.dataset.panel, mean: Number(g.dataset.mean), low: Number(g.dataset.low),
             high: Number(g.dataset.high), w: b.width, h: b.height };
  });
var pre = document.createElement('pre');
pre.id = 'probe';
pre.textContent = JSON.stringify(marks);
document.body.appendChild(pre);
</script>"#;

#[test]
fn the_bias_figure_has_one_interval_per_concept_and_control() {
    let e = explored();
    let report = output_json(&e.env, "explore", "bias", "report");
    // Concepts by latent: several latents may share a name.
    let concepts: Vec<u64> = report["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["latent"].as_u64().unwrap())
        .collect();
    assert_eq!(concepts.len(), 3);
    let panels = ["all", "mixed", "single"];
    let svg = std::fs::read_to_string(e.dir.join("figures/bias_bias.svg")).unwrap();
    assert!(
        svg.contains("change of p(crimson)"),
        "the target class is named"
    );
    std::fs::write(artifacts().join("bias.svg"), &svg).unwrap();
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let index = e.dir.join("index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    let probe = index.with_file_name("bias-probe.html");
    std::fs::write(
        &probe,
        html.replace("</body>", &format!("{BIAS_PROBE}</body>")),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let marks = probe_result(&browser::dump_dom(&chromium, &probe, profile.path()));
    let marks = marks.as_array().unwrap();
    for which in ["concept", "control"] {
        let mut seen = BTreeMap::new();
        for m in marks.iter().filter(|m| m["of"] == which) {
            let key = (
                m["latent"].as_u64().unwrap(),
                m["scale"].as_f64().unwrap().to_string(),
                m["panel"].as_str().unwrap().to_string(),
            );
            *seen.entry(key).or_insert(0) += 1;
            assert!(m["w"].as_f64().unwrap() > 0.0, "an empty mark: {m}");
            let (lo, mean, hi) = (
                m["low"].as_f64().unwrap(),
                m["mean"].as_f64().unwrap(),
                m["high"].as_f64().unwrap(),
            );
            assert!(lo <= mean && mean <= hi, "{m}");
        }
        for c in &concepts {
            for s in ["0", "2"] {
                for p in panels {
                    let key = (*c, s.to_string(), p.to_string());
                    assert_eq!(seen.get(&key), Some(&1), "{which} {key:?}");
                }
            }
        }
        assert_eq!(seen.len(), concepts.len() * 2 * panels.len());
    }
    // The marks carry the report's numbers: the first concept's overall ablation.
    let first = &report["concepts"][0];
    let want = first["effects"][0]["all"]["concept"]["probability_change"]["crimson"]["mean"]
        .as_f64()
        .unwrap();
    let mark = marks
        .iter()
        .find(|m| {
            m["of"] == "concept"
                && m["latent"] == first["latent"]
                && m["scale"] == 0.0
                && m["panel"] == "all"
        })
        .unwrap();
    assert!((mark["mean"].as_f64().unwrap() - want).abs() < 1e-12);
    println!(
        "bias figure: {} interval marks ({} concepts × 2 scales × {} panels, concept and control)",
        marks.len(),
        concepts.len(),
        panels.len()
    );
}
