"""The one-sort figures (adlight.metrics.ranking) against the definitions they replace:
torchmetrics' AUROC / AP / thresholded metrics, pro.aupro, and the F1-optimal threshold of
torchmetrics' exact precision-recall curve (the previous implementation, kept here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_precision_recall_curve,
    binary_recall,
)

from adlight.errors import ConfigError, DataError
from adlight.metrics import (
    EpochOutputs,
    SortedScores,
    evaluate,
    f1_curve,
    f1_optimal_threshold,
    per_class_metrics,
    rates_from_counts,
    rescale_unit,
    thin_curve,
    threshold_metrics,
)
from adlight.metrics.bootstrap import pixel_auroc_interval
from adlight.metrics.pro import aupro, pro_curve
from adlight.metrics.ranking import sort_descending


def previous_f1_optimal_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """adlight's threshold before the one sort: torchmetrics' exact curve, argmax of F1."""
    f1, _ = f1_curve(scores, labels)
    _, _, unit_thresholds = binary_precision_recall_curve(rescale_unit(scores), labels.long())
    best = unit_thresholds[int(torch.argmax(f1))]
    return float(scores.double()[rescale_unit(scores) == best].min())


def maps_and_masks(seed: int, n: int = 6, size: int = 16, decimals: int | None = 2):
    """Random float32 maps (rounded, so ties cross the classes) and blob masks, image 0 normal."""
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(n, size, size, generator=generator) < 0.2).float()
    masks[0] = 0
    maps = torch.randn(n, size, size, generator=generator) + masks
    if decimals is not None:
        maps = torch.round(maps, decimals=decimals)
    return maps.float(), masks


def test_sort_descending_is_exact_on_float32_with_negatives_zeros_and_ties():
    values = np.array([0.5, -0.0, 0.0, -3.5, np.inf, -np.inf, 1e-45, -1e-45, 0.5, 2.0, 3e38], np.float32)
    positive = np.arange(values.size) % 3 == 0
    order, ranked, ranked_positive = sort_descending(values, positive)
    assert sorted(order.tolist()) == list(range(values.size))
    assert (ranked == values[order]).all() and (ranked_positive == positive[order]).all()
    assert ranked.dtype == np.float32 and (ranked[:-1] >= ranked[1:]).all()
    # -0.0 and 0.0 are one score: next to each other
    assert abs(int(np.flatnonzero(order == 1)[0]) - int(np.flatnonzero(order == 2)[0])) == 1
    # float64 takes argsort, same ordering
    _, ranked64, _ = sort_descending(values.astype(np.float64), positive)
    assert (ranked64 == ranked).all()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [1, 3, None])
def test_auroc_ap_and_f1_best_equal_torchmetrics_with_ties(seed, decimals):
    maps, masks = maps_and_masks(seed, decimals=decimals)
    ranked = SortedScores(maps, masks)
    unit, labels = rescale_unit(maps.flatten()), masks.flatten().long()
    assert ranked.auroc() == pytest.approx(float(binary_auroc(unit, labels)), abs=1e-6)
    assert ranked.average_precision() == pytest.approx(float(binary_average_precision(unit, labels)), abs=1e-6)
    exact_f1 = f1_curve(maps.flatten(), labels)[0]
    assert ranked.f1_best() == pytest.approx(float(exact_f1.max()), abs=1e-6)
    # exact is never below the 1000-bin figure the report gave before
    assert ranked.f1_best() >= float(f1_curve(maps.flatten(), labels, bins=1000)[0].max()) - 1e-7


def test_constant_maps_and_one_class_missing():
    masks = torch.zeros(3, 4, 4)
    masks[1, :2] = 1
    constant = SortedScores(torch.full((3, 4, 4), 0.7), masks)
    assert constant.auroc() == 0.5  # one threshold: the diagonal
    assert constant.average_precision() == pytest.approx(float(masks.mean()))
    assert constant.f1_optimal_threshold() == pytest.approx(0.7)
    only_normal = SortedScores(torch.rand(3, 4, 4), torch.zeros(3, 4, 4))
    assert math.isnan(only_normal.auroc()) and math.isnan(only_normal.average_precision())
    assert math.isnan(only_normal.f1_best()) and math.isnan(only_normal.aupro(torch.zeros(3, 4, 4), 0.3))
    with pytest.raises(ConfigError, match="normal and anomalous"):
        f1_optimal_threshold(torch.rand(10), torch.ones(10))
    with pytest.raises(DataError, match="NaN"):
        SortedScores(torch.tensor([0.1, math.nan]), torch.tensor([0, 1]))


def test_a_perfect_and_a_reversed_ranking():
    masks = torch.zeros(2, 8, 8)
    masks[1, 2:5, 2:5] = 1
    perfect = SortedScores(masks * 3 - 1, masks)
    assert perfect.auroc() == 1.0 and perfect.average_precision() == 1.0 and perfect.f1_best() == 1.0
    assert SortedScores(-masks, masks).auroc() == 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_equals_pro_aupro(seed, fpr_limit):
    maps, masks = maps_and_masks(seed, decimals=1 if seed % 2 else None)
    assert SortedScores(maps, masks).aupro(masks, fpr_limit) == pytest.approx(
        aupro(maps, masks, fpr_limit), abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_f1_optimal_threshold_equals_the_previous_one(seed):
    generator = torch.Generator().manual_seed(seed)
    n = [50, 400, 3000][seed % 3]
    labels = (torch.rand(n, generator=generator) < 0.3).long()
    scores = torch.randn(n, generator=generator) + labels
    if seed % 2:
        scores = torch.round(scores, decimals=1)  # ties, and F1 ties between thresholds
    assert f1_optimal_threshold(scores, labels) == previous_f1_optimal_threshold(scores, labels)
    assert f1_optimal_threshold(scores.double(), labels) == previous_f1_optimal_threshold(scores.double(), labels)
    halves = scores.bfloat16()
    assert f1_optimal_threshold(halves, labels) == previous_f1_optimal_threshold(halves.double(), labels)


@pytest.mark.parametrize("seed", range(3))
def test_threshold_metrics_equal_torchmetrics(seed):
    maps, masks = maps_and_masks(seed)
    ranked = SortedScores(maps, masks)
    for threshold in (-10.0, float(maps.median()), 0.7, float(maps.max()), 10.0):
        predictions, labels = (maps.flatten() >= threshold).long(), masks.flatten().long()
        expected = {"F1": float(binary_f1_score(predictions, labels)),
                    "precision": float(binary_precision(predictions, labels)),
                    "recall": float(binary_recall(predictions, labels))}
        got = ranked.threshold_metrics(threshold)
        assert {k: got[k] for k in expected} == expected  # to the bit
        assert got == threshold_metrics(maps, masks, threshold)
        assert got["TP"] + got["FP"] + got["TN"] + got["FN"] == maps.numel()


def test_rates_from_counts_equal_torchmetrics_past_float32_integers():
    # counts above 2**24 round in float32: the same rounding as torchmetrics'
    tp, fp, fn = 2**24 + 3, 2**23 + 1, 5
    predictions = torch.cat([torch.ones(tp + fp), torch.zeros(fn)]).long()
    labels = torch.cat([torch.ones(tp), torch.zeros(fp), torch.ones(fn)]).long()
    rates = rates_from_counts(tp, fp, 0, fn)
    assert rates["F1"] == float(binary_f1_score(predictions, labels, validate_args=False))
    assert rates["precision"] == float(binary_precision(predictions, labels, validate_args=False))
    assert rates_from_counts(0, 0, 4, 0)["precision"] == 0.0


def _outputs(seed: int) -> EpochOutputs:
    maps, masks = maps_and_masks(seed, n=9)
    label = (masks.flatten(1).amax(1) > 0).long()
    class_id = torch.where(label == 1, 1 + torch.arange(9) % 2, 0)  # anomaly classes 1 and 2
    return EpochOutputs(index=torch.arange(9), score=maps.flatten(1).amax(1), label=label,
                        class_id=class_id, anomaly_map=maps, mask=masks)


@pytest.mark.parametrize("seed", range(3))
def test_per_class_rows_equal_auroc_of_the_subset(seed):
    outputs = _outputs(seed)
    rows = per_class_metrics(outputs, ["good", "a", "b"], pixel_threshold=0.5)
    for name, class_id in (("a", 1), ("b", 2)):
        chosen = (outputs.label == 0) | (outputs.class_id == class_id)
        scores, labels = outputs.anomaly_map[chosen].flatten(), outputs.mask[chosen].flatten().long()
        assert rows[name]["pixel_AUROC"] == pytest.approx(float(binary_auroc(rescale_unit(scores), labels)), abs=1e-6)
        assert rows[name]["pixel_F1"] == threshold_metrics(scores, labels, 0.5)["F1"]
    report = evaluate(outputs, None, 0.5, bootstrap_replicates=0)
    assert rows["ALL"]["pixel_AUROC"] == report["pixel_AUROC"] and rows["ALL"]["pixel_F1"] == report["pixel_F1"]


def test_the_pixel_interval_from_the_shared_sort_is_the_one_made_alone():
    maps, masks = maps_and_masks(0, n=12)
    ranked = SortedScores(maps, masks)
    alone = pixel_auroc_interval(maps, masks, replicates=200, seed=2)
    assert alone == pixel_auroc_interval(maps, masks, replicates=200, seed=2, ranked=ranked)
    assert alone[0] < ranked.auroc() < alone[1]


def test_the_ranking_pro_curve_is_the_direct_pro_curve_and_its_area_the_aupro():
    generator = torch.Generator().manual_seed(3)
    maps = (torch.rand(4, 20, 20, generator=generator) * 8).round() / 8  # ties
    masks = torch.zeros(4, 20, 20)
    masks[0, 2:6, 2:6] = 1
    masks[1, 10:12, 3:15] = 1
    masks[1, 15:18, 15:18] = 1
    ranked = SortedScores(maps, masks)
    fpr, pro = ranked.pro_curve(masks)
    direct_fpr, direct_pro = pro_curve(maps, masks)
    torch.testing.assert_close(fpr, direct_fpr, atol=1e-12, rtol=0)
    torch.testing.assert_close(pro, direct_pro, atol=1e-12, rtol=0)
    # the page's points: the whole curve thinned, computed at those points only
    assert ranked.pro_points(masks, 50) == thin_curve(direct_fpr, direct_pro, 50)
    assert ranked.pro_points(masks, 10**6) == thin_curve(direct_fpr, direct_pro, 10**6)
    # up to a limit: the points to the first one past it
    cut_fpr, cut_pro = ranked.pro_curve(masks, 0.3)
    assert cut_fpr[-2] <= 0.3 < cut_fpr[-1]
    torch.testing.assert_close(cut_pro, direct_pro[:cut_fpr.numel()], atol=1e-12, rtol=0)
    assert ranked.aupro(masks, 0.3) == pytest.approx(aupro(maps, masks, 0.3), abs=1e-12)
    with pytest.raises(ValueError, match="regions"):
        SortedScores(maps, torch.zeros(4, 20, 20)).pro_curve(torch.zeros(4, 20, 20))


def test_the_packed_sort_spans_several_blocks_of_positions():
    rng = np.random.default_rng(0)
    scores = (rng.random(2_500_000, dtype=np.float32) * 1000).round()  # > 2 blocks of 2**20, ties
    positive = rng.random(2_500_000) < 0.1
    order, sorted_scores, sorted_positive = sort_descending(scores, positive)
    assert np.array_equal(np.sort(order), np.arange(scores.size))  # every position once
    assert np.array_equal(sorted_scores, scores[order]) and np.array_equal(sorted_positive, positive[order])
    assert np.all(np.diff(sorted_scores) <= 0)


def test_the_curve_sums_run_in_blocks_and_agree_with_torchmetrics_across_them():
    generator = torch.Generator().manual_seed(0)
    scores = (torch.rand(3_000_000, generator=generator) * 2_000_000).round()  # ties
    labels = (torch.rand(3_000_000, generator=generator) < 0.05 + 0.2 * scores / scores.max()).long()
    ranked = SortedScores(scores, labels)
    assert ranked.ends.size > 2**20  # more than one block of curve points
    assert ranked.auroc() == pytest.approx(float(binary_auroc(rescale_unit(scores), labels)), abs=1e-6)
    assert ranked.average_precision() == pytest.approx(
        float(binary_average_precision(rescale_unit(scores), labels)), abs=1e-6)
    tps = torch.from_numpy(ranked.tps).double()
    assert ranked.f1_best() == pytest.approx(float((2 * tps / (torch.from_numpy(ranked.ends) + 1
                                                                 + ranked.n_positive)).max()), abs=1e-12)
