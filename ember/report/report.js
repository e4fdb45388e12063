// ember report: draws the charts of the page's embedded JSON (#ember-report-data) as inline SVG.
// No library, no network. Each chart: axes that fit their labels, hover to read every line's value
// at the nearest x, drag to zoom into an x range (double-click or "reset" to zoom out), a legend
// whose entries hide and show lines, and for per-step charts an exponential-moving-average
// smoothing slider (TensorBoard's, debiased) over the faint raw line.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 560, H = 300, TOP = 12, RIGHT = 16, FONT = 11;
  var data = JSON.parse(document.getElementById("ember-report-data").textContent);

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function html(name, cls, parent, text) {
    var node = document.createElement(name);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "-";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }
  function niceStep(span, count) {
    var raw = span / Math.max(count, 1), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
  }
  function linearTicks(lo, hi, count, integer) {
    if (hi <= lo) return [lo];
    var step = niceStep(hi - lo, count);
    if (integer) step = Math.max(1, Math.round(step));
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      out.push(Math.abs(t) < step * 1e-9 ? 0 : Number(t.toPrecision(12)));
    }
    return out;
  }
  function logTicks(lo, hi) {
    var out = [], a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
    var mult = b - a <= 2 ? [1, 2, 5] : [1];
    for (var e = a; e <= b; e++) {
      mult.forEach(function (m) {
        var t = m * Math.pow(10, e);
        if (t >= lo * 0.999 && t <= hi * 1.001) out.push(t);
      });
    }
    return out.length >= 2 ? out : [lo, hi];
  }
  function smoothed(ys, weight) {
    // TensorBoard's smoothing: EMA, debiased so the first points are not pulled towards 0.
    var out = [], last = 0, n = 0;
    for (var i = 0; i < ys.length; i++) {
      if (ys[i] === null) { out.push(null); continue; }
      last = last * weight + (1 - weight) * ys[i];
      n++;
      out.push(weight > 0 ? last / (1 - Math.pow(weight, n)) : ys[i]);
    }
    return out;
  }

  function Chart(spec, holder) {
    this.spec = spec;
    this.hidden = {};
    this.smooth = spec.smooth ? 0.6 : 0;
    this.zoom = null; // [x0, x1] in data units, or null for everything
    var fig = html("figure", "plot", holder);
    fig.id = "chart-" + spec.id;
    var head = html("div", "plot-head", fig);
    html("span", "plot-title", head, spec.title);
    var reset = html("button", "reset", head, "reset zoom");
    reset.type = "button";
    reset.hidden = true;
    this.reset = reset;
    this.box = html("div", "plot-box", fig);
    this.svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img" }, this.box);
    el("title", {}, this.svg).textContent = spec.title;
    this.tip = html("div", "tip", this.box);
    this.tip.hidden = true;
    this.controls = html("div", "plot-controls", fig);
    var self = this;
    if (spec.smooth) {
      var label = html("label", "", this.controls, "smoothing ");
      var slider = html("input", "", label);
      slider.type = "range"; slider.min = "0"; slider.max = "0.99"; slider.step = "0.01";
      slider.value = String(this.smooth);
      var shown = html("span", "", label, " " + this.smooth.toFixed(2));
      slider.addEventListener("input", function () {
        self.smooth = Number(slider.value);
        shown.textContent = " " + self.smooth.toFixed(2);
        self.draw();
      });
    }
    this.legend = html("div", "legend", fig);
    spec.series.forEach(function (s) {
      var item = html("button", "legend-item", self.legend);
      item.type = "button";
      var swatch = html("span", "swatch" + (s.dashed ? " dashed" : ""), item);
      swatch.style.borderColor = s.color;
      html("span", "", item, s.label);
      item.addEventListener("click", function () {
        self.hidden[s.id] = !self.hidden[s.id];
        item.classList.toggle("off", !!self.hidden[s.id]);
        self.draw();
      });
    });
    reset.addEventListener("click", function () { self.zoom = null; self.draw(); });
    this.listen();
    this.draw();
  }

  Chart.prototype.visible = function () {
    var self = this;
    return this.spec.series.filter(function (s) { return !self.hidden[s.id]; });
  };

  Chart.prototype.domain = function (series) {
    var spec = this.spec, x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    var zoom = this.zoom;
    series.forEach(function (s) {
      s.x.forEach(function (x, i) {
        var y = s.y[i];
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y === null || (spec.log_y && y <= 0)) return;
        if (zoom && (x < zoom[0] || x > zoom[1])) return;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      });
    });
    if (zoom) { x0 = zoom[0]; x1 = zoom[1]; }
    if (!isFinite(x0)) { x0 = 0; x1 = 1; }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (!isFinite(y0)) { y0 = 0; y1 = 1; }
    if (spec.log_y) {
      if (y1 === y0) { y0 /= 2; y1 *= 2; }
      var pad = Math.pow(y1 / y0, 0.05);
      return [x0, x1, y0 / pad, y1 * pad];
    }
    if (y1 === y0) { var d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    var m = (y1 - y0) * 0.05;
    return [x0, x1, y0 - m, y1 + m];
  };

  Chart.prototype.draw = function () {
    var spec = this.spec, svg = this.svg, self = this;
    while (svg.childNodes.length > 1) svg.removeChild(svg.lastChild);
    var series = this.visible();
    var dom = this.domain(series.length ? series : spec.series);
    var integerX = spec.x_label === "epoch" || spec.x_label === "step";
    var yt = spec.log_y ? logTicks(dom[2], dom[3]) : linearTicks(dom[2], dom[3], 5, false);
    var xt = linearTicks(dom[0], dom[1], 6, integerX);
    // The left margin fits the longest y tick label and the rotated axis title: nothing clipped.
    var longest = Math.max.apply(null, yt.map(function (t) { return fmt(t).length; }));
    var left = 22 + longest * FONT * 0.62 + 8, bottom = 40;
    var pw = W - left - RIGHT, ph = H - TOP - bottom;
    function sx(x) { return left + (x - dom[0]) / (dom[1] - dom[0]) * pw; }
    function sy(y) {
      if (spec.log_y) {
        var a = Math.log10(dom[2]), b = Math.log10(dom[3]);
        return TOP + ph - (Math.log10(y) - a) / (b - a) * ph;
      }
      return TOP + ph - (y - dom[2]) / (dom[3] - dom[2]) * ph;
    }
    this.scale = { sx: sx, sy: sy, left: left, pw: pw, ph: ph, dom: dom };
    var axes = el("g", { class: "axes" }, svg);
    yt.forEach(function (t) {
      var y = sy(t).toFixed(2);
      el("line", { x1: left, x2: left + pw, y1: y, y2: y, class: "grid" }, axes);
      el("text", { x: left - 6, y: y, "text-anchor": "end", "dominant-baseline": "middle" }, axes)
        .textContent = fmt(t);
    });
    xt.forEach(function (t) {
      var x = sx(t).toFixed(2);
      el("line", { x1: x, x2: x, y1: TOP, y2: TOP + ph, class: "grid" }, axes);
      el("text", { x: x, y: TOP + ph + 15, "text-anchor": "middle" }, axes).textContent = fmt(t);
    });
    el("rect", { x: left, y: TOP, width: pw, height: ph, class: "frame" }, axes);
    el("text", { x: left + pw / 2, y: H - 6, "text-anchor": "middle", class: "axis-title" }, axes)
      .textContent = spec.x_label;
    var ty = TOP + ph / 2;
    el("text", { x: 12, y: ty, transform: "rotate(-90 12 " + ty + ")", "text-anchor": "middle",
      class: "axis-title" }, axes).textContent = spec.y_label + (spec.log_y ? " (log)" : "");
    var clipId = "clip-" + spec.id;
    var clip = el("clipPath", { id: clipId }, svg);
    el("rect", { x: left, y: TOP - 6, width: pw, height: ph + 12 }, clip);
    var plot = el("g", { "clip-path": "url(#" + clipId + ")" }, svg);
    if (spec.best !== null && spec.best !== undefined) {
      var bx = sx(spec.best).toFixed(2);
      el("line", { x1: bx, x2: bx, y1: TOP, y2: TOP + ph, class: "best-line" }, plot);
    }
    series.forEach(function (s) { self.drawSeries(plot, s, sx, sy); });
    this.cursor = el("line", { y1: TOP, y2: TOP + ph, class: "cursor", visibility: "hidden" }, svg);
    this.band = el("rect", { y: TOP, height: ph, class: "band", visibility: "hidden" }, svg);
    this.reset.hidden = !this.zoom;
  };

  Chart.prototype.drawSeries = function (plot, s, sx, sy) {
    var spec = this.spec;
    var g = el("g", { id: s.id, class: "series" });
    for (var k in s.data) g.setAttribute("data-" + k, JSON.stringify(s.data[k]));
    g.setAttribute("data-values", JSON.stringify(s.y));
    g.setAttribute("data-epochs", JSON.stringify(s.x));
    if (s.best !== null && s.best !== undefined) g.setAttribute("data-best", String(s.best));
    plot.appendChild(g);
    var ys = s.y;
    var smooth = spec.smooth && this.smooth > 0;
    function path(values) {
      var d = [], pen = "M";
      for (var i = 0; i < s.x.length; i++) {
        var v = values[i];
        if (v === null || (spec.log_y && v <= 0)) { pen = "M"; continue; }
        d.push(pen + " " + sx(s.x[i]).toFixed(2) + " " + sy(v).toFixed(2));
        pen = "L";
      }
      return d.join(" ");
    }
    var attrs = { d: path(ys), stroke: s.color, fill: "none", "stroke-width": smooth ? 1 : 1.6 };
    if (s.dashed) attrs["stroke-dasharray"] = "5 3";
    if (smooth) attrs["stroke-opacity"] = 0.3;
    el("path", attrs, g);
    if (smooth) {
      el("path", { d: path(smoothed(ys, this.smooth)), stroke: s.color, fill: "none",
        "stroke-width": 1.8, class: "smoothed" }, g);
    }
    if (s.x.length <= 60 && !spec.smooth) {
      for (var i = 0; i < s.x.length; i++) {
        if (ys[i] === null || (spec.log_y && ys[i] <= 0)) continue;
        el("circle", { cx: sx(s.x[i]).toFixed(2), cy: sy(ys[i]).toFixed(2), r: 2.5,
          fill: s.color }, g);
      }
    }
    var b = s.x.indexOf(s.best);
    if (b >= 0 && ys[b] !== null) {
      var cx = sx(s.x[b]), cy = sy(ys[b]), pts = [];
      for (var p = 0; p < 10; p++) {
        var r = p % 2 ? 3 : 7, a = Math.PI / 5 * p - Math.PI / 2;
        pts.push((cx + r * Math.cos(a)).toFixed(2) + "," + (cy + r * Math.sin(a)).toFixed(2));
      }
      el("polygon", { points: pts.join(" "), fill: s.color, class: "best" }, g);
    }
  };

  Chart.prototype.xAt = function (event) {
    var rect = this.svg.getBoundingClientRect(), sc = this.scale;
    var px = (event.clientX - rect.left) * W / rect.width;
    var x = sc.dom[0] + (px - sc.left) / sc.pw * (sc.dom[1] - sc.dom[0]);
    return { px: px, x: x, inside: px >= sc.left && px <= sc.left + sc.pw };
  };

  Chart.prototype.hover = function (event) {
    var at = this.xAt(event), sc = this.scale, self = this;
    if (!at.inside) { this.leave(); return; }
    var rows = [], nearest = null;
    this.visible().forEach(function (s) {
      var best = -1, dist = Infinity;
      for (var i = 0; i < s.x.length; i++) {
        var d = Math.abs(s.x[i] - at.x);
        if (s.y[i] !== null && d < dist) { dist = d; best = i; }
      }
      if (best < 0) return;
      if (nearest === null || Math.abs(s.x[best] - at.x) < Math.abs(nearest - at.x)) nearest = s.x[best];
      var shown = self.spec.smooth && self.smooth > 0 ? smoothed(s.y, self.smooth)[best] : s.y[best];
      rows.push({ label: s.label, color: s.color, x: s.x[best], value: shown, raw: s.y[best] });
    });
    if (nearest === null) { this.leave(); return; }
    var cx = sc.sx(nearest).toFixed(2);
    this.cursor.setAttribute("x1", cx);
    this.cursor.setAttribute("x2", cx);
    this.cursor.setAttribute("visibility", "visible");
    var tip = this.tip;
    tip.textContent = "";
    html("div", "tip-x", tip, this.spec.x_label + " " + fmt(nearest));
    rows.filter(function (r) { return r.x === nearest; }).forEach(function (r) {
      var row = html("div", "tip-row", tip);
      var sw = html("span", "swatch", row);
      sw.style.borderColor = r.color;
      var text = r.label + ": " + fmt(r.value);
      if (r.value !== r.raw) text += " (raw " + fmt(r.raw) + ")";
      html("span", "tip-value", row, text);
    });
    tip.hidden = false;
    var rect = this.svg.getBoundingClientRect();
    var left = (sc.sx(nearest) * rect.width / W) + 12;
    if (left > rect.width - 180) left = Math.max(0, left - 200);
    tip.style.left = left + "px";
    tip.style.top = "8px";
  };

  Chart.prototype.leave = function () {
    this.tip.hidden = true;
    if (this.cursor) this.cursor.setAttribute("visibility", "hidden");
  };

  Chart.prototype.listen = function () {
    var self = this, start = null;
    this.svg.addEventListener("mousemove", function (event) {
      self.hover(event);
      if (start === null) return;
      var at = self.xAt(event), sc = self.scale;
      var a = Math.max(sc.left, Math.min(start.px, at.px));
      var b = Math.min(sc.left + sc.pw, Math.max(start.px, at.px));
      self.band.setAttribute("x", a.toFixed(2));
      self.band.setAttribute("width", Math.max(0, b - a).toFixed(2));
      self.band.setAttribute("visibility", "visible");
    });
    this.svg.addEventListener("mouseleave", function () { self.leave(); });
    this.svg.addEventListener("mousedown", function (event) {
      var at = self.xAt(event);
      if (at.inside) { start = at; event.preventDefault(); }
    });
    window.addEventListener("mouseup", function (event) {
      if (start === null) return;
      var end = self.xAt(event), a = Math.min(start.x, end.x), b = Math.max(start.x, end.x);
      var wide = Math.abs(end.px - start.px) > 4;
      start = null;
      self.band.setAttribute("visibility", "hidden");
      if (wide && b > a) { self.zoom = [a, b]; self.draw(); }
    });
    this.svg.addEventListener("dblclick", function () { self.zoom = null; self.draw(); });
  };

  var sections = {};
  (data.charts || []).forEach(function (spec) {
    var grid = sections[spec.section];
    if (!grid) {
      var section = html("section", "charts");
      html("h2", "", section, spec.section);
      grid = sections[spec.section] = html("div", "grid", section);
      document.getElementById("ember-charts").appendChild(section);
    }
    new Chart(spec, grid);
  });
  window.emberReport = { charts: (data.charts || []).length, ready: true };
})();
