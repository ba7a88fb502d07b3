// A concept-search page: one block per query for the chosen edit, each with one row of
// neighbours per strength. Only the blocks in and near the viewport exist in the document; what
// a block draws comes from chunk files, each loaded by a script element when a block first
// needs it (a page opened from the file system may load scripts, not fetch files).
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('search-config').textContent);
  // Heights in pixels (the style sheet's .qhead and .srow, plus the block's padding and gap).
  var HEAD_H = 34, ROW_H = 62, PAD = 14, GAP = 10;
  var MAX_CHUNKS = 48;
  var list = document.getElementById('list');
  var pick = document.getElementById('edit');
  var status = document.getElementById('status');
  var I = null, edit = 0, blockH = 0;
  var chunks = {}, pending = {}, failed = {}, clock = 0;
  var blocks = new Map(), scheduled = false;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function num(v) {
    if (v === null || v === undefined) return '–';
    var a = Math.abs(v);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.01 || a === 0) return v.toFixed(2);
    return v.toPrecision(2);
  }

  function pct(v) { return v === null ? null : Math.round(100 * v) + '%'; }

  function chunkOf(q) {
    var s = I.chunks, lo = 0, hi = s.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (s[mid] <= q) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  function request(id) {
    if (chunks[id] || pending[id] || failed[id]) return;
    var s = document.createElement('script');
    s.src = 'chunk-' + ('000' + id).slice(-Math.max(4, String(id).length)) + '.js';
    s.onerror = function () { delete pending[id]; failed[id] = true; s.remove(); schedule(); };
    pending[id] = s;
    document.body.appendChild(s);
  }

  function evict(keep) {
    var ids = Object.keys(chunks);
    if (ids.length <= MAX_CHUNKS) return;
    ids.sort(function (a, b) { return chunks[a].used - chunks[b].used; });
    for (var i = 0; i < ids.length - MAX_CHUNKS; i++) {
      if (keep[ids[i]]) continue;
      if (chunks[ids[i]].script) chunks[ids[i]].script.remove();
      delete chunks[ids[i]];
    }
  }

  // The label of one strength's row: the strength and the step's metrics over all queries.
  function label(e, r, mine) {
    var box = el('div', 'slabel');
    box.appendChild(el('b', '', r.s === null ? 'ablate' : 'strength ' + r.s));
    var parts = ['act ' + num(r.act), 'kept ' + num(r.kept)];
    box.appendChild(el('div', '', parts.join(' · ')));
    var shares = [];
    if (r.label !== null) shares.push('label ' + pct(r.label));
    if (r.text !== null) shares.push('text ' + pct(r.text));
    if (shares.length) box.appendChild(el('div', '', shares.join(' · ')));
    box.title = e.edit + (r.s === null ? '' : ' at strength ' + r.s) +
      '\nover all queries: latent ' + e.latent + '\'s mean activation in the neighbours ' + num(r.act) +
      ', neighbours\' mean cosine ' + num(r.cos) + ', edited query\'s cosine to the original ' + num(r.kept) +
      (r.label !== null ? ', label share ' + pct(r.label) : '') +
      (r.text !== null ? ', text share ' + pct(r.text) : '') +
      '\nthis query: latent ' + e.latent + ' ' + num(mine[1]) + ' → ' + num(mine[2]) +
      ', cosine to the original ' + num(mine[0]);
    return box;
  }

  function neighbour(nb, chunk) {
    var row = nb[0], text = chunk.texts[row], lab = chunk.labels[row], uri = chunk.thumbs[row];
    var title = 'row ' + row + ', cosine ' + num(nb[1]) + ', activation ' + num(nb[2]) +
      (lab ? '\nlabel: ' + lab : '') + (text ? '\n' + text : '');
    var e;
    if (cfg.thumbs) {
      if (uri) { e = el('img'); e.src = uri; e.alt = 'row ' + row; } else e = el('div', 'none', 'row ' + row);
    } else {
      e = el('div', 'nt');
      e.appendChild(el('span', 'v', num(nb[1]) + ' '));
      e.appendChild(document.createTextNode((lab ? '[' + lab + '] ' : '') + (text || 'row ' + row)));
    }
    e.title = title;
    return e;
  }

  function block(q) {
    var b = el('div', 'query');
    b.dataset.q = q;
    var e = I.edits[edit];
    var head = el('div', 'qhead');
    head.appendChild(el('b', '', 'query ' + (q + 1) + ' · row ' + I.queries[q]));
    var id = chunkOf(q), chunk = chunks[id];
    var entry = chunk && chunk.queries[q];
    if (entry) {
      var row = entry.row;
      if (chunk.qthumbs[row]) {
        var img = el('img'); img.src = chunk.qthumbs[row]; img.alt = 'query row ' + row;
        head.appendChild(img);
      }
      if (chunk.qtexts[row]) head.appendChild(el('span', 'qt', chunk.qtexts[row]));
    }
    head.appendChild(el('span', 'muted', e.edit + ' (latent ' + e.latent + ', ' + e.concept + ')'));
    b.appendChild(head);
    if (entry) {
      chunk.used = ++clock;
      b.dataset.full = '1';
      e.results.forEach(function (r, i) {
        var mine = entry.e[edit][i];
        var line = el('div', 'srow');
        line.dataset.strength = r.s === null ? 'ablate' : r.s;
        line.appendChild(label(e, r, mine));
        mine[3].forEach(function (nb) { line.appendChild(neighbour(nb, chunk)); });
        b.appendChild(line);
      });
    } else if (failed[id]) {
      b.dataset.full = '1';
      b.appendChild(el('div', 'loading', 'chunk ' + id + ' could not be loaded'));
    } else {
      b.appendChild(el('div', 'loading', 'loading…'));
    }
    return b;
  }

  function layout() {
    blockH = HEAD_H + I.edits[edit].results.length * ROW_H + PAD;
    list.style.height = I.queries.length * (blockH + GAP) + 'px';
  }

  function update() {
    scheduled = false;
    if (!I) return;
    var top = list.getBoundingClientRect().top, step = blockH + GAP;
    var first = Math.max(0, Math.floor(-top / step) - 1);
    var last = Math.min(I.queries.length - 1, Math.floor((window.innerHeight - top) / step) + 1);
    var keep = {};
    blocks.forEach(function (b, q) {
      if (q < first || q > last) { b.remove(); blocks.delete(q); }
    });
    for (var q = first; q <= last; q++) {
      var id = chunkOf(q);
      keep[id] = true;
      var b = blocks.get(q);
      if (!b || (b.dataset.full !== '1' && (chunks[id] || failed[id]))) {
        var fresh = block(q);
        if (b) b.replaceWith(fresh); else list.appendChild(fresh);
        b = fresh;
        blocks.set(q, b);
      }
      b.style.top = q * step + 'px';
      b.style.height = blockH + 'px';
      if (!chunks[id]) request(id); else chunks[id].used = ++clock;
    }
    evict(keep);
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    setTimeout(update, 0);
  }

  function redraw() {
    edit = Number(pick.value) || 0;
    var e = I.edits[edit];
    status.textContent = I.queries.length.toLocaleString('en') + ' queries · ' +
      e.results.length + ' row(s) each · ' + I.k + ' neighbours per search';
    blocks.forEach(function (b) { b.remove(); });
    blocks.clear();
    layout();
    update();
  }

  window.msaeSearch = {
    index: function (data) {
      I = data;
      I.edits.forEach(function (e, i) {
        var o = el('option', '', e.edit + ' (latent ' + e.latent + ')');
        o.value = i;
        pick.appendChild(o);
      });
      redraw();
    },
    chunk: function (id, data) {
      var byQuery = {};
      data.queries.forEach(function (e) { byQuery[e.q] = e; });
      chunks[id] = {
        queries: byQuery, texts: data.texts, labels: data.labels, thumbs: data.thumbs,
        qtexts: data.qtexts, qthumbs: data.qthumbs, used: ++clock, script: pending[id]
      };
      delete pending[id];
      schedule();
    }
  };

  pick.addEventListener('change', redraw);
  window.addEventListener('scroll', schedule);
  window.addEventListener('resize', schedule);
})();
