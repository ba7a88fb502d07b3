// The latent explorer: a grid of cards, one per latent, of which only the rows in and near the
// viewport exist in the document. The latent list (latents.js) is loaded with the page; what a
// card draws comes from chunk files, each loaded by a script element when a card first needs it
// (a page opened from the file system may load scripts, not fetch files), and dropped again when
// many are loaded and none of its cards is on screen.
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('explorer-config').textContent);
  // Card size and gap in pixels (the style sheet's .card size).
  var CARD_W = 274, CARD_H = 256, GAP = 12;
  // Chunks kept loaded at most (a chunk is at most 512 KiB).
  var MAX_CHUNKS = 48;
  var SVG = 'http://www.w3.org/2000/svg';
  var grid = document.getElementById('grid');
  var q = document.getElementById('q');
  var sortBy = document.getElementById('sort');
  var conceptsOnly = document.getElementById('concepts');
  var firingOnly = document.getElementById('firing');
  var status = document.getElementById('status');
  var L = null, lowerNames = null, order = [], cols = 1;
  var chunks = {}, pending = {}, failed = {}, clock = 0;
  var cards = new Map();
  var scheduled = false;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function num(v) {
    var a = Math.abs(v);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.01 || a === 0) return v.toFixed(2);
    return v.toPrecision(2);
  }

  function chunkOf(latent) {
    var s = L.chunks, lo = 0, hi = s.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (s[mid] <= latent) lo = mid; else hi = mid - 1;
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

  // Drops the least recently used chunks beyond MAX_CHUNKS, except those of cards on screen.
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

  function histogram(entry) {
    var box = el('div');
    var h = entry.h, bins = cfg.hist.bins;
    // The latent's non-empty bins, widened to at least 8 so that a narrow one reads as such.
    var from = entry.h0, to = entry.h0 + h.length;
    while (to - from < 8 && (from > 0 || to < bins)) {
      if (from > 0) from--;
      if (to - from < 8 && to < bins) to++;
    }
    var max = Math.max.apply(null, h.concat([1]));
    var w = 252, ht = 36, bw = w / (to - from);
    var svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'hist');
    svg.setAttribute('width', w);
    svg.setAttribute('height', ht);
    svg.setAttribute('role', 'img');
    var edge = function (b) { return Math.pow(2, cfg.hist.log2_min + b * cfg.hist.log2_step); };
    var base = document.createElementNS(SVG, 'line');
    base.setAttribute('x1', 0); base.setAttribute('x2', w);
    base.setAttribute('y1', ht - 0.5); base.setAttribute('y2', ht - 0.5);
    base.setAttribute('stroke', '#bbb');
    svg.appendChild(base);
    for (var i = 0; i < h.length; i++) {
      if (!h[i]) continue;
      var b = entry.h0 + i, bh = Math.max(1, Math.round((ht - 2) * h[i] / max));
      var r = document.createElementNS(SVG, 'rect');
      r.setAttribute('x', ((b - from) * bw + 0.5).toFixed(1));
      r.setAttribute('width', Math.max(1, bw - 1).toFixed(1));
      r.setAttribute('y', ht - 1 - bh);
      r.setAttribute('height', bh);
      r.setAttribute('fill', '#0072B2');
      var t = document.createElementNS(SVG, 'title');
      t.textContent = h[i] + ' activations in [' + num(edge(b)) + ', ' + num(edge(b + 1)) + ')';
      r.appendChild(t);
      svg.appendChild(r);
    }
    box.appendChild(svg);
    var axis = el('div', 'axis');
    axis.appendChild(el('span', '', num(edge(from))));
    axis.appendChild(el('span', '', 'activation (log scale)'));
    axis.appendChild(el('span', '', num(edge(to))));
    box.appendChild(axis);
    return box;
  }

  function examples(entry, chunk) {
    var box = el('div', 'examples');
    if (cfg.thumbs) {
      box.className += ' thumbs';
      entry.t.forEach(function (ex) {
        var row = ex[0], uri = chunk.thumbs[row];
        var title = 'row ' + row + ', activation ' + num(ex[1]) +
          (chunk.items[row] ? '\n' + chunk.items[row] : '') +
          (chunk.texts[row] ? '\n' + chunk.texts[row] : '');
        var img;
        if (uri) {
          img = el('img');
          img.src = uri;
          img.alt = 'row ' + row;
        } else {
          img = el('div', 'none', 'row ' + row);
        }
        img.title = title;
        box.appendChild(img);
      });
    } else {
      entry.t.forEach(function (ex) {
        var row = ex[0];
        var line = el('div', 'tx');
        line.appendChild(el('span', 'v', num(ex[1])));
        var text = chunk.texts[row] || chunk.items[row] || ('row ' + row);
        line.appendChild(document.createTextNode(text));
        line.title = 'row ' + row + ': ' + text;
        box.appendChild(line);
      });
    }
    return box;
  }

  function card(latent) {
    var c = el('div', 'card');
    var count = L.count[latent];
    c.dataset.latent = latent;
    c.dataset.count = count;
    var head = el('div', 'head');
    head.appendChild(el('span', 'idx', '#' + latent));
    if (L.name) {
      var name = el('span', 'name', L.name[latent]);
      name.title = L.name[latent];
      head.appendChild(name);
      head.appendChild(el('span', 'cos', 'cos ' + L.cos[latent].toFixed(2)));
      c.dataset.name = L.name[latent];
      c.dataset.cos = L.cos[latent];
    }
    if (L.concept && L.concept[latent]) {
      var mark = el('span', 'concept', '✓ concept');
      mark.title = 'a valid concept of ' + cfg.concepts;
      head.appendChild(mark);
    }
    c.appendChild(head);
    var stats = el('div', 'stats');
    var lines = [];
    if (count > 0) {
      lines.push('fires on ' + (100 * count / L.rows).toPrecision(3) + '% (' + count.toLocaleString('en') +
        ' of ' + L.rows.toLocaleString('en') + ' rows)');
    } else {
      stats.className += ' dead';
      lines.push('never fires on these ' + L.rows.toLocaleString('en') + ' rows');
    }
    var id = chunkOf(latent), chunk = chunks[id];
    var entry = chunk && chunk.latents[latent];
    var second = [];
    if (entry && count > 0) second.push('mean ' + num(entry.m) + ' · max ' + num(entry.x));
    if (L.level && L.level[latent] !== null) {
      var lv = L.level[latent];
      second.push('level ' + (lv + 1) + '/' + cfg.levels.length + ' (first ' + cfg.levels[lv] + ')');
    }
    lines.push(second.join(' · '));
    lines.forEach(function (t) { stats.appendChild(el('div', '', t)); });
    c.appendChild(stats);
    if (entry) {
      chunk.used = ++clock;
      c.dataset.full = '1';
      if (count > 0) {
        c.appendChild(histogram(entry));
        c.appendChild(examples(entry, chunk));
      }
    } else if (failed[id]) {
      c.dataset.full = '1';
      c.appendChild(el('div', 'loading', 'chunk ' + id + ' could not be loaded'));
    } else {
      c.appendChild(el('div', 'loading', 'loading…'));
    }
    return c;
  }

  // As many columns as the window holds (the grid's margins are 16 px), the grid centred.
  function layout() {
    var room = document.documentElement.clientWidth - 32;
    cols = Math.max(1, Math.floor((room + GAP) / (CARD_W + GAP)));
    grid.style.width = cols * (CARD_W + GAP) - GAP + 'px';
    grid.style.height = Math.ceil(order.length / cols) * (CARD_H + GAP) + 'px';
  }

  // Renders the rows of cards in and one row around the viewport; reuses cards already drawn.
  function update() {
    scheduled = false;
    if (!L) return;
    var top = grid.getBoundingClientRect().top, rowH = CARD_H + GAP;
    var rows = Math.ceil(order.length / cols);
    var first = Math.max(0, Math.floor(-top / rowH) - 1);
    var last = Math.min(rows - 1, Math.floor((window.innerHeight - top) / rowH) + 1);
    var want = new Map(), keep = {};
    for (var r = first; r <= last; r++) {
      for (var c = 0; c < cols; c++) {
        var pos = r * cols + c;
        if (pos >= order.length) break;
        want.set(order[pos], pos);
      }
    }
    cards.forEach(function (e, latent) {
      if (!want.has(latent)) { e.remove(); cards.delete(latent); }
    });
    want.forEach(function (pos, latent) {
      var id = chunkOf(latent);
      keep[id] = true;
      var e = cards.get(latent);
      if (!e || (e.dataset.full !== '1' && (chunks[id] || failed[id]))) {
        var fresh = card(latent);
        if (e) e.replaceWith(fresh); else grid.appendChild(fresh);
        e = fresh;
        cards.set(latent, e);
      }
      e.dataset.pos = pos;
      e.style.left = (pos % cols) * (CARD_W + GAP) + 'px';
      e.style.top = Math.floor(pos / cols) * rowH + 'px';
      if (!chunks[id]) request(id); else chunks[id].used = ++clock;
    });
    evict(keep);
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    setTimeout(update, 0);
  }

  function matches() {
    var text = q.value.trim(), out = [];
    var index = /^#?(\d+)$/.exec(text);
    var onlyConcepts = conceptsOnly && conceptsOnly.checked && L.concept;
    var onlyFiring = firingOnly.checked;
    var needle = text.toLowerCase();
    for (var i = 0; i < L.n; i++) {
      if (index) {
        if (i !== Number(index[1])) continue;
      } else if (needle) {
        if (!lowerNames || lowerNames[i].indexOf(needle) < 0) continue;
      }
      if (onlyConcepts && !L.concept[i]) continue;
      if (onlyFiring && !L.count[i]) continue;
      out.push(i);
    }
    return out;
  }

  function recompute() {
    var list = matches(), key = sortBy.value;
    var byIndex = function (a, b) { return a - b; };
    if (key === 'freq') {
      list.sort(function (a, b) { return L.count[b] - L.count[a] || a - b; });
    } else if (key === 'cos' && L.cos) {
      list.sort(function (a, b) { return L.cos[b] - L.cos[a] || a - b; });
    } else if (key === 'name' && L.name) {
      list.sort(function (a, b) { return lowerNames[a].localeCompare(lowerNames[b]) || a - b; });
    } else {
      list.sort(byIndex);
    }
    order = list;
    status.textContent = 'showing ' + list.length.toLocaleString('en') + ' of ' +
      L.n.toLocaleString('en') + ' latents';
    if (!L.name && q.value.trim() && !/^#?\d+$/.test(q.value.trim())) {
      status.textContent += ' (no names: search by #index)';
    }
    cards.forEach(function (e) { e.remove(); });
    cards.clear();
    window.scrollTo(0, 0);
    layout();
    update();
  }

  window.msaeExplorer = {
    latents: function (data) {
      L = data;
      lowerNames = L.name ? L.name.map(function (s) { return s.toLowerCase(); }) : null;
      recompute();
    },
    chunk: function (id, data) {
      var byLatent = {};
      data.latents.forEach(function (e) { byLatent[e.l] = e; });
      chunks[id] = {
        latents: byLatent, texts: data.texts, items: data.items, thumbs: data.thumbs,
        used: ++clock, script: pending[id]
      };
      delete pending[id];
      schedule();
    }
  };

  q.addEventListener('input', recompute);
  sortBy.addEventListener('change', recompute);
  if (conceptsOnly) conceptsOnly.addEventListener('change', recompute);
  firingOnly.addEventListener('change', recompute);
  window.addEventListener('scroll', schedule);
  window.addEventListener('resize', function () { layout(); schedule(); });
})();
