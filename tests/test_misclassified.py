"""misclassified.png (Minhas & Zelek's Fig. 3) and confusion.csv of a test run.

A model without a network scores each flat grey image by its grey level, so with a fixed
image threshold of 0.5 we know which images are wrong and how confidently.
"""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from adlight.callbacks import TestReport
from adlight.callbacks.misclassified import CONFUSION_COLUMNS, find_misclassified
from adlight.errors import ConfigError
from adlight.metrics.epoch_outputs import EpochOutputs
from adlight.models.base import AnomalyModule

CLASS_NAMES = ["scratch", "dent"]
# (grey level = score, label, class id): at 0.5 three normals are flagged (0.9 most
# confidently), and three anomalies missed (0.05 most confidently)
MIXED = [(0.1, 0, -1), (0.55, 0, -1), (0.2, 0, -1), (0.9, 0, -1), (0.3, 0, -1), (0.7, 0, -1),
         (0.8, 1, 0), (0.45, 1, 0), (0.6, 1, 0), (0.95, 1, 1), (0.05, 1, 1), (0.3, 1, 1)]
SEPARABLE = [(0.1, 0, -1), (0.2, 0, -1), (0.8, 1, 0), (0.9, 1, 1)]


class _GreyImages(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        level, label, class_id = self.rows[i]
        return {"image": torch.full((1, 8, 8), level), "label": label, "class_id": class_id,
                "index": i, "path": f"img{i}.png"}


class _GreyData(L.LightningDataModule):
    class_names = CLASS_NAMES

    def __init__(self, rows):
        super().__init__()
        self.test_dataset = _GreyImages(rows)

    def test_dataloader(self):
        return DataLoader(self.test_dataset, batch_size=5)


class _GreyLevelModel(AnomalyModule):
    learns_by_gradient = False  # no weights: nothing to refuse as untrained

    def anomaly_outputs(self, batch):
        return {"score": batch["image"].flatten(1).mean(1)}


def run_test(tmp_path, rows, image_threshold=0.5, **report_args):
    report = TestReport(**{"page": False, **report_args})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, callbacks=[report])
    trainer.test(_GreyLevelModel(image_threshold=image_threshold, pixel_threshold=None),
                 datamodule=_GreyData(rows), verbose=False)
    return report


def read_confusion(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == CONFUSION_COLUMNS
        return {row["class"]: row for row in reader}


def test_a_run_writes_its_misclassified_images_most_confident_first(tmp_path, capsys):
    report = run_test(tmp_path, MIXED)
    assert (tmp_path / "misclassified.png").is_file()
    found = report.misclassified
    assert (found.n_false_positives, found.n_false_negatives) == (3, 3)
    assert [m.index for m in found.false_positives] == [3, 5, 1]  # 0.9, 0.7, 0.55
    assert [m.index for m in found.false_negatives] == [10, 11, 7]  # 0.05, 0.3, 0.45
    assert [m.class_name for m in found.false_negatives] == ["dent", "dent", "scratch"]
    assert {m.class_name for m in found.false_positives} == {"normal"}
    # margins relative to the score range 0.05..0.95
    assert found.false_positives[0].margin == pytest.approx(0.4 / 0.9)
    assert all(m.image is not None and float(m.image.mean()) == pytest.approx(m.score) for m in
               found.false_positives + found.false_negatives)
    assert "confusion at the image threshold 0.5" in capsys.readouterr().out


def test_confusion_csv_counts_per_class_with_shared_false_alarms(tmp_path):
    run_test(tmp_path, MIXED)
    rows = read_confusion(tmp_path / "confusion.csv")
    assert list(rows) == ["scratch", "dent", "ALL"]
    counts = {name: tuple(int(row[k]) for k in ("TP", "FP", "TN", "FN")) for name, row in rows.items()}
    assert counts == {"scratch": (2, 3, 3, 1), "dent": (1, 3, 3, 2), "ALL": (3, 3, 3, 3)}
    assert float(rows["scratch"]["precision"]) == pytest.approx(2 / 5)
    assert float(rows["dent"]["recall"]) == pytest.approx(1 / 3)
    assert float(rows["ALL"]["F1"]) == pytest.approx(0.5)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert float(rows["scratch"]["F1"]) == pytest.approx(metrics["per_class"]["scratch"]["image_F1"])


def test_the_cap_keeps_the_most_confident_and_reads_only_those_images(tmp_path):
    report = run_test(tmp_path, MIXED, misclassified=2)
    found = report.misclassified
    assert (found.n_false_positives, found.n_false_negatives) == (3, 3)
    assert [m.index for m in found.false_positives] == [3, 5]
    assert [m.index for m in found.false_negatives] == [10, 11]

    # memory stays bounded: of 40 mistakes only the cap's images are ever read
    n = 40
    outputs = EpochOutputs(index=torch.arange(n), score=torch.linspace(0, 1, n),
                           label=(torch.arange(n) < n // 2).long(), class_id=torch.zeros(n, dtype=torch.long))
    read = []
    found = find_misclassified(outputs, 0.5, cap=3, class_names=["x"], image_at=lambda i: read.append(i))
    assert (found.n_false_positives, found.n_false_negatives) == (20, 20)
    assert [m.index for m in found.false_positives] == [39, 38, 37]
    assert [m.index for m in found.false_negatives] == [0, 1, 2]
    assert sorted(read) == [0, 1, 2, 37, 38, 39]


def test_no_mistakes_no_figure_but_a_line_and_the_counts(tmp_path, capsys):
    report = run_test(tmp_path, SEPARABLE)
    assert not report.misclassified.any
    assert not (tmp_path / "misclassified.png").exists()
    assert "no misclassified test images at the image threshold 0.5" in capsys.readouterr().out
    assert {k: int(v) for k, v in read_confusion(tmp_path / "confusion.csv")["ALL"].items()
            if k in ("TP", "FP", "TN", "FN")} == {"TP": 2, "FP": 0, "TN": 2, "FN": 0}


def test_without_an_image_threshold_or_with_cap_zero_there_is_no_figure(tmp_path):
    report = run_test(tmp_path / "none", MIXED, image_threshold=None)
    assert report.misclassified is None and report.confusion == []
    assert not (tmp_path / "none" / "misclassified.png").exists()
    assert not (tmp_path / "none" / "confusion.csv").exists()
    report = run_test(tmp_path / "off", MIXED, misclassified=0)
    assert report.misclassified is None
    assert not (tmp_path / "off" / "misclassified.png").exists()
    assert (tmp_path / "off" / "confusion.csv").is_file()  # counts need no images


def test_the_page_embeds_the_confusion_table(tmp_path):
    report = run_test(tmp_path, MIXED, page=True)
    page = json.loads((tmp_path / "results.json").read_text())
    assert page["confusion"] == report.confusion
    assert [row["class"] for row in page["confusion"]] == ["scratch", "dent", "ALL"]


@pytest.mark.parametrize("cap", [-1, 2.5, True])
def test_a_bad_cap_is_one_clear_error(cap):
    with pytest.raises(ConfigError, match="misclassified"):
        TestReport(misclassified=cap)
