// ortprof diff: the differential flame graph. Shape of AFTER (width: AFTER's CPU per inference),
// colour: red where a call path grew since BEFORE, blue where it shrank, white where it held.
// Data: #ortprof-diff-data {flame: {names, tree: [name, before, after, children], unit, vanished}}.
(function () {
  'use strict';
  var DATA = JSON.parse(document.getElementById('ortprof-diff-data').textContent);
  var app = document.getElementById('diff-flame-app');
  var tooltip = document.getElementById('tooltip');
  var ROW = 17;
  var SAME = 0.05;        // a frame within 5% of its larger side counts as unchanged (white)

  function make(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text != null) node.textContent = text;
    return node;
  }
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }
  function fmt(x) { var a = Math.abs(x); return Number(x).toFixed(a >= 100 ? 0 : a >= 1 ? 2 : 3); }

  var F = DATA.flame;
  if (!F) {
    app.appendChild(make('p', {'class': 'dim empty', 'data-empty': 'flame'},
      'No differential flame graph: it needs perf samples in two run directories (a report JSON keeps no stacks).'));
    return;
  }

  // Relative change in [-1, 1]: (after - before) / the larger of the two.
  function change(n) {
    var larger = Math.max(n.before, n.after);
    return larger > 0 ? (n.after - n.before) / larger : 0;
  }
  function colour(n) {
    var c = change(n);
    if (Math.abs(c) < SAME) return 'rgb(250,250,250)';
    var fade = Math.round(235 * (1 - Math.min(1, Math.abs(c))));
    return c > 0 ? 'rgb(230,' + fade + ',' + fade + ')' : 'rgb(' + fade + ',' + fade + ',230)';
  }
  function kind(n) {
    var c = change(n);
    return Math.abs(c) < SAME ? 'same' : (c > 0 ? 'grew' : 'shrank');
  }

  var nodes = [];
  (function walk(node, depth, x0, parent) {
    var index = nodes.length;
    nodes.push({name: F.names[node[0]], before: node[1], after: node[2], depth: depth, x0: x0, parent: parent});
    var x = x0;
    node[3].forEach(function (child) { walk(child, depth + 1, x, index); x += child[2]; });
  })(F.tree, 0, 0, -1);

  var legend = make('p', {'class': 'dim'}, 'Width: AFTER\'s ' + F.unit + '. Colour: red = the call path grew ' +
    'since BEFORE, blue = it shrank (deeper colour = larger change relative to the path), white = within 5%. ' +
    'Hover for both values; click a frame to zoom, click the root to reset.');
  app.appendChild(legend);
  var box = make('div', {id: 'diff-flame'});
  box.style.cssText = 'position:relative;width:100%;overflow:hidden;border:1px solid #eee;background:#fff';
  app.appendChild(box);
  var zoom = 0;

  function draw() {
    var z = nodes[zoom], width = box.clientWidth || 1000, scale = width / Math.max(z.after, 1e-9);
    var shown = [], maxDepth = 0;
    nodes.forEach(function (n, i) {
      var inside = n.depth >= z.depth && n.x0 >= z.x0 - 1e-9 && n.x0 + n.after <= z.x0 + z.after + 1e-6;
      var isAncestor = false;
      for (var p = z.parent; p >= 0; p = nodes[p].parent) if (p === i) isAncestor = true;
      if (!inside && !isAncestor) return;
      var left = isAncestor ? 0 : (n.x0 - z.x0) * scale, w = isAncestor ? width : n.after * scale;
      if (w < 0.5) return;
      shown.push([i, left, w]);
      maxDepth = Math.max(maxDepth, n.depth);
    });
    box.style.height = (maxDepth + 1) * ROW + 'px';
    var fragment = document.createDocumentFragment();
    shown.forEach(function (item) {
      var n = nodes[item[0]];
      var frame = make('div', {'class': 'frame diff-frame', 'data-index': item[0], 'data-name': n.name,
                               'data-before': n.before, 'data-after': n.after, 'data-change': kind(n)});
      frame.style.cssText = 'left:' + item[1].toFixed(1) + 'px;width:' + Math.max(item[2], 1).toFixed(1) + 'px;top:' +
        (maxDepth - n.depth) * ROW + 'px;background:' + colour(n) + ';color:#111';
      if (item[2] > 28) frame.textContent = n.name;
      fragment.appendChild(frame);
    });
    box.textContent = '';
    box.appendChild(fragment);
  }

  function tip(n) {
    var delta = n.after - n.before;
    var relative = n.before > 0 ? ' (' + (delta >= 0 ? '+' : '') + fmt(100 * delta / n.before) + '%)' : ' (new)';
    return '<b>' + escapeHtml(n.name) + '</b><br>before: ' + fmt(n.before) + ' ' + escapeHtml(F.unit) +
      '<br>after: ' + fmt(n.after) + ' ' + escapeHtml(F.unit) + '<br>change: ' + (delta >= 0 ? '+' : '') + fmt(delta) +
      relative + '<br>' + fmt(100 * n.after / Math.max(nodes[0].after, 1e-9)) + '% of AFTER';
  }

  box.addEventListener('mousemove', function (evt) {
    var target = evt.target.closest('.diff-frame');
    if (!target) { tooltip.hidden = true; return; }
    tooltip.innerHTML = tip(nodes[+target.getAttribute('data-index')]);
    tooltip.hidden = false;
    var x = evt.clientX + 14, y = evt.clientY + 14;
    if (x + tooltip.offsetWidth > window.innerWidth - 4) x = Math.max(4, evt.clientX - tooltip.offsetWidth - 14);
    if (y + tooltip.offsetHeight > window.innerHeight - 4) y = Math.max(4, evt.clientY - tooltip.offsetHeight - 14);
    tooltip.style.left = x + 'px';
    tooltip.style.top = y + 'px';
  });
  box.addEventListener('mouseleave', function () { tooltip.hidden = true; });
  box.addEventListener('click', function (evt) {
    var target = evt.target.closest('.diff-frame');
    if (!target) return;
    var index = +target.getAttribute('data-index');
    zoom = index === zoom ? 0 : index;
    draw();
  });
  var resizeTimer = null;
  window.addEventListener('resize', function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(draw, 150); });
  draw();

  if (F.vanished.length) {
    app.appendChild(make('h3', {}, 'Call paths BEFORE had that AFTER does not draw (' + F.unit + ' before)'));
    var table = make('table', {id: 'vanished'});
    F.vanished.forEach(function (row) {
      var tr = make('tr');
      tr.appendChild(make('td', {}, fmt(row[1])));
      var cell = make('td', {'class': 'l'});
      cell.appendChild(make('code', {}, row[0].split(';').slice(-5).join(' > ')));
      tr.appendChild(cell);
      table.appendChild(tr);
    });
    app.appendChild(table);
  }
})();
