// The compare page: the runs' metrics side by side, then each test image with every run's map.
(function comparePage() {
  const app = document.getElementById("app");
  const runs = DATA.runs, images = DATA.images;
  app.append(el("h1", { text: DATA.title }));
  app.append(el("ol", {}, runs.map((r) => el("li", {}, [el("b", { text: r.name }), document.createTextNode(` (${r.report.model || "model"}): ${r.dir}`)]))));

  const keys = [];
  for (const r of runs) for (const [k, v] of Object.entries(r.report)) {
    if (!keys.includes(k) && (v === null || typeof v !== "object") && !["model", "checkpoint"].includes(k)) keys.push(k);
  }
  app.append(el("h2", { text: "Metrics" }),
    table("each run's test split at its own thresholds", ["metric", ...runs.map((r) => r.name)],
      keys.map((k) => [k, ...runs.map((r) => r.report[k])])));
  const classes = [...new Set(images.map((im) => im.class))];
  const perClassNames = [...new Set(runs.flatMap((r) => Object.keys(r.report.per_class || {})))];
  if (perClassNames.length) {
    app.append(el("h2", { text: "Image AUROC per class" }), table("each anomaly class against all normal test images",
      ["class", ...runs.map((r) => r.name)],
      perClassNames.map((c) => [c, ...runs.map((r) => ((r.report.per_class || {})[c] || {}).image_AUROC)])));
  }

  const classSelect = el("select", { id: "class-filter", onchange: filter },
    [el("option", { value: "", text: "all classes" }), ...classes.map((c) => el("option", { value: c, text: c }))]);
  const count = el("p", { id: "gallery-count", class: "muted", "aria-live": "polite" });
  const list = el("ul", { class: "gallery-rows", id: "gallery", style: "list-style:none;padding:0" });
  const rows = images.map((im, n) => {
    const cells = [el("figure", {}, [im.image ? el("img", { src: im.image, alt: `test image ${im.path}`, loading: "lazy", width: 128, height: 128 }) : null,
      el("figcaption", { text: `#${n + 1} ${im.class}: ${im.path}` })])];
    im.runs.forEach((entry, r) => {
      const t = runs[r].thresholds.image.value;
      const text = entry ? `${runs[r].name}: ${fmt(entry.score)} ${outcome(entry.score, im.label, t)}` : `${runs[r].name}: not in this run`;
      cells.push(el("figure", {}, [entry && entry.overlay ? el("img", { src: entry.overlay, alt: `${runs[r].name} anomaly map`, loading: "lazy", width: 128, height: 128 }) : null,
        el("figcaption", { text })]));
    });
    const item = el("li", { class: "compare-row", tabindex: 0, "data-path": im.path, "aria-label": `${im.class} image ${im.path}` }, cells);
    list.append(item);
    return item;
  });
  arrowKeys(list, "li.compare-row");
  app.append(el("h2", { text: `Test images, in ${runs[0].name}'s score order, with each run's anomaly map` }),
    el("div", { class: "controls" }, [el("label", { for: "class-filter", text: "Class " }), classSelect]), count, list);
  function filter() {
    let visible = 0;
    rows.forEach((row, n) => { row.hidden = !!classSelect.value && images[n].class !== classSelect.value; visible += !row.hidden; });
    count.textContent = `${visible} of ${images.length} images shown`;
  }
  filter();
  document.documentElement.dataset.ready = "true";
})();
