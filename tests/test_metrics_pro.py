"""AUPRO against a case worked by hand and a direct implementation of its definition; the
bootstrap intervals against sklearn's AUROC and their own seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from adlight.metrics.bootstrap import image_auroc_interval, pixel_auroc_interval
from adlight.metrics.pro import aupro, pro_curve


def test_aupro_of_a_case_worked_by_hand():
    # one 1 x 6 image: region A = pixels 0-1, region B = pixel 3, normals 2, 4, 5
    maps = torch.tensor([[[0.95, 0.5, 0.6, 0.9, 0.2, 0.1]]])
    masks = torch.tensor([[[1, 1, 0, 1, 0, 0]]])
    fpr, pro = pro_curve(maps, masks)
    # 0.95 covers half of A (PRO 1/4), 0.9 all of B (3/4), 0.6 is a false positive (FPR 1/3),
    # 0.5 the rest of A (PRO 1)
    assert fpr.tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert pro.tolist() == pytest.approx([0, 0.25, 0.75, 0.75, 1, 1, 1])
    assert aupro(maps, masks) == pytest.approx(0.75)  # PRO 0.75 all the way to FPR 0.3
    # up to 0.5: 0.75 * 1/3 + 1 * (0.5 - 1/3), normalised by 0.5
    assert aupro(maps, masks, fpr_limit=0.5) == pytest.approx((0.25 + 1 / 6) / 0.5)


def test_regions_are_eight_connected_and_counted_per_image():
    masks = torch.zeros(2, 4, 4)
    masks[0, 0, 0] = masks[0, 1, 1] = 1  # diagonal neighbours: one region
    masks[1, 3, 3] = 1  # a second image: a second region
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0] = maps[0, 1, 1] = 1.0  # the first region is found, the second is not
    _, pro = pro_curve(maps, masks)
    assert float(pro[1]) == pytest.approx(0.5)  # one of two regions fully covered


def direct_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """The definition, threshold by threshold: slow, independent of pro_curve."""
    regions = []
    for image_map, mask in zip(maps, masks, strict=True):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [image_map[labels == r] for r in range(1, n + 1)]
    normals = maps[masks == 0]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        points.append((float(np.mean(normals >= t)), float(np.mean([np.mean(r >= t) for r in regions]))))
    x, y = np.array(points).T
    keep = x <= fpr_limit
    xs, ys = list(x[keep]), list(y[keep])
    if not keep.all() and xs[-1] < fpr_limit:
        i = int(np.argmax(~keep))
        ys.append(y[i - 1] + (y[i] - y[i - 1]) * (fpr_limit - x[i - 1]) / (x[i] - x[i - 1]))
        xs.append(fpr_limit)
    return float(np.trapezoid(ys, xs)) / fpr_limit


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_equals_the_definition_on_random_maps(seed, fpr_limit):
    rng = np.random.default_rng(seed)
    masks = (rng.random((3, 12, 12)) < 0.15).astype(np.int64)
    masks[2] = 0  # a normal image: its pixels only count as false positives
    # quantised maps, so ties between region and normal pixels are exercised too
    maps = np.round(rng.random((3, 12, 12)) + 0.4 * masks, 2)
    expected = direct_aupro(maps, masks, fpr_limit)
    assert aupro(torch.from_numpy(maps), torch.from_numpy(masks), fpr_limit) == pytest.approx(expected, abs=1e-12)


def test_aupro_without_regions_is_nan_and_a_bad_limit_is_an_error():
    assert math.isnan(aupro(torch.rand(2, 4, 4), torch.zeros(2, 4, 4)))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(torch.rand(1, 4, 4), torch.ones(1, 4, 4), fpr_limit=0)


def test_image_interval_brackets_sklearn_and_is_seeded():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(300, generator=generator) < 0.4).long()
    scores = torch.round(torch.randn(300, generator=generator) + labels, decimals=1)  # with ties
    point = roc_auc_score(labels.numpy(), scores.numpy())
    low, high = image_auroc_interval(scores, labels, seed=3)
    assert low < point < high and high - low < 0.2
    assert (low, high) == image_auroc_interval(scores, labels, seed=3)
    assert (low, high) != image_auroc_interval(scores, labels, seed=4)
    assert math.isnan(image_auroc_interval(scores, torch.zeros_like(labels))[0])


def test_pixel_interval_brackets_the_exact_pixel_auroc():
    generator = torch.Generator().manual_seed(1)
    masks = torch.zeros(40, 32, 32)
    masks[:15, 8:20, 10:22] = 1
    maps = torch.rand(40, 32, 32, generator=generator) + 0.2 * masks
    point = roc_auc_score(masks.flatten().numpy(), maps.flatten().numpy())
    low, high = pixel_auroc_interval(maps, masks, seed=0)
    assert low < point < high and high - low < 0.1
    assert math.isnan(pixel_auroc_interval(maps, torch.zeros_like(masks))[0])


def test_the_report_carries_the_comparable_figures():
    from adlight.metrics import EpochOutputs, evaluate

    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    masks = torch.zeros(6, 8, 8)
    masks[3:, 2:5, 2:5] = 1
    maps = masks * 0.8 + 0.1  # a perfect map: every defect pixel above every normal pixel
    outputs = EpochOutputs(index=torch.arange(6), score=torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),
                           label=labels, class_id=torch.zeros(6, dtype=torch.long),
                           anomaly_map=maps, mask=masks)
    report = evaluate(outputs, None, None)
    assert report["image_AP"] == 1.0 and report["image_F1_best"] == 1.0
    assert report["image_AUROC_CI95"] == [1.0, 1.0]
    assert report["pixel_AP"] == 1.0 and report["pixel_AUPRO"] == pytest.approx(1.0)
    assert report["pixel_AUROC_CI95"] == [1.0, 1.0]
    # one wrong ranking: AP, F1-max and the interval move, the interval still brackets AUROC
    outputs.score = torch.tensor([0.1, 0.2, 0.85, 0.7, 0.8, 0.9])
    report = evaluate(outputs, None, None, bootstrap_seed=1)
    assert report["image_AP"] < 1.0 and report["image_F1_best"] == pytest.approx(6 / 7)
    low, high = report["image_AUROC_CI95"]
    assert low <= report["image_AUROC"] <= high and low < high
    assert "image_AUROC_CI95" not in evaluate(outputs, None, None, bootstrap_replicates=0)
    # one class only: no AP, no F1-max, no interval (nothing to rank)
    only_normals = EpochOutputs(index=torch.arange(3), score=torch.rand(3), label=torch.zeros(3, dtype=torch.long),
                                class_id=torch.zeros(3, dtype=torch.long))
    assert {"image_AP", "image_F1_best", "image_AUROC_CI95"}.isdisjoint(evaluate(only_normals, None, None))
