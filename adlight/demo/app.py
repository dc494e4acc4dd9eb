"""The Gradio page: files in, a table, the overlays and masks, and the threshold slider.

The model runs once per upload; the slider only re-reads the scores kept in the page's state,
so moving it is instant however slow the model is.
"""

from __future__ import annotations

import math
from pathlib import Path

from adlight.demo.pictures import map_overlay, mask_picture
from adlight.errors import AdlightError
from adlight.inference import Inferencer
from adlight.inference.images import read_image, to_uint8

TABLE_COLUMNS = ["image", "score", "decision", "at exported threshold", "flipped"]


def decide(score: float, threshold: float | None) -> str:
    if threshold is None or math.isnan(threshold):
        return "no threshold"
    return "anomalous" if score >= threshold else "normal"


def table_rows(scored: list[dict], threshold: float | None, exported: float | None) -> list[list]:
    """One row per image: name, score, decision at ``threshold``, at the exported one, flipped."""
    rows = []
    for item in scored:
        now, before = decide(item["score"], threshold), decide(item["score"], exported)
        rows.append([item["name"], round(item["score"], 6), now, before,
                     "yes" if now != before and "no threshold" not in (now, before) else ""])
    return rows


def summary(scored: list[dict], threshold: float | None, exported: float | None) -> str:
    """The page's text: one line per image (name, score, decision) and how many flip."""
    rows = table_rows(scored, threshold, exported)
    lines = [f"{name}: score {score:.6g}, {now}" for name, score, now, _, _ in rows]
    flipped = sum(row[4] == "yes" for row in rows)
    if rows:
        lines.append(f"{flipped} of {len(rows)} images flip against the exported threshold"
                     + (f" {exported:.6g}" if exported is not None else ""))
    return "\n".join(lines)


class DemoModel:
    """The Inferencer and what the page needs from it."""

    def __init__(self, exported: str) -> None:
        self.inferencer = Inferencer(exported)
        metadata = self.inferencer.metadata
        self.threshold = self.inferencer.image_threshold
        self.threshold_source = (metadata.get("image_threshold") or {}).get("source", "none")
        self.pixel_threshold = self.inferencer.pixel_threshold

    def score(self, paths: list[str]) -> tuple[list[dict], list[tuple], list[tuple]]:
        """(per image: name, score; overlays; masks) for the files a user dropped. A file that
        cannot be read is listed with its error instead of stopping the page."""
        inferencer = self.inferencer
        scored, overlays, masks = [], [], []
        for path in paths:
            name = Path(path).name
            try:
                pixels = to_uint8(read_image(path, inferencer.channels), inferencer.height, inferencer.width)
            except AdlightError as error:
                scored.append({"name": name, "score": math.nan, "error": str(error)})
                continue
            result = inferencer.predict(pixels[None])
            scored.append({"name": name, "score": float(result["score"][0])})
            if "anomaly_map" in result:
                amap = result["anomaly_map"][0, 0]
                scale = 2 * self.pixel_threshold if self.pixel_threshold else float(amap.max()) or 1.0
                overlays.append((map_overlay(pixels, amap, scale), name))
                if "defect_mask" in result:
                    masks.append((mask_picture(result["defect_mask"][0, 0]), name))
        return scored, overlays, masks


def build_demo(exported: str):
    """The ``gr.Blocks`` page for an exported folder (not launched)."""
    import gradio as gr

    model = DemoModel(exported)
    exported_t = model.threshold
    start = exported_t if exported_t is not None else 0.5
    with gr.Blocks(title="adlight demo", analytics_enabled=False) as demo:
        gr.Markdown(f"# adlight demo\n`{exported}`: exported image threshold "
                    f"**{'none' if exported_t is None else f'{exported_t:.6g}'}** ({model.threshold_source})")
        scored = gr.State([])
        with gr.Row():
            files = gr.File(label="images", file_count="multiple", file_types=["image"], elem_id="files")
            with gr.Column():
                top = max(2.0 * start, 1e-6)
                threshold = gr.Slider(0.0, top, value=start, step=top / 1000, label="image threshold",
                                      elem_id="threshold")
                text = gr.Textbox(label="scores", lines=6, interactive=False, elem_id="scores")
        table = gr.Dataframe(headers=TABLE_COLUMNS, label="images", elem_id="table", interactive=False)
        with gr.Row():
            overlays = gr.Gallery(label="anomaly map over the image", elem_id="overlays", columns=4)
            masks = gr.Gallery(label="predicted defect mask", elem_id="masks", columns=4)

        def on_files(paths, value):
            paths = [p if isinstance(p, str) else p.name for p in (paths or [])]
            items, pictures, mask_pictures = model.score(paths)
            finite = [i["score"] for i in items if math.isfinite(i["score"])]
            top = max(2.0 * start, *(1.25 * s for s in finite), 1e-6)
            return (items, table_rows(items, value, exported_t), summary(items, value, exported_t),
                    pictures, mask_pictures, gr.update(maximum=top, step=top / 1000))

        def on_threshold(items, value):
            return table_rows(items, value, exported_t), summary(items, value, exported_t)

        files.change(on_files, [files, threshold], [scored, table, text, overlays, masks, threshold])
        threshold.change(on_threshold, [scored, threshold], [table, text])
    return demo


__all__ = ["DemoModel", "build_demo", "decide", "summary", "table_rows"]
