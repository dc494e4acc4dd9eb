"use strict";
// Shared by the run page and the compare page: DOM and SVG helpers, the report's threshold rule.
const SVG_NS = "http://www.w3.org/2000/svg";
const DATA = JSON.parse(document.getElementById("page-data").textContent);
const CLASS_COLOURS = ["#57606a", "#cf222e", "#0969da", "#9a6700", "#8250df", "#1a7f37", "#bf3989", "#116329"];

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children || []) if (child) node.append(child);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value)) return `[${value.map(fmt).join(", ")}]`;  // an interval
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  return String(value);
}

// The report's rule (adlight/metrics.py threshold_metrics, torchmetrics): score >= t is
// anomalous; ratios are float32 divisions (Math.fround) and 0 where the denominator is 0.
// Scores are float32 and torch compares them with the threshold rounded to float32: so do we.
function metricsAt(scores, labels, threshold) {
  const t = Math.fround(threshold);
  let tp = 0, fp = 0, fn = 0, tn = 0;
  for (let i = 0; i < scores.length; i++) {
    const flagged = scores[i] >= t;
    if (labels[i] === 1) { if (flagged) tp++; else fn++; } else { if (flagged) fp++; else tn++; }
  }
  const ratio = (num, den) => (den === 0 ? 0 : Math.fround(num / den));
  return { TP: tp, FP: fp, FN: fn, TN: tn, precision: ratio(tp, tp + fp), recall: ratio(tp, tp + fn),
           F1: ratio(2 * tp, 2 * tp + fn + fp) };
}

function outcome(score, label, t) {
  if (t === null || t === undefined) return label === 1 ? "anomalous" : "normal";
  return score >= Math.fround(t) ? (label === 1 ? "TP" : "FP") : (label === 1 ? "FN" : "TN");
}

function table(caption, headers, rows) {
  const head = el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })));
  const body = rows.map((cells) => el("tr", {}, cells.map((c, i) =>
    i === 0 ? el("th", { scope: "row", text: fmt(c) }) : el("td", { text: fmt(c) }))));
  return el("div", { class: "table-wrap" }, [el("table", {}, [el("caption", { class: "muted", text: caption }),
    el("thead", {}, [head]), el("tbody", {}, body)])]);
}

// A square line chart of [x, y] points in [0, 1]^2; returns {figure, mark(x, y)}.
function lineChart(title, points, xLabel, yLabel, diagonal) {
  const size = 240, pad = 34, w = size + pad + 10, h = size + pad + 10;
  const X = (x) => pad + x * size, Y = (y) => 10 + (1 - y) * size;
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img", "aria-label": `${title}: ${yLabel} against ${xLabel}` });
  root.append(svg("rect", { x: pad, y: 10, width: size, height: size, fill: "none", stroke: "#d0d7de" }));
  if (diagonal) root.append(svg("line", { x1: X(0), y1: Y(0), x2: X(1), y2: Y(1), stroke: "#d0d7de", "stroke-dasharray": "4 4" }));
  for (const v of [0, 0.5, 1]) {
    const tx = svg("text", { x: X(v), y: h - 14, "text-anchor": "middle" }); tx.textContent = v; root.append(tx);
    const ty = svg("text", { x: pad - 4, y: Y(v) + 4, "text-anchor": "end" }); ty.textContent = v; root.append(ty);
  }
  const xl = svg("text", { x: X(0.5), y: h - 1, "text-anchor": "middle" }); xl.textContent = xLabel; root.append(xl);
  const yl = svg("text", { x: 10, y: Y(0.5), transform: `rotate(-90 10 ${Y(0.5)})`, "text-anchor": "middle" }); yl.textContent = yLabel; root.append(yl);
  if (points.length) root.append(svg("polyline", { points: points.map(([x, y]) => `${X(x)},${Y(y)}`).join(" "),
    fill: "none", stroke: "#0969da", "stroke-width": 2 }));
  const dot = svg("circle", { r: 5, fill: "#cf222e", visibility: "hidden" });
  root.append(dot);
  const figure = el("figure", {}, [el("figcaption", { text: title }), points.length ? root : el("p", { class: "muted", text: "needs normal and anomalous test images" })]);
  return { figure, mark(x, y) { dot.setAttribute("cx", X(x)); dot.setAttribute("cy", Y(y)); dot.setAttribute("visibility", "visible"); } };
}

// Score histogram, stacked by class, with the validation threshold (dashed) and the slider's.
function histogram(images, classes, valThreshold, bins) {
  const scores = images.map((im) => im.score);
  // reduce, not Math.min(...scores): spreading 100k+ arguments overflows the call stack
  const lo = scores.reduce((a, b) => Math.min(a, b), Infinity), hi = scores.reduce((a, b) => Math.max(a, b), -Infinity);
  const span = hi - lo || 1;
  const counts = classes.map(() => new Array(bins).fill(0));
  for (const im of images) {
    const b = Math.min(bins - 1, Math.floor(((im.score - lo) / span) * bins));
    counts[classes.indexOf(im.class)][b]++;
  }
  const totals = counts[0].map((_, b) => counts.reduce((s, c) => s + c[b], 0));
  const top = totals.reduce((a, b) => Math.max(a, b), 1), W = 280, H = 200, pad = 30;
  const X = (s) => pad + ((s - lo) / span) * (W - pad - 6), Y = (n) => H - 20 - (n / top) * (H - 30);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": `histogram of ${images.length} image scores by class, from ${fmt(lo)} to ${fmt(hi)}` });
  const bw = (W - pad - 6) / bins;
  for (let b = 0; b < bins; b++) {
    let base = 0;
    classes.forEach((_, c) => {
      const n = counts[c][b]; if (!n) return;
      root.append(svg("rect", { x: pad + b * bw, y: Y(base + n), width: Math.max(bw - 1, 1), height: Y(base) - Y(base + n), fill: CLASS_COLOURS[c % CLASS_COLOURS.length] }));
      base += n;
    });
  }
  root.append(svg("line", { x1: pad, y1: H - 20, x2: W - 6, y2: H - 20, stroke: "#57606a" }));
  for (const [v, anchor] of [[lo, "start"], [hi, "end"]]) {
    const t = svg("text", { x: X(v), y: H - 6, "text-anchor": anchor }); t.textContent = fmt(v); root.append(t);
  }
  const topText = svg("text", { x: pad - 4, y: Y(top) + 4, "text-anchor": "end" }); topText.textContent = top; root.append(topText);
  if (valThreshold !== null && valThreshold !== undefined) {
    root.append(svg("line", { x1: X(valThreshold), x2: X(valThreshold), y1: 8, y2: H - 20, stroke: "#1b1f24", "stroke-dasharray": "4 3", "stroke-width": 1.5 }));
  }
  const current = svg("line", { y1: 8, y2: H - 20, stroke: "#cf222e", "stroke-width": 2, visibility: "hidden" });
  root.append(current);
  const legend = el("div", { class: "legend" }, classes.map((c, i) => el("span", {}, [
    el("span", { class: "swatch", style: `background:${CLASS_COLOURS[i % CLASS_COLOURS.length]}` }), document.createTextNode(c)])));
  legend.append(el("span", { text: "dashed: validation threshold; red: slider" }));
  const figure = el("figure", {}, [el("figcaption", { text: "Score histogram by class" }), root, legend]);
  return { figure, mark(t) { const x = Math.min(Math.max(X(t), pad), W - 6); current.setAttribute("x1", x); current.setAttribute("x2", x); current.setAttribute("visibility", "visible"); } };
}

// Arrow keys, Home and End move focus through the visible items of a list of buttons.
function arrowKeys(list, selector) {
  list.addEventListener("keydown", (event) => {
    const keys = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: -Infinity, End: Infinity };
    if (!(event.key in keys)) return;
    const items = [...list.querySelectorAll(selector)].filter((b) => !b.closest("[hidden]") && !b.hidden);
    const at = items.indexOf(document.activeElement);
    if (at < 0 || !items.length) return;
    const step = keys[event.key];
    const next = step === -Infinity ? 0 : step === Infinity ? items.length - 1 : Math.min(items.length - 1, Math.max(0, at + step));
    items[next].focus();
    event.preventDefault();
  });
}
