"""Matplotlib figures of a test run: examples, ROC curve, score histograms, pixel F1 vs tau,
the misclassified images."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs write files, nobody watches a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from adlight.metrics import auroc, binned_precision_recall_curve, has_both_classes, roc_curve  # noqa: E402
from adlight.metrics.epoch_outputs import EpochOutputs  # noqa: E402


def _as_picture(image: Tensor):
    image = image.detach().float().clamp(0, 1)
    if image.shape[0] == 1:
        return image[0].numpy(), "gray"
    return image.permute(1, 2, 0).numpy(), None


def examples_figure(examples: list[dict[str, Any]], pixel_threshold: float | None) -> Figure:
    """One row per image: input / reconstruction / anomaly map / ground truth / predicted mask
    (the rows of Fadaeinejad's Figs. 9-12); columns a model cannot give are left out."""
    columns = ["input"]
    if any("reconstruction" in e for e in examples):
        columns.append("reconstruction")
    if any("anomaly_map" in e for e in examples):
        columns.append("anomaly map")
        if any("mask" in e for e in examples):
            columns.append("ground truth")
        if pixel_threshold is not None and not math.isnan(pixel_threshold):
            columns.append(f"mask at tau={pixel_threshold:.3g}")
    # one colour scale for every map, so a normal image's map looks as cool as it is
    map_max = max((float(e["anomaly_map"].max()) for e in examples if "anomaly_map" in e), default=1.0)
    # from 0, or from the lowest value where maps go below it (SimpleNet's minus-discriminator
    # maps are all negative where every patch sits beyond its margin: a scale from 0 is empty)
    map_min = min([0.0] + [float(e["anomaly_map"].min()) for e in examples if "anomaly_map" in e])
    map_max = max(map_max, map_min + 1e-12)
    rows = max(len(examples), 1)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns), 2.2 * rows), squeeze=False)
    for row, example in enumerate(examples):
        pictures = [_as_picture(example["image"])]
        if "reconstruction" in columns:
            pictures.append(_as_picture(example["reconstruction"]) if "reconstruction" in example else None)
        if "anomaly map" in columns:
            amap = example.get("anomaly_map")
            pictures.append((amap[0].numpy(), "inferno", (map_min, map_max)) if amap is not None else None)
            if "ground truth" in columns:
                mask = example.get("mask")
                pictures.append((mask[0].numpy(), "gray") if mask is not None else None)
            if len(columns) > len(pictures):
                pictures.append(((amap[0] >= pixel_threshold).float().numpy(), "gray")
                                if amap is not None else None)
        for col, picture in enumerate(pictures):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if picture is not None:
                vmin, vmax = picture[2] if len(picture) > 2 else (None, None)
                ax.imshow(picture[0], cmap=picture[1], vmin=vmin, vmax=vmax)
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        kind = "anomalous" if example["label"] == 1 else "normal"
        axes[row][0].set_ylabel(f"{kind}\nscore {example['score']:.3g}", fontsize=8)
    fig.tight_layout()
    return fig


def roc_figure(outputs: EpochOutputs) -> Figure:
    fig, ax = plt.subplots(figsize=(4, 4))
    if has_both_classes(outputs.label):
        fpr, tpr = roc_curve(outputs.score, outputs.label)
        ax.plot(fpr.numpy(), tpr.numpy(), label=f"image AUROC {auroc(outputs.score, outputs.label):.3f}")
    if outputs.has_pixels and has_both_classes(outputs.mask.long()):
        # a pixel ROC on a subsample keeps the figure cheap; the metric uses every pixel
        step = max(1, outputs.mask.numel() // 200_000)
        fpr, tpr = roc_curve(outputs.anomaly_map.flatten()[::step], outputs.mask.flatten()[::step])
        ax.plot(fpr.numpy(), tpr.numpy(), label="pixel ROC")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def histogram_figure(outputs: EpochOutputs, image_threshold: float | None) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    scores = outputs.score.numpy()
    for label, name in ((0, "normal"), (1, "anomalous")):
        chosen = scores[outputs.label.numpy() == label]
        if chosen.size:
            ax.hist(chosen, bins=30, alpha=0.6, label=f"{name} ({chosen.size})")
    if image_threshold is not None and not math.isnan(image_threshold):
        ax.axvline(image_threshold, color="black", linestyle="--", label="threshold")
    ax.set_xlabel("image anomaly score")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pixel_f1_figure(outputs: EpochOutputs, pixel_threshold: float | None) -> Figure | None:
    if not outputs.has_pixels or not has_both_classes(outputs.mask):
        return None
    # a curve to look at, in float32: f1_curve's float64 and int64 copies of every pixel
    # were 0.5 GB at 512 px
    scores = outputs.anomaly_map.flatten()
    low, high = float(scores.min()), float(scores.max())
    unit = ((scores - low) / max(high - low, 1e-12)).float().clamp_(0, 1)
    precision, recall, thresholds = binned_precision_recall_curve(unit, outputs.mask.flatten(), 200)
    precision, recall = precision[:-1], recall[:-1]
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    taus = low + thresholds.double() * (high - low)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(taus.numpy(), f1.numpy())
    if pixel_threshold is not None and not math.isnan(pixel_threshold):
        ax.axvline(pixel_threshold, color="black", linestyle="--", label="chosen tau")
        ax.legend(fontsize=8)
    ax.set_xlabel("tau (anomaly map threshold)")
    ax.set_ylabel("pixel F1")
    fig.tight_layout()
    return fig


def misclassified_figure(found) -> Figure:
    """Minhas & Zelek's Fig. 3: the false positives, then the false negatives, of a run at its
    image threshold (a :class:`~adlight.callbacks.misclassified.Misclassified`), most
    confident first; each titled with its true class, score and the threshold."""
    sides = [(f"false positives: normal, score >= {found.threshold:.4g}", found.false_positives,
              found.n_false_positives),
             (f"false negatives: anomalous, score < {found.threshold:.4g}", found.false_negatives,
              found.n_false_negatives)]
    sides = [side for side in sides if side[1]]
    columns = min(8, max(len(shown) for _, shown, _ in sides))
    heights = [math.ceil(len(shown) / columns) for _, shown, _ in sides]
    fig = plt.figure(figsize=(max(1.9 * columns, 6.5), 2.2 * sum(heights) + 0.6 * len(sides) + 0.4), layout="constrained")
    # both counts up top: a side without mistakes has no panel to say so
    fig.suptitle(f"misclassified at the image threshold {found.threshold:.4g}: {found.n_false_positives} "
                 f"false positives, {found.n_false_negatives} false negatives", fontsize=11)
    for subfig, (title, shown, total), rows in zip(
            fig.subfigures(len(sides), 1, height_ratios=heights, squeeze=False)[:, 0], sides, heights, strict=True):
        more = f" (the {len(shown)} most confident of {total})" if total > len(shown) else f" ({total})"
        subfig.suptitle(title + more, fontsize=10)
        axes = subfig.subplots(rows, columns, squeeze=False).flatten()
        for ax in axes:
            ax.axis("off")
        for ax, mistake in zip(axes, shown, strict=False):
            if mistake.image is not None:
                picture, cmap = _as_picture(mistake.image)
                ax.imshow(picture, cmap=cmap, vmin=0, vmax=1)  # a grey level as it is, not stretched
            relation = ">=" if mistake.label == 0 else "<"
            ax.set_title(f"{mistake.class_name}\n{mistake.score:.4g} {relation} {found.threshold:.4g}", fontsize=8)
    return fig
