import math

import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from adlight.errors import ConfigError
from adlight.metrics import (
    EpochCollector,
    auroc,
    evaluate,
    f1_optimal_threshold,
    parse_threshold,
    per_class_auroc,
    threshold_metrics,
)


def test_auroc_of_large_unbounded_scores_is_not_saturated():
    # torchmetrics alone gives 0.5 here: it applies a sigmoid that saturates to ties
    scores = torch.tensor([30.0, 40.0, 35.0, 50.0])
    labels = torch.tensor([0, 1, 0, 1])
    assert auroc(scores, labels) == pytest.approx(1.0)


def test_auroc_matches_sklearn_on_mixed_range_scores():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(200, generator=generator) * 3 + 0.5
    labels = (torch.rand(200, generator=generator) < 0.3).long()
    scores[labels == 1] += 1.0
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_auroc_is_nan_with_one_class():
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))


def test_f1_optimal_threshold_is_a_raw_score_with_the_best_f1():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 5.0, 0.2])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    t = f1_optimal_threshold(scores, labels)
    best = max(f1_score(labels, (scores >= s).long()) for s in scores)
    assert t in scores.tolist()
    assert f1_score(labels, (scores >= t).long()) == pytest.approx(best)
    assert t == pytest.approx(0.35)


def test_f1_optimal_threshold_needs_both_classes():
    with pytest.raises(ConfigError, match="normal and anomalous"):
        f1_optimal_threshold(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))


def test_threshold_metrics_known_confusion():
    scores = torch.tensor([0.1, 0.6, 0.7, 0.2, 0.9])
    labels = torch.tensor([0, 0, 1, 1, 1])
    m = threshold_metrics(scores, labels, 0.5)
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (2, 1, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["F1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("value", ["best", True, [0.2]])
def test_parse_threshold_rejects_unknown_values(value):
    with pytest.raises(ConfigError, match="image_threshold"):
        parse_threshold(value, "image_threshold")


def test_parse_threshold_accepts_numbers_modes_and_none():
    assert parse_threshold(0.2, "t") == 0.2
    assert parse_threshold(1, "t") == 1.0
    assert parse_threshold("val_f1", "t") == "val_f1"
    assert parse_threshold(None, "t") is None


def _batch(indices, scores, labels, classes, with_maps=True):
    n = len(indices)
    batch = {"index": torch.tensor(indices), "label": torch.tensor(labels),
             "class_id": torch.tensor(classes)}
    outputs = {"score": torch.tensor(scores, dtype=torch.float32)}
    if with_maps:
        maps = torch.zeros(n, 1, 4, 4)
        masks = torch.zeros(n, 1, 4, 4)
        for i, label in enumerate(labels):
            if label:
                maps[i, 0, :2, :2] = 1.0
                masks[i, 0, :2, :2] = 1.0
        outputs["anomaly_map"] = maps
        batch["mask"] = masks
    return batch, outputs


def test_collector_drops_distributed_sampler_padding_and_keeps_maps():
    collector = EpochCollector()
    collector.update(*_batch([2, 0], [0.9, 0.1], [1, 0], [1, 0]))
    # index 2 again: what a DistributedSampler pads the last batch with
    collector.update(*_batch([1, 2], [0.2, 0.9], [0, 1], [0, 1]))
    out = collector.compute()
    assert out.index.tolist() == [0, 1, 2]
    assert out.score.tolist() == pytest.approx([0.1, 0.2, 0.9])
    assert out.label.tolist() == [0, 0, 1]
    assert out.anomaly_map.shape == (3, 4, 4)
    assert out.mask[2].sum() == 4 and out.mask[0].sum() == 0


def test_evaluate_reports_image_and_pixel_metrics_and_per_class():
    collector = EpochCollector()
    collector.update(*_batch([0, 1, 2, 3], [0.1, 0.2, 0.8, 0.6], [0, 0, 1, 1], [0, 0, 1, 2]))
    out = collector.compute()
    report = evaluate(out, image_threshold=0.5, pixel_threshold=0.5)
    assert report["image_AUROC"] == pytest.approx(1.0)
    assert report["image_F1"] == pytest.approx(1.0)
    assert report["pixel_AUROC"] == pytest.approx(1.0)
    assert report["pixel_F1"] == pytest.approx(1.0)
    assert report["pixel_F1_best"] == pytest.approx(1.0)
    assert report["n_images"] == 4 and report["n_anomalous"] == 2
    per_class = per_class_auroc(out, ["good", "scratch", "hole"])
    assert per_class == {"scratch": 1.0, "hole": 1.0}


def test_evaluate_without_threshold_reports_no_f1():
    collector = EpochCollector()
    collector.update(*_batch([0, 1], [0.1, 0.8], [0, 1], [0, 1], with_maps=False))
    report = evaluate(collector.compute(), image_threshold=math.nan, pixel_threshold=None)
    assert "image_F1" not in report and "pixel_AUROC" not in report
    assert report["image_AUROC"] == 1.0
