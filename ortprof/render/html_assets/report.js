// ortprof HTML report: flame graph, per-thread CPU timeline and latency charts,
// drawn from the JSON embedded in the page (#ortprof-data). No network, no libraries.
(function () {
  'use strict';
  var DATA = JSON.parse(document.getElementById('ortprof-data').textContent);
  var CATS = DATA.categories;
  var SVGNS = 'http://www.w3.org/2000/svg';
  var tooltip = document.getElementById('tooltip');

  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text != null) node.textContent = text;
    return node;
  }
  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text != null) node.textContent = text;
    return node;
  }
  function fixed(x, digits) { return x == null ? '-' : Number(x).toFixed(digits); }
  function showTip(evt, html) {
    tooltip.innerHTML = html;
    tooltip.hidden = false;
    var x = evt.clientX + 14, y = evt.clientY + 14;
    var w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    if (x + w > window.innerWidth - 4) x = Math.max(4, evt.clientX - w - 14);
    if (y + h > window.innerHeight - 4) y = Math.max(4, evt.clientY - h - 14);
    tooltip.style.left = x + 'px';
    tooltip.style.top = y + 'px';
  }
  function hideTip() { tooltip.hidden = true; }
  function emptyNote(section, text) { return el('p', {'class': 'dim empty', 'data-empty': section}, text); }
  function legend(extra) {
    var box = el('div', {'class': 'legend'});
    CATS.forEach(function (c) {
      var item = el('span');
      item.appendChild(el('span', {'class': 'chip', style: 'background:' + c.color}));
      item.appendChild(document.createTextNode(c.label));
      box.appendChild(item);
    });
    (extra || []).forEach(function (node) { box.appendChild(node); });
    return box;
  }
  function onResize(fn) {
    var timer = null, lastWidth = window.innerWidth;
    window.addEventListener('resize', function () {
      if (window.innerWidth === lastWidth) return;
      lastWidth = window.innerWidth;
      clearTimeout(timer);
      timer = setTimeout(fn, 150);
    });
  }
  var windowUs = (DATA.window_seconds || 0) * 1e6;
  function coreText(us) { return windowUs ? fixed(100 * us / windowUs, 2) + '% of a core' : ''; }

  // ------------------------------------------------------------------ copy buttons
  function copyText(text, button) {
    function done(ok) {
      button.textContent = ok ? 'copied' : 'select and copy';
      setTimeout(function () { button.textContent = 'copy'; }, 1500);
    }
    function fallback() {
      var area = el('textarea');
      area.value = text;
      area.style.position = 'fixed';
      area.style.opacity = '0';
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      document.body.removeChild(area);
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  }
  Array.prototype.forEach.call(document.querySelectorAll('button.copy'), function (button) {
    button.addEventListener('click', function () {
      copyText(document.getElementById(button.getAttribute('data-copy')).textContent, button);
    });
  });

  // ------------------------------------------------------------------ flame graph
  function flameGraph() {
    var app = document.getElementById('flame-app');
    var F = DATA.flame;
    if (!F) {
      var why = DATA.empty.hot_paths || DATA.empty.totals || 'the run has no perf samples';
      app.appendChild(emptyNote('flame', 'No flame graph: ' + why + '.'));
      return;
    }
    var ROW = 17;
    var state = {view: null, nodes: [], zoom: 0, icicle: false, matcher: null};
    var controls = el('div', {'class': 'controls'});
    var select = el('select', {id: 'flame-view', 'aria-label': 'threads shown'});
    var groups = {all: select, role: el('optgroup', {label: 'role'}), tid: el('optgroup', {label: 'thread (role tid)'})};
    F.views.forEach(function (view) {
      var kind = view.id.split(':')[0];
      var option = el('option', {value: view.id}, view.label + ' · ' + coreText(view.tree[2]));
      groups[kind].appendChild(option);
    });
    select.appendChild(groups.role);
    select.appendChild(groups.tid);
    var mode = el('button', {id: 'flame-mode', type: 'button'}, 'icicle');
    var reset = el('button', {id: 'flame-reset', type: 'button'}, 'reset zoom');
    var search = el('input', {id: 'flame-search', type: 'search', placeholder: 'search frames (regex)'});
    var matched = el('span', {id: 'flame-match', 'class': 'dim'});
    [el('label', {}, 'show '), select, mode, reset, search, matched].forEach(function (n) { controls.appendChild(n); });
    app.appendChild(controls);
    var hint = el('p', {'class': 'dim'}, 'Width: CPU time. Colour: the category carrying most of a frame\'s time. ' +
      'Click a frame to zoom in.');
    app.appendChild(hint);
    var box = el('div', {id: 'flame'});
    app.appendChild(box);
    app.appendChild(legend([matchChip()]));

    function matchChip() {
      var item = el('span');
      item.appendChild(el('span', {'class': 'chip', style: 'background:#e040fb'}));
      item.appendChild(document.createTextNode('search match'));
      return item;
    }

    function flatten(tree) {
      var nodes = [];
      (function walk(node, depth, x0, parent) {
        var index = nodes.length;
        nodes.push({name: F.names[node[0]], dso: F.dsos[node[1]], us: node[2], samples: node[3],
                    cat: CATS[node[4]], depth: depth, x0: x0, parent: parent, match: false});
        var x = x0;
        node[5].forEach(function (child) { walk(child, depth + 1, x, index); x += child[2]; });
      })(tree, 0, 0, -1);
      return nodes;
    }

    function setView(id) {
      state.view = F.views.filter(function (v) { return v.id === id; })[0] || F.views[0];
      state.nodes = flatten(state.view.tree);
      state.zoom = 0;
      applySearch();
    }

    function applySearch() {
      var nodes = state.nodes, total = nodes[0].us, matchedUs = 0;
      nodes.forEach(function (n) {
        n.match = !!(state.matcher && state.matcher.test(n.name));
        if (n.match && !hasMatchedAncestor(n)) matchedUs += n.us;
      });
      matched.textContent = state.matcher
        ? 'matched: ' + fixed(total ? 100 * matchedUs / total : 0, 1) + '% of this view · ' + coreText(matchedUs)
        : '';
      draw();
    }

    function hasMatchedAncestor(n) {
      for (var p = n.parent; p >= 0; p = state.nodes[p].parent) if (state.nodes[p].match) return true;
      return false;
    }

    function draw() {
      var nodes = state.nodes, z = nodes[state.zoom];
      var width = box.clientWidth || 1000, scale = width / Math.max(z.us, 1);
      var ancestors = {};
      for (var p = z.parent; p >= 0; p = nodes[p].parent) ancestors[p] = true;
      var shown = [], maxDepth = 0;
      nodes.forEach(function (n, i) {
        var left, w;
        if (ancestors[i]) { left = 0; w = width; }
        else if (n.depth >= z.depth && n.x0 >= z.x0 && n.x0 + n.us <= z.x0 + z.us) {
          left = (n.x0 - z.x0) * scale; w = n.us * scale;
          if (w < 0.5) return;
        } else return;
        shown.push([i, left, w]);
        if (n.depth > maxDepth) maxDepth = n.depth;
      });
      box.style.height = (maxDepth + 1) * ROW + 'px';
      var fragment = document.createDocumentFragment();
      shown.forEach(function (item) {
        var n = nodes[item[0]];
        var top = state.icicle ? n.depth * ROW : (maxDepth - n.depth) * ROW;
        var frame = el('div', {'class': 'frame' + (ancestors[item[0]] ? ' ancestor' : '') + (n.match ? ' match' : ''),
                               'data-index': item[0], 'data-name': n.name, 'data-category': n.cat.id,
                               'data-dso': n.dso});
        frame.style.cssText = 'left:' + item[1].toFixed(1) + 'px;width:' + Math.max(item[2], 1).toFixed(1) +
          'px;top:' + top + 'px;background:' + n.cat.color;
        if (item[2] > 28) frame.textContent = n.name;
        fragment.appendChild(frame);
      });
      box.textContent = '';
      box.appendChild(fragment);
    }

    function tipFor(n) {
      var root = state.nodes[0];
      var parts = ['<b>' + esc(n.name) + '</b>', esc(n.cat.label) + ' (the category of most of its time)',
                   coreText(n.us) + ' · ' + fixed(100 * n.us / Math.max(root.us, 1), 1) + '% of this view'];
      if (DATA.runs > 0) parts.push(fixed(n.us / 1000 / DATA.runs, 3) + ' CPU-ms per inference');
      parts.push(n.samples + ' samples');
      if (n.dso) parts.push('DSO: ' + esc(n.dso));
      return parts.join('<br>');
    }

    box.addEventListener('mousemove', function (evt) {
      var target = evt.target.closest('.frame');
      if (!target) { hideTip(); return; }
      showTip(evt, tipFor(state.nodes[+target.getAttribute('data-index')]));
    });
    box.addEventListener('mouseleave', hideTip);
    box.addEventListener('click', function (evt) {
      var target = evt.target.closest('.frame');
      if (!target) return;
      state.zoom = +target.getAttribute('data-index');
      draw();
    });
    select.addEventListener('change', function () { setView(select.value); });
    mode.addEventListener('click', function () {
      state.icicle = !state.icicle;
      mode.textContent = state.icicle ? 'flame' : 'icicle';
      draw();
    });
    reset.addEventListener('click', function () { state.zoom = 0; draw(); });
    search.addEventListener('input', function () {
      var query = search.value.trim();
      if (!query) state.matcher = null;
      else {
        try { state.matcher = new RegExp(query, 'i'); }
        catch (e) { state.matcher = new RegExp(query.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'i'); }
      }
      applySearch();
    });
    onResize(draw);
    setView(F.views[0].id);
  }

  // ------------------------------------------------------------------ CPU timeline
  function niceStep(span, target) {
    var raw = span / target, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= raw) return steps[i] * power;
    return 10 * power;
  }

  // Binned states (html_sched.binned_states): [first, count, state] or [first, count, % per state...],
  // drawn from time 0 at `bin` s per bin as rects of class `cls`, stacked where a bin is mixed.
  function drawStates(parent, states, entries, bin, x, t0, t1, top, height, cls) {
    entries.forEach(function (e) {
      var a = e[0] * bin, b = (e[0] + e[1]) * bin;
      if (b < t0 || a > t1) return;
      var left = x(a), w = Math.max(x(b) - left, 0.6);
      var shares = e.length === 3 ? null : e.slice(2), y = top;
      for (var s = 0; s < states.length; s++) {
        var h = shares ? shares[s] / 100 * height : (s === e[2] ? height : 0);
        if (h <= 0) continue;
        parent.appendChild(svgEl('rect', {'class': cls + (shares ? ' mixed' : ''), x: left, y: y, width: w, height: h,
                                          fill: states[s].color, 'data-state': states[s].id}));
        y += h;
      }
    });
  }

  function timeline() {
    var app = document.getElementById('timeline-app');
    var T = DATA.timeline;
    if (!T || !T.lanes.length) {
      app.appendChild(emptyNote('timeline', 'No timeline: the run has neither per-thread /proc CPU nor perf samples.'));
      return;
    }
    var S = T.sched;
    var runsByTid = {};
    T.runs.forEach(function (r, i) { (runsByTid[r[0]] = runsByTid[r[0]] || []).push({r: r, index: i}); });
    var procNote = T.has_proc ? 'black line: CPU % of a core from /proc (per 100 ms)' : 'no /proc CPU series in this run';
    var sampleNote = T.has_samples ? 'bars: perf samples per ' + Math.round(T.bin_seconds * 1000) +
      ' ms by category' : 'grey: /proc CPU (no perf samples)';
    var stateNote = S ? '; strip under a lane: the thread\'s scheduler state (' + esc(S.source) + ', per ' +
      fixed(S.bin_seconds * 1000, 1) + ' ms)' : '';
    var controls = el('div', {'class': 'controls'});
    var reset = el('button', {id: 'timeline-reset', type: 'button'}, 'reset zoom');
    controls.appendChild(reset);
    controls.appendChild(el('span', {'class': 'dim'}, 'Drag across the chart to zoom in time; click a run() to see ' +
      'where its time went. ' + sampleNote + '; ' + procNote + '; blue boxes: run() calls on the calling thread, ' +
      'red: slow runs (at or above the session\'s p95)' + stateNote + '. Lane height: 100% of a core.'));
    app.appendChild(controls);
    var holder = el('div', {id: 'timeline'});
    app.appendChild(holder);
    var spanChip = el('span');
    spanChip.appendChild(el('span', {'class': 'chip', style: 'background:rgba(25,118,210,.25);border:1px solid #1976d2'}));
    spanChip.appendChild(document.createTextNode('run() span'));
    var slowChip = el('span');
    slowChip.appendChild(el('span', {'class': 'chip', style: 'background:rgba(198,40,40,.25);border:1px solid #c62828'}));
    slowChip.appendChild(document.createTextNode('slow run() (>= p95)'));
    app.appendChild(legend([spanChip, slowChip]));
    if (S) {
      var states = el('div', {'class': 'legend', id: 'state-legend'});
      states.appendChild(el('span', {'class': 'dim'}, 'thread states:'));
      S.states.forEach(function (st) {
        var item = el('span', {'data-state': st.id});
        item.appendChild(el('span', {'class': 'chip', style: 'background:' + st.color}));
        item.appendChild(document.createTextNode(st.label));
        states.appendChild(item);
      });
      app.appendChild(states);
      S.notes.forEach(function (note) { app.appendChild(el('p', {'class': 'dim'}, 'thread states: ' + note)); });
    } else {
      app.appendChild(emptyNote('sched', 'No thread-state lanes: ' + T.sched_missing + '.'));
    }
    var panel = el('div', {id: 'run-breakdown', hidden: ''});
    app.appendChild(panel);

    var range = [0, T.seconds];
    var LABEL = 200, LANE = 44, STATE = 12, GAP = 8, AXIS = 22;
    var current = null;   // geometry of the last drawing, for hover, click and drag

    function stateLane(tid) { return S ? S.lanes[String(tid)] : null; }
    function laneHeight(lane) { return LANE + (stateLane(lane.tid) ? STATE + 3 : 0); }

    function draw() {
      var width = Math.max(holder.clientWidth || 1000, 600), plot = width - LABEL - 8;
      var t0 = range[0], t1 = range[1], scale = plot / Math.max(t1 - t0, 1e-6);
      function x(t) { return LABEL + (Math.min(Math.max(t, t0), t1) - t0) * scale; }
      var tops = [], height = AXIS;
      T.lanes.forEach(function (lane) { tops.push(height); height += laneHeight(lane) + GAP; });
      var root = svgEl('svg', {width: width, height: height, id: 'timeline-svg'});
      var step = niceStep(t1 - t0, 10);
      for (var tick = Math.ceil(t0 / step) * step; tick <= t1 + 1e-9; tick += step) {
        root.appendChild(svgEl('line', {x1: x(tick), x2: x(tick), y1: AXIS - 4, y2: height, 'class': 'axis',
                                        'stroke-opacity': 0.25}));
        var atEnd = x(tick) > width - 40;
        root.appendChild(svgEl('text', {x: x(tick) + (atEnd ? -2 : 2), y: AXIS - 8, 'text-anchor': atEnd ? 'end' : 'start'},
                               fixed(tick, step < 1 ? 1 : 0) + ' s'));
      }
      T.lanes.forEach(function (lane, i) {
        var top = tops[i];
        function y(pct) { return top + LANE - Math.min(pct, 100) / 100 * LANE; }
        var g = svgEl('g', {'class': 'lane', 'data-tid': lane.tid, 'data-role': lane.role, 'data-label': lane.label});
        g.appendChild(svgEl('rect', {x: LABEL, y: top, width: plot, height: LANE, fill: '#f5f5f5'}));
        g.appendChild(svgEl('text', {x: 4, y: top + 18, 'class': 'lane-label'}, lane.label));
        var cpu = lane.proc_cpu_pct != null ? lane.proc_cpu_pct : lane.cpu_pct;
        g.appendChild(svgEl('text', {x: 4, y: top + 34, 'class': 'dim'}, fixed(cpu, 1) + '% of a core'));
        // run() spans behind the CPU bars (narrow ones without an outline), their marks on top.
        var marks = [];
        (runsByTid[lane.tid] || []).forEach(function (item) {
          var r = item.r;
          if (r[2] + r[3] < t0 || r[2] > t1) return;
          var left = x(r[2]), w = Math.max(x(r[2] + r[3]) - left, 1);
          var slow = r[4] ? ' slow' : '', chosen = item.index === selectedRun ? ' selected' : '';
          g.appendChild(svgEl('rect', {'class': 'run-span' + slow + chosen + (w < 4 ? ' narrow' : ''), x: left, y: top, width: w,
            height: LANE, 'data-tid': r[0], 'data-session': r[1], 'data-start': r[2], 'data-end': fixed(r[2] + r[3], 4),
            'data-run': item.index}));
          marks.push(svgEl('rect', {'class': 'run-mark' + slow, x: left, y: top, width: Math.max(w, r[4] ? 2 : 1),
                                    height: r[4] ? 6 : 4}));
        });
        var sampled = lane.sampled, bin = T.bin_seconds;
        var binCount = 0;
        for (var c in sampled) { binCount = sampled[c].length; break; }
        var first = Math.max(0, Math.floor(t0 / bin)), last = Math.min(binCount, Math.ceil(t1 / bin));
        for (var b = first; b < last; b++) {
          var stacked = 0;
          CATS.forEach(function (cat) {
            var pct = sampled[cat.id] ? sampled[cat.id][b] : 0;
            if (!pct) return;
            var yTop = y(stacked + pct), yBottom = y(stacked);
            stacked += pct;
            if (yBottom - yTop <= 0) return;
            g.appendChild(svgEl('rect', {'class': 'cpu-bin', x: x(b * bin), width: Math.max(x((b + 1) * bin) - x(b * bin), 0.8),
              y: yTop, height: yBottom - yTop, fill: cat.color, 'data-category': cat.id, 'data-pct': pct,
              'data-t0': fixed(b * bin, 3), 'data-t1': fixed((b + 1) * bin, 3)}));
          });
        }
        var proc = lane.proc, path = '';
        for (var k = 0; k < proc.pct.length; k++) {
          var a = proc.t[k], e = proc.t[k + 1];
          if (e < t0 || a > t1) continue;
          if (!binCount) {
            g.appendChild(svgEl('rect', {'class': 'proc-bin', x: x(a), width: Math.max(x(e) - x(a), 0.8), y: y(proc.pct[k]),
              height: top + LANE - y(proc.pct[k]), fill: '#9e9e9e', 'data-pct': proc.pct[k],
              'data-t0': a, 'data-t1': e}));
          }
          path += (path ? 'L' : 'M') + x(a).toFixed(1) + ' ' + y(proc.pct[k]).toFixed(1) + 'H' + x(e).toFixed(1);
        }
        if (path) g.appendChild(svgEl('path', {'class': 'proc-line', d: path}));
        marks.forEach(function (mark) { g.appendChild(mark); });
        var entries = stateLane(lane.tid);
        if (entries) {
          var strip = svgEl('g', {'class': 'state-lane', 'data-tid': lane.tid});
          strip.appendChild(svgEl('rect', {x: LABEL, y: top + LANE + 3, width: plot, height: STATE, fill: '#fff',
                                           stroke: '#ddd'}));
          drawStates(strip, S.states, entries, S.bin_seconds, x, t0, t1, top + LANE + 3, STATE, 'state-bin');
          strip.appendChild(svgEl('text', {x: LABEL - 4, y: top + LANE + 3 + STATE - 2, 'text-anchor': 'end',
                                           'class': 'dim'}, 'states'));
          g.appendChild(strip);
        }
        root.appendChild(g);
      });
      var selection = svgEl('rect', {id: 'timeline-selection', y: AXIS, height: height - AXIS, width: 0,
                                     fill: '#1976d2', 'fill-opacity': 0.15, visibility: 'hidden'});
      root.appendChild(selection);
      holder.textContent = '';
      holder.appendChild(root);
      current = {root: root, x0: LABEL, plot: plot, t0: t0, scale: scale, selection: selection, tops: tops};
    }

    function timeAt(evt) {
      var box = current.root.getBoundingClientRect();
      var px = Math.min(Math.max(evt.clientX - box.left, current.x0), current.x0 + current.plot);
      return {px: px, t: current.t0 + (px - current.x0) / current.scale, y: evt.clientY - box.top};
    }

    function laneAt(at) {
      for (var i = 0; i < T.lanes.length; i++) {
        var offset = at.y - current.tops[i];
        if (offset >= 0 && offset <= laneHeight(T.lanes[i])) return {lane: T.lanes[i], inStates: offset > LANE};
      }
      return null;
    }

    function runAt(lane, at) {
      var slack = 3 / current.scale, found = null;   // a narrow run is clickable within 3 px
      (runsByTid[lane.tid] || []).forEach(function (item) {
        var r = item.r;
        if (r[2] - slack <= at.t && at.t <= r[2] + r[3] + slack &&
            (found === null || Math.abs(at.t - r[2] - r[3] / 2) < Math.abs(at.t - found.r[2] - found.r[3] / 2))) found = item;
      });
      return found;
    }

    function stateShares(entries, bin, t) {
      var b = Math.floor(t / bin);
      for (var i = 0; i < entries.length; i++) {
        var e = entries[i];
        if (e[0] <= b && b < e[0] + e[1]) {
          if (e.length === 3) return S.states.map(function (st, s) { return s === e[2] ? 100 : 0; });
          return e.slice(2);
        }
      }
      return null;
    }

    function tipAt(evt) {
      var at = timeAt(evt), hit = laneAt(at);
      if (!hit) { hideTip(); return; }
      var lane = hit.lane;
      var parts = ['<b>' + esc(lane.label) + '</b> at ' + fixed(at.t, 3) + ' s'];
      var proc = lane.proc;
      for (var k = 0; k < proc.pct.length; k++) {
        if (proc.t[k] <= at.t && at.t < proc.t[k + 1]) { parts.push('/proc: ' + fixed(proc.pct[k], 1) + '% of a core'); break; }
      }
      var b = Math.floor(at.t / T.bin_seconds);
      CATS.forEach(function (cat) {
        var pct = lane.sampled[cat.id] ? lane.sampled[cat.id][b] : 0;
        if (pct) parts.push(esc(cat.label) + ': ' + fixed(pct, 0) + '% in this ' + Math.round(T.bin_seconds * 1000) + ' ms bin');
      });
      var entries = stateLane(lane.tid);
      var shares = entries ? stateShares(entries, S.bin_seconds, at.t) : null;
      if (shares) {
        parts.push('states in this ' + fixed(S.bin_seconds * 1000, 1) + ' ms: ' + S.states.map(function (st, s) {
          return shares[s] ? esc(st.label.split(' (')[0]) + ' ' + shares[s] + '%' : '';
        }).filter(Boolean).join(', '));
      }
      var item = runAt(lane, at);
      if (item) {
        parts.push('run() of session ' + item.r[1] + ': ' + fixed(item.r[3] * 1000, 2) + ' ms' +
                   (item.r[4] ? ' (slow: at or above p95)' : '') + ' · click for its breakdown');
      }
      showTip(evt, parts.join('<br>'));
    }

    var dragStart = null;
    holder.addEventListener('mousedown', function (evt) {
      if (!current) return;
      dragStart = timeAt(evt);
      evt.preventDefault();
    });
    window.addEventListener('mousemove', function (evt) {
      if (!current) return;
      if (dragStart) {
        var at = timeAt(evt), sel = current.selection;
        sel.setAttribute('x', Math.min(at.px, dragStart.px));
        sel.setAttribute('width', Math.abs(at.px - dragStart.px));
        sel.setAttribute('visibility', 'visible');
      }
    });
    holder.addEventListener('mousemove', function (evt) { if (!dragStart) tipAt(evt); });
    holder.addEventListener('mouseleave', hideTip);
    window.addEventListener('mouseup', function (evt) {
      if (!dragStart) return;
      var end = timeAt(evt), a = Math.min(dragStart.t, end.t), b = Math.max(dragStart.t, end.t);
      dragStart = null;
      if ((b - a) * current.scale > 4) {   // a drag: zoom
        range = [a, b];
        draw();
        return;
      }
      current.selection.setAttribute('visibility', 'hidden');
      var hit = laneAt(end), item = hit && runAt(hit.lane, end);   // a click: the run under it
      if (item) showRun(item.index);
    });
    reset.addEventListener('click', function () { range = [0, T.seconds]; draw(); });
    onResize(draw);
    draw();
  }

  // ------------------------------------------------------------------ one run's breakdown
  var laneLabels = {};
  ((DATA.timeline && DATA.timeline.lanes) || []).forEach(function (lane) { laneLabels[lane.tid] = lane.label; });

  var selectedRun = null;   // the run whose breakdown is open, outlined on the timeline

  function selectRun(index) {
    selectedRun = index;
    Array.prototype.forEach.call(document.querySelectorAll('.run-span'), function (span) {
      span.classList.toggle('selected', +span.getAttribute('data-run') === index);
    });
  }

  function showRun(index) {
    var T = DATA.timeline, S = T.sched, r = T.runs[index];
    selectRun(index);
    var panel = document.getElementById('run-breakdown');
    var session = DATA.latency.filter(function (s) { return s.session === r[1]; })[0] || {};
    panel.textContent = '';
    panel.hidden = false;
    panel.setAttribute('data-run', index);
    panel.className = r[4] ? 'slow' : '';
    var title = 'run() of session ' + r[1] + ' on ' + (laneLabels[r[0]] || 'thread ' + r[0]) + ' at ' +
      fixed(r[2], 3) + ' s: ' + fixed(r[3] * 1000, 2) + ' ms';
    if (session.p50_ms != null) title += ' (session p50 ' + fixed(session.p50_ms, 2) + ' ms, p95 ' + fixed(session.p95_ms, 2) + ' ms)';
    var close = el('button', {type: 'button', 'class': 'close'}, 'close');
    close.addEventListener('click', function () {
      panel.hidden = true;
      selectRun(null);
    });
    panel.appendChild(close);
    panel.appendChild(el('h3', {}, (r[4] ? 'SLOW ' : '') + title));
    var B = S ? S.runs[index] : null;
    if (!B) {
      panel.appendChild(emptyNote('run-breakdown', S ? 'No scheduler states inside this run (outside the recorded ' +
        'timeline).' : 'No breakdown: ' + T.sched_missing + '.'));
      return;
    }
    var runMs = r[3] * 1000;
    var bar = el('div', {'class': 'state-bar'});
    var rows = [];
    S.states.forEach(function (st, s) {
      var ms = B.states[s];
      if (ms > 0) {
        var part = el('span', {'data-state': st.id, title: st.label + ' ' + fixed(ms, 2) + ' ms'});
        part.style.cssText = 'width:' + fixed(100 * ms / Math.max(runMs, 1e-9), 2) + '%;background:' + st.color;
        bar.appendChild(part);
      }
      rows.push('<tr data-state="' + st.id + '"><td class=l><span class=chip style="background:' + st.color +
                '"></span>' + esc(st.label) + '</td><td>' + fixed(ms, 2) + '</td><td>' +
                fixed(100 * ms / Math.max(runMs, 1e-9), 0) + '%</td></tr>');
    });
    panel.appendChild(el('p', {}, 'The calling thread\'s time in this run, by scheduler state:'));
    panel.appendChild(bar);
    var table = el('table', {'class': 'run-states'});
    table.innerHTML = '<tr><th class=l>caller state</th><th>ms</th><th>of the run</th></tr>' + rows.join('');
    panel.appendChild(table);
    if (B.held.length) {
      var held = el('table', {'class': 'run-held'});
      held.innerHTML = '<tr><th class=l>held the CPU while the caller or its workers were runnable</th><th>pid</th>' +
        '<th>tid</th><th>ms</th></tr>' + B.held.map(function (h) {
          return '<tr><td class=l>' + esc(h[0]) + '</td><td>' + h[1] + '</td><td>' + h[2] + '</td><td>' +
                 fixed(h[3], 2) + '</td></tr>';
        }).join('');
      panel.appendChild(held);
    } else {
      panel.appendChild(el('p', {'class': 'dim run-held'}, 'No other thread held the CPU while the caller or its ' +
        'workers were runnable.'));
    }
    var SECTIONS = {
      visible: 'its workers slept between parallel sections and were woken for each',
      spinning: 'its workers spun between parallel sections: the scheduler cannot see the sections, so wake-up ' +
                'delay and stragglers are unknown',
      'no-pool': 'its session has no pool workers (one thread)',
      unused: 'its workers slept through it (no wake-up)',
      unknown: 'its session\'s pool workers are not known: only the caller is joined'};
    var sections = el('p', {'class': 'run-sections', 'data-sections': B.sections},
      'Parallel sections: ' + (SECTIONS[B.sections] || B.sections) +
      (B.section_count ? ' (' + B.section_count + ' seen)' : '') + '.');
    panel.appendChild(sections);
    if (B.workers.length) {
      var workers = el('table', {'class': 'run-workers'});
      workers.innerHTML = '<tr><th class=l>worker</th><th>wake-ups</th><th>mean wake-up delay ms</th><th>max ms</th></tr>' +
        B.workers.map(function (w) {
          return '<tr data-tid="' + w[0] + '"><td class=l>' + esc(laneLabels[w[0]] || w[0]) + '</td><td>' + w[1] +
                 '</td><td>' + fixed(w[2], 3) + '</td><td>' + fixed(w[3], 3) + '</td></tr>';
        }).join('');
      panel.appendChild(workers);
      var extra = ['workers preempted (runnable, not after a wake-up): ' + fixed(B.preempted_ms, 2) + ' ms',
                   'workers throttled: ' + fixed(B.throttled_ms, 2) + ' ms'];
      if (B.straggler_ms != null) extra.push('straggler lateness (the last worker of a section, and the caller ' +
                                             'asleep until a worker woke it): ' + fixed(B.straggler_ms, 2) + ' ms');
      panel.appendChild(el('p', {'class': 'dim'}, extra.join(' · ')));
    }
    if (B.strip) panel.appendChild(runStrip(B.strip, r, S));
    else panel.appendChild(el('p', {'class': 'dim'}, 'No per-thread strip for this run: the page keeps strips ' +
      'for the slowest runs only (a size bound).'));
  }

  function runStrip(strip, r, S) {
    var W = 760, LABEL = 170, ROW = 14, GAP = 4, plot = W - LABEL - 10;
    var H = 18 + strip.lanes.length * (ROW + GAP);
    var root = svgEl('svg', {width: W, height: H, 'class': 'run-strip'});
    var span = r[3];
    function x(t) { return LABEL + Math.min(Math.max(t, 0), span) / span * plot; }
    root.appendChild(svgEl('text', {x: LABEL, y: 11}, '0'));
    root.appendChild(svgEl('text', {x: LABEL + plot, y: 11, 'text-anchor': 'end'}, fixed(span * 1000, 2) + ' ms'));
    strip.lanes.forEach(function (lane, i) {
      var top = 16 + i * (ROW + GAP);
      root.appendChild(svgEl('text', {x: LABEL - 4, y: top + ROW - 3, 'text-anchor': 'end', 'class': 'lane-label'},
                             laneLabels[lane[0]] || String(lane[0])));
      drawStates(root, S.states, lane[1], strip.bin_seconds, x, 0, span, top, ROW, 'strip-bin');
    });
    return root;
  }

  // ------------------------------------------------------------------ latency
  var PCOLORS = {p50_ms: '#2e7d32', p95_ms: '#ef6c00', p99_ms: '#c62828'};

  function latency() {
    var app = document.getElementById('latency-app');
    DATA.latency.forEach(function (s) {
      var block = el('div', {'class': 'latency-session', 'data-session': s.session});
      block.appendChild(el('h3', {}, 'session ' + s.session + (s.model ? ' · ' + s.model.split('/').pop() : '')));
      if (!s.ms.length) {
        block.appendChild(emptyNote('latency', 'No run() of this session inside the profiling window.'));
        app.appendChild(block);
        return;
      }
      var row = el('div', {style: 'display:flex;flex-wrap:wrap;gap:16px'});
      row.appendChild(histogram(s));
      row.appendChild(overTime(s));
      block.appendChild(row);
      var keys = el('div', {'class': 'legend'});
      Object.keys(PCOLORS).forEach(function (key) {
        var item = el('span');
        item.appendChild(el('span', {'class': 'chip', style: 'background:' + PCOLORS[key]}));
        item.appendChild(document.createTextNode(key.replace('_ms', '') + ' ' + fixed(s[key], 2) + ' ms'));
        keys.appendChild(item);
      });
      block.appendChild(keys);
      app.appendChild(block);
    });
  }

  function latencyAxis(s) {
    var max = Math.max.apply(null, s.ms.concat([s.p99_ms || 0]));
    return max * 1.08 || 1;
  }

  function histogram(s) {
    var W = 420, H = 200, L = 40, B = 28, plotW = W - L - 10, plotH = H - B - 10;
    var max = latencyAxis(s), bins = Math.min(40, Math.max(10, Math.round(Math.sqrt(s.ms.length) * 2)));
    var counts = new Array(bins).fill(0);
    s.ms.forEach(function (ms) { counts[Math.min(bins - 1, Math.floor(ms / max * bins))]++; });
    var top = Math.max.apply(null, counts);
    var root = svgEl('svg', {width: W, height: H, 'class': 'latency-histogram'});
    function x(ms) { return L + ms / max * plotW; }
    counts.forEach(function (count, i) {
      if (!count) return;
      var h = count / top * plotH;
      var bar = svgEl('rect', {'class': 'hist-bar', x: x(i * max / bins), y: 10 + plotH - h,
        width: Math.max(plotW / bins - 1, 1), height: h, 'data-count': count});
      bar.appendChild(svgEl('title', {}, count + ' runs between ' + fixed(i * max / bins, 1) + ' and ' +
        fixed((i + 1) * max / bins, 1) + ' ms'));
      root.appendChild(bar);
    });
    root.appendChild(svgEl('line', {x1: L, x2: L + plotW, y1: 10 + plotH, y2: 10 + plotH, 'class': 'axis'}));
    var step = niceStep(max, 6);
    for (var ms = 0; ms <= max; ms += step) root.appendChild(svgEl('text', {x: x(ms) - 6, y: H - 12}, fixed(ms, 0)));
    root.appendChild(svgEl('text', {x: L + plotW - 60, y: 20}, 'latency, ms'));
    root.appendChild(svgEl('text', {x: 2, y: 20}, top + ' runs'));
    Object.keys(PCOLORS).forEach(function (key) {
      if (s[key] == null) return;
      root.appendChild(svgEl('line', {'class': 'pline', 'data-p': key, x1: x(s[key]), x2: x(s[key]), y1: 10, y2: 10 + plotH,
                                      stroke: PCOLORS[key]}));
    });
    return root;
  }

  function overTime(s) {
    var W = 720, H = 200, L = 40, B = 28, plotW = W - L - 10, plotH = H - B - 10;
    var max = latencyAxis(s), span = Math.max((DATA.timeline && DATA.timeline.seconds) || 0, s.t[s.t.length - 1] || 1);
    var root = svgEl('svg', {width: W, height: H, 'class': 'latency-time'});
    function x(t) { return L + t / span * plotW; }
    function y(ms) { return 10 + plotH - ms / max * plotH; }
    root.appendChild(svgEl('line', {x1: L, x2: L + plotW, y1: 10 + plotH, y2: 10 + plotH, 'class': 'axis'}));
    root.appendChild(svgEl('line', {x1: L, x2: L, y1: 10, y2: 10 + plotH, 'class': 'axis'}));
    var step = niceStep(max, 4);
    for (var ms = 0; ms <= max; ms += step) root.appendChild(svgEl('text', {x: 2, y: y(ms) + 4}, fixed(ms, 0)));
    var tstep = niceStep(span, 8);
    for (var t = 0; t <= span; t += tstep) root.appendChild(svgEl('text', {x: x(t) - 4, y: H - 12}, fixed(t, tstep < 1 ? 1 : 0)));
    root.appendChild(svgEl('text', {x: L + plotW - 150, y: H - 1}, 'time in the window, s'));
    Object.keys(PCOLORS).forEach(function (key) {
      if (s[key] == null) return;
      root.appendChild(svgEl('line', {'class': 'pline', 'data-p': key, x1: L, x2: L + plotW, y1: y(s[key]), y2: y(s[key]),
                                      stroke: PCOLORS[key]}));
    });
    s.t.forEach(function (t, i) {
      var slow = s.p95_ms != null && s.ms[i] >= s.p95_ms;
      var point = svgEl('circle', {'class': 'latency-point' + (slow ? ' slow' : ''), cx: x(t), cy: y(s.ms[i]),
                                   r: slow ? 3.5 : 2.5, 'data-t': t, 'data-ms': s.ms[i], 'data-run': s.run[i]});
      point.appendChild(svgEl('title', {}, fixed(s.ms[i], 2) + ' ms at ' + fixed(t, 2) + ' s' +
                                           (slow ? ' (slow: at or above p95)' : '') + ' · click for its breakdown'));
      root.appendChild(point);
    });
    root.addEventListener('click', function (evt) {
      var point = evt.target.closest('.latency-point');
      if (!point || !DATA.timeline) return;
      showRun(+point.getAttribute('data-run'));
      document.getElementById('run-breakdown').scrollIntoView({block: 'nearest'});
    });
    return root;
  }

  flameGraph();
  timeline();
  latency();
})();
