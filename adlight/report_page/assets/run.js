// The run page: metrics, curves, histogram, threshold slider, gallery, full-size viewer.
(function runPage() {
  const app = document.getElementById("app");
  const report = DATA.report, images = DATA.images, classes = DATA.classes;
  const valT = DATA.thresholds.image.value;
  const scores = images.map((im) => im.score), labels = images.map((im) => im.label);
  // gallery order: highest score first, ties in split order
  const order = images.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);

  app.append(el("h1", { text: DATA.title }));
  if (report.checkpoint) app.append(el("p", { class: "muted", text: `checkpoint: ${report.checkpoint}` }));

  // ---- metrics and thresholds -------------------------------------------------------
  const skip = new Set(["per_class", "model", "checkpoint"]);
  // thresholds have their own table, with their sources
  const scalar = Object.entries(report).filter(([k, v]) => !skip.has(k) && !/_threshold(_source)?$/.test(k) &&
    (v === null || typeof v !== "object" || Array.isArray(v)));
  app.append(el("h2", { text: "Metrics" }),
    el("div", { class: "columns" }, [
      table("test split, at the thresholds below", ["metric", "value"], scalar),
      table("thresholds: score >= threshold is anomalous", ["level", "threshold", "source"],
        Object.keys(DATA.thresholds).map((l) => [l, DATA.thresholds[l].value, DATA.thresholds[l].source])),
    ]));
  const perClass = report.per_class || {};
  const columns = [["n_anomalous", "n"], ["image_AUROC", "image AUROC"], ["pixel_AUROC", "pixel AUROC"],
    ["image_recall", "recall"], ["image_precision", "precision"], ["image_F1", "F1"], ["pixel_F1", "pixel F1"]]
    .filter(([k]) => Object.values(perClass).some((row) => k in row));
  if (Object.keys(perClass).length) {
    app.append(el("h2", { text: "Per class" }), table("each anomaly class against all normal test images",
      ["class", ...columns.map(([, h]) => h)],
      Object.entries(perClass).map(([name, row]) => [name, ...columns.map(([k]) => row[k])])));
  }

  const confusion = DATA.confusion || [];
  if (confusion.length) {
    const cols = ["TP", "FP", "TN", "FN", "precision", "recall", "F1"];
    app.append(el("h2", { id: "confusion-heading", text: "Confusion" }), table(
      `at the image threshold ${fmt(valT)}; a class's FP and TN are the false alarms all classes share ` +
      "(misclassified.png beside this page shows the most confident mistakes)",
      ["class", ...cols], confusion.map((row) => [row.class, ...cols.map((k) => row[k])])));
  }

  // ---- threshold slider -------------------------------------------------------------
  const candidates = [...new Set(valT === null ? scores : [...scores, valT])].sort((a, b) => a - b);
  const valIndex = valT === null ? -1 : candidates.indexOf(valT);
  const slider = el("input", { type: "range", id: "threshold", min: 0, max: Math.max(candidates.length - 1, 0), step: 1,
    value: valIndex >= 0 ? valIndex : Math.floor(candidates.length / 2), list: "threshold-marks",
    "aria-describedby": "threshold-help" });
  const marks = el("datalist", { id: "threshold-marks" }, valIndex >= 0 ? [el("option", { value: valIndex, label: "validation" })] : []);
  const shown = el("output", { id: "threshold-value", for: "threshold" });
  const stats = {};
  const statBox = el("div", { class: "stats", role: "status", "aria-live": "polite" },
    ["precision", "recall", "F1", "TP", "FP", "FN", "TN"].map((k) => {
      stats[k] = el("b", { id: `stat-${k}` });
      return el("div", { class: "stat" }, [el("span", { text: k }), stats[k]]);
    }));
  const toValidation = el("button", { type: "button", id: "to-validation", disabled: valIndex < 0,
    text: valIndex < 0 ? "no validation threshold" : `validation threshold (${fmt(valT)})`,
    onclick: () => { slider.value = valIndex; update(); slider.focus(); } });
  app.append(el("h2", { text: "Threshold" }),
    el("p", { id: "threshold-help", class: "muted",
      text: `Precision, recall, F1 and counts at the slider's threshold, from the ${images.length} embedded test scores. ` +
        `Validation threshold: ${fmt(valT)} (${DATA.thresholds.image.source}). Arrow keys move one score at a time.` }),
    el("div", { class: "slider-row" }, [el("label", { for: "threshold", text: "Image threshold" }), slider, marks, shown, toValidation]),
    statBox);

  // ---- curves and histogram ---------------------------------------------------------
  const roc = lineChart("ROC curve", DATA.curves.roc, "false-positive rate", "true-positive rate", true);
  const pr = lineChart("Precision-recall curve", DATA.curves.pr, "recall", "precision", false);
  const hist = histogram(images, classes, valT, 30);
  const charts = [roc.figure, pr.figure];
  if ((DATA.curves.pro || []).length) {
    charts.push(lineChart("Per-region overlap (AUPRO: the area up to FPR 0.3)", DATA.curves.pro,
      "false-positive rate (pixels)", "mean overlap of defect regions", false).figure);
  }
  app.append(el("h2", { text: "Curves" }), el("div", { class: "charts" }, [...charts, hist.figure]),
    el("p", { class: "muted", text: "Red dot: the slider's threshold (ROC and precision-recall)." }));

  // ---- gallery ----------------------------------------------------------------------
  const outcomeBoxes = {};
  const outcomeFilter = el("fieldset", {}, [el("legend", { text: "Show outcomes at the slider's threshold" }),
    ...["TP", "FP", "FN", "TN"].map((o) => {
      outcomeBoxes[o] = el("input", { type: "checkbox", id: `show-${o}`, checked: true, onchange: filter });
      return el("label", { for: `show-${o}` }, [outcomeBoxes[o], document.createTextNode(` ${o}`)]);
    })]);
  const classSelect = el("select", { id: "class-filter", onchange: filter },
    [el("option", { value: "", text: "all classes" }), ...classes.map((c) => el("option", { value: c, text: c }))]);
  const count = el("p", { id: "gallery-count", class: "muted", "aria-live": "polite" });
  const list = el("ul", { class: "gallery", id: "gallery", "aria-labelledby": "gallery-heading" });
  const cards = [];
  order.forEach((i, rank) => {
    const im = images[i];
    const pics = [];
    if (im.image) pics.push(el("img", { src: im.image, alt: "", loading: "lazy", width: 128, height: 128 }));
    if (im.overlay) pics.push(el("img", { src: im.overlay, alt: "", loading: "lazy", width: 128, height: 128 }));
    const badge = el("span", { class: "badge" });
    const card = el("button", { type: "button", class: "card", "data-index": i, "data-score": im.score,
      onclick: () => openViewer(rank) }, [el("span", { class: "pics" }, pics),
      el("span", { class: "caption" }, [el("span", { text: `#${rank + 1} ${fmt(im.score)}` }), badge]),
      el("span", { class: "caption muted", text: im.class })]);
    const item = el("li", {}, [card]);
    cards.push({ i, rank, card, badge, item });
    list.append(item);
  });
  arrowKeys(list, "button.card");
  app.append(el("h2", { id: "gallery-heading", text: "Test images, highest score first" }),
    el("div", { class: "controls" }, [outcomeFilter, el("label", { for: "class-filter", text: "Class " }), classSelect]),
    count, list);

  function filter() {
    const wanted = classSelect.value;
    let visible = 0;
    for (const c of cards) {
      const o = c.card.dataset.outcome;
      const show = (!wanted || images[c.i].class === wanted) && (!(o in outcomeBoxes) || outcomeBoxes[o].checked);
      c.item.hidden = !show;
      visible += show;
    }
    count.textContent = `${visible} of ${images.length} images shown`;
  }

  // ---- full-size viewer -------------------------------------------------------------
  const viewer = el("dialog", { id: "viewer", "aria-labelledby": "viewer-title" });
  document.body.append(viewer);
  let viewing = 0;
  function openViewer(rank) {
    viewing = rank;
    const im = images[order[rank]], t = currentThreshold();
    const pictures = [["image", "image"], ["overlay", "anomaly map, ground truth outlined in green"],
      ["predicted", `predicted mask at pixel threshold ${fmt(DATA.thresholds.pixel?.value)}`]]
      .filter(([k]) => im[k]).map(([k, caption]) => el("figure", {}, [el("img", { src: im[k], alt: caption }), el("figcaption", { text: caption })]));
    viewer.replaceChildren(
      el("h2", { id: "viewer-title", text: `#${rank + 1} of ${order.length}: score ${fmt(im.score)}` }),
      el("p", { class: "path", text: im.path }),
      el("p", { text: `class ${im.class}; ${outcome(im.score, im.label, t)} at threshold ${fmt(t)}` }),
      el("div", { class: "pics" }, pictures),
      el("p", { class: "controls" }, [
        el("button", { type: "button", text: "previous", disabled: rank === 0, onclick: () => openViewer(rank - 1) }),
        el("button", { type: "button", text: "next", disabled: rank === order.length - 1, onclick: () => openViewer(rank + 1) }),
        el("button", { type: "button", text: "close", id: "viewer-close", onclick: () => viewer.close() })]));
    if (!viewer.open) viewer.showModal();
    viewer.querySelector("#viewer-close").focus();
  }
  viewer.addEventListener("keydown", (event) => {
    if (event.key === "ArrowRight" && viewing < order.length - 1) openViewer(viewing + 1);
    if (event.key === "ArrowLeft" && viewing > 0) openViewer(viewing - 1);
  });
  viewer.addEventListener("close", () => cards[viewing].card.focus());

  // ---- the slider drives stats, markers and outcomes ----------------------------------
  function currentThreshold() { return candidates.length ? candidates[Number(slider.value)] : null; }
  function update() {
    const t = currentThreshold();
    if (t === null) return;
    const m = metricsAt(scores, labels, t);
    for (const [k, node] of Object.entries(stats)) { node.textContent = fmt(m[k]); node.dataset.value = String(m[k]); }
    shown.textContent = fmt(t) + (t === valT ? " (validation)" : "");
    shown.dataset.value = String(t);
    slider.setAttribute("aria-valuetext", `${fmt(t)}${t === valT ? ", the validation threshold" : ""}: F1 ${fmt(m.F1)}`);
    const fpr = m.FP + m.TN ? m.FP / (m.FP + m.TN) : 0, tpr = m.TP + m.FN ? m.TP / (m.TP + m.FN) : 0;
    roc.mark(fpr, tpr);
    pr.mark(m.recall, m.TP + m.FP ? m.precision : 1);
    hist.mark(t);
    for (const c of cards) {
      const o = outcome(scores[c.i], labels[c.i], t);
      c.card.dataset.outcome = o;
      c.card.className = `card ${o}`;
      c.badge.textContent = o;
      c.badge.className = `badge ${o}`;
      c.card.setAttribute("aria-label", `rank ${c.rank + 1}, score ${fmt(scores[c.i])}, ${images[c.i].class}, ${o}`);
    }
    filter();
  }
  slider.addEventListener("input", update);
  update();
  filter();
  document.documentElement.dataset.ready = "true";
})();
