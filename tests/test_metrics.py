import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from adlight.errors import ConfigError, DataError
from adlight.metrics import (
    ALL_CLASSES,
    auroc,
    binned_precision_recall_curve,
    evaluate,
    f1_optimal_threshold,
    parse_threshold,
    per_class_metrics,
    rescale_unit,
    threshold_metrics,
)
from adlight.metrics.epoch_outputs import EpochCollector, EpochOutputs
from adlight.models.base import AnomalyModule


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


def test_a_perfect_ranking_has_auroc_exactly_one():
    # torchmetrics 1.x's float32 trapezoid sum gives 1.0000001 for this perfect ranking of
    # 11,264 "pixels" (the DDP tests' test split at 32 px); a reported AUROC never exceeds 1
    generator = torch.Generator().manual_seed(1)
    labels = (torch.rand(11264, generator=generator) < 0.1).long()
    scores = torch.rand(11264, generator=generator, dtype=torch.float64) * 0.5 + labels * 0.5
    assert auroc(scores, labels) == 1.0


def test_auroc_is_nan_with_one_class():
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))


@pytest.mark.parametrize("n, bins", [(7, 5), (1000, 1000), (60_001, 1000)])
def test_binned_precision_recall_curve_equals_torchmetrics(n, bins):
    # 60,001 x 1000 pairs take torchmetrics' threshold loop, 1000 x 1000 its vectorised path
    from torchmetrics.functional.classification import binary_precision_recall_curve

    generator = torch.Generator().manual_seed(n)
    unit = rescale_unit(torch.randn(n, generator=generator, dtype=torch.float64))
    # a tenth of the scores exactly on a threshold: the ">=" side must match
    on_threshold = torch.randint(bins, (n // 10,), generator=generator)
    unit[: n // 10] = torch.linspace(0, 1, bins).double()[on_threshold]
    labels = (torch.rand(n, generator=generator) < 0.3).long()
    got = binned_precision_recall_curve(unit, labels, bins)
    want = binary_precision_recall_curve(unit, labels, thresholds=bins)
    for mine, theirs in zip(got, want, strict=True):
        assert mine.dtype == theirs.dtype
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("bad", [2, -1])
def test_labels_or_masks_other_than_0_and_1_are_a_data_error(bad):
    labels = torch.tensor([0, 1, bad, 0])
    with pytest.raises(DataError, match=f"found \\[{bad}\\]"):
        auroc(torch.rand(4), labels)
    with pytest.raises(DataError):
        threshold_metrics(torch.rand(4), labels, 0.5)


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


def test_collector_of_an_epoch_of_one_image_gives_one_dimensional_fields():
    collector = EpochCollector()
    collector.update(*_batch([0], [0.7], [1], [1]))  # a one-image validation split
    out = collector.compute()
    assert out.index.tolist() == [0] and out.score.tolist() == pytest.approx([0.7])
    assert out.label.tolist() == [1] and out.anomaly_map.shape == (1, 4, 4)


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
    per_class = per_class_metrics(out, ["good", "scratch", "hole"])
    assert {name: row["image_AUROC"] for name, row in per_class.items()} == {
        "scratch": 1.0, "hole": 1.0, ALL_CLASSES: 1.0}


def test_evaluate_without_threshold_reports_no_f1():
    collector = EpochCollector()
    collector.update(*_batch([0, 1], [0.1, 0.8], [0, 1], [0, 1], with_maps=False))
    report = evaluate(collector.compute(), image_threshold=math.nan, pixel_threshold=None)
    assert "image_F1" not in report and "pixel_AUROC" not in report
    assert report["image_AUROC"] == 1.0


# ----- per-class results: each anomaly class against all normal test images, plus ALL -----
def _per_class_outputs():
    """3 normals, 2 'scratch' and 2 'hole' images of 2 x 2 pixels; the hole maps miss."""
    score = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.9, 0.8, 0.95])
    label = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    class_id = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    mask = torch.zeros(7, 2, 2)
    mask[3:, 0, 0] = 1.0
    anomaly_map = torch.zeros(7, 2, 2)
    anomaly_map[:3] = 0.1
    anomaly_map[3:5, 0, 0] = 0.9  # scratch: found
    anomaly_map[5:, 1, 1] = 0.9  # hole: the wrong pixel
    return EpochOutputs(index=torch.arange(7), score=score, label=label, class_id=class_id,
                        anomaly_map=anomaly_map, mask=mask)


def test_per_class_metrics_known_answers_and_all_matches_evaluate():
    out = _per_class_outputs()
    rows = per_class_metrics(out, ["good", "scratch", "hole"], image_threshold=0.5,
                             pixel_threshold=0.5)
    assert list(rows) == ["scratch", "hole", ALL_CLASSES]
    scratch, hole = rows["scratch"], rows["hole"]
    assert (scratch["n_normal"], scratch["n_anomalous"]) == (3, 2)
    # 0.25 beats two of the three normals, 0.9 all three
    assert scratch["image_AUROC"] == pytest.approx(5 / 6)
    assert scratch["image_recall"] == pytest.approx(0.5)
    assert scratch["image_precision"] == pytest.approx(1.0)
    assert scratch["image_F1"] == pytest.approx(2 / 3)
    assert hole["image_AUROC"] == pytest.approx(1.0) and hole["image_recall"] == 1.0
    for name, members in (("scratch", [0, 1, 2, 3, 4]), ("hole", [0, 1, 2, 5, 6])):
        expected = roc_auc_score(out.mask[members].flatten(), out.anomaly_map[members].flatten())
        assert rows[name]["pixel_AUROC"] == pytest.approx(expected, abs=1e-6)
    assert rows["scratch"]["pixel_recall"] == 1.0 and rows["hole"]["pixel_recall"] == 0.0
    overall = evaluate(out, 0.5, 0.5)
    for key in ("image_AUROC", "image_F1", "image_precision", "image_recall", "pixel_AUROC",
                "pixel_F1"):
        assert rows[ALL_CLASSES][key] == pytest.approx(overall[key]), key
    assert rows[ALL_CLASSES]["n_anomalous"] == overall["n_anomalous"]


def test_per_class_metrics_without_threshold_or_maps_reports_only_auroc():
    out = _per_class_outputs()
    out.anomaly_map = out.mask = None
    rows = per_class_metrics(out, ["good", "scratch", "hole"], image_threshold=math.nan)
    assert set(rows["hole"]) == {"n_normal", "n_anomalous", "image_AUROC"}


def test_per_class_names_never_collide_with_all_or_each_other():
    out = _per_class_outputs()
    out.class_id = torch.tensor([0, 0, 0, 1, 1, -1, -1])
    assert list(per_class_metrics(out, ["good", "ALL"])) == ["-1", "ALL (class 1)", ALL_CLASSES]
    out.class_id = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    assert list(per_class_metrics(out, ["good", "x", "x"])) == ["x", "x (class 2)", ALL_CLASSES]


class _BrightnessModel(AnomalyModule):
    """A model with no network at all: score = how far pixels stray from the texture's mean.
    Per-class results must come from the base class for any model like this one."""

    learns_by_gradient = False  # no weights: nothing to refuse as untrained

    def anomaly_outputs(self, batch):
        amap = (batch["image"] - 0.45).abs().amax(1, keepdim=True)
        return {"score": amap.flatten(1).amax(1), "anomaly_map": amap}


def test_any_model_gets_per_class_results_from_the_base_class(tmp_path):
    import lightning as L
    from synthetic import make_folder_tree

    from adlight.data import FolderDataModule

    dirs = make_folder_tree(tmp_path, n_normal=12, abnormal={"bright": 4, "dark": 4}, size=32,
                            masks=True)
    dm = FolderDataModule(**{k: str(v) for k, v in dirs.items()}, mask_suffix="_mask",
                          image_size=32, val_fraction=0.5, normal_test_fraction=0.5)
    model = _BrightnessModel()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    validated = trainer.validate(model, datamodule=dm, verbose=False)[0]
    # the pasted squares stray from 0.45 more than the background does
    assert 0.5 < validated["val/pixel_AUROC"] <= 1.0
    trainer.test(model, datamodule=dm, verbose=False)
    report = model.test_report
    assert set(report["per_class"]) == {"bright", "dark", ALL_CLASSES}
    for name in ("bright", "dark"):
        row = report["per_class"][name]
        assert row["image_AUROC"] == pytest.approx(1.0)  # a pasted square always strays
        assert {"image_recall", "image_F1", "pixel_AUROC", "pixel_recall"} <= set(row)
        assert float(trainer.callback_metrics[f"test/per_class/{name}/image_AUROC"]) == pytest.approx(row["image_AUROC"])
    assert report["per_class"][ALL_CLASSES]["image_F1"] == pytest.approx(report["image_F1"])
    logged = trainer.callback_metrics
    assert float(logged["test/per_class/dark/image_AUROC"]) == pytest.approx(1.0)


def test_evaluate_reports_the_auroc_of_every_nu_and_their_mean_and_std():
    label = torch.tensor([0, 0, 0, 1, 1])
    sweep = torch.tensor([[0.1, 0.5], [0.2, 0.1], [0.3, 0.9], [0.8, 0.2], [0.9, 0.6]])
    out = EpochOutputs(index=torch.arange(5), score=sweep[:, 0], label=label,
                       class_id=torch.zeros(5, dtype=torch.long), score_sweep=sweep)
    report = evaluate(out, None, None, nu_sweep=(0.01, 0.99))
    by_nu = [roc_auc_score(label, sweep[:, k]) for k in range(2)]  # 1.0 and 1/3
    assert report["image_AUROC_by_nu"] == pytest.approx({"0.01": by_nu[0], "0.99": by_nu[1]})
    assert report["image_AUROC_nu_mean"] == pytest.approx(np.mean(by_nu))
    assert report["image_AUROC_nu_std"] == pytest.approx(np.std(by_nu))
    assert "image_AUROC_nu_mean" not in evaluate(out, None, None)  # no sweep asked for
