"""Experiment trackers: MLflow against a local file store (params, metrics, artifacts, the
registered exported model, read back with MLflow's client) and the W&B test-image table offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic import make_mvtec_tree
from test_operations import wandb_records

from adlight.cli import main

REPO = Path(__file__).resolve().parents[1]
L2_CONFIG = REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=8, n_good_test=5,
                           defects={"scratch": 4, "hole": 3}, size=32)


def tiny(root, run_dir) -> list[str]:
    return [f"--config={L2_CONFIG}", f"--data.root={root}", "--data.image_size=32",
            "--data.loader.batch_size=4", "--model.network.init_args.image_size=32",
            "--model.network.init_args.latent_dim=16", "--trainer.max_epochs=2",
            "--trainer.log_every_n_steps=1", "--trainer.accelerator=cpu", "--trainer.check_val_every_n_epoch=1",
            f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--model.pixel_threshold=0.2"]


def test_mlflow_run_holds_config_metrics_report_files_and_the_registered_export(mvtec_root, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    main(["fit", *tiny(mvtec_root, tmp_path / "run"), f"--config={REPO / 'configs' / 'logger' / 'mlflow.yaml'}",
          f"--mlflow.tracking_uri={uri}", "--mlflow.run_name=tiny"])
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("adlight").experiment_id])
    assert run.data.params["config/trainer/max_epochs"] == "2"
    assert run.data.params["config/model/init_args/network/class_path"] == "adlight.nets.FadaeinejadAE"
    metrics = run.data.metrics
    assert {"train/loss", "val/image_AUROC", "test/image_AUROC", "test/pixel_AUROC"} <= set(metrics)
    run_dir = tmp_path / "run" / "lightning_logs" / "version_0"
    report = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["report/image_AUROC"] == pytest.approx(report["image_AUROC"])
    files = {f.path for f in client.list_artifacts(run.info.run_id, "test")}
    assert {"test/metrics.json", "test/report.html", "test/roc.png", "test/examples.png"} <= files
    assert client.list_artifacts(run.info.run_id, "test/report_files")

    checkpoint = next((run_dir / "checkpoints").glob("*.ckpt"))
    main(["export", *tiny(mvtec_root, tmp_path / "run"), f"--ckpt_path={checkpoint}", "--format=onnx",
          f"--out={tmp_path / 'exported'}", "--mlflow.enabled=true", f"--mlflow.tracking_uri={uri}",
          f"--mlflow.run_id={run.info.run_id}", "--mlflow.registered_model=tiny-ae"])
    (version,) = client.search_model_versions("name='tiny-ae'")
    assert version.run_id == run.info.run_id
    local = Path(client.download_artifacts(run.info.run_id, "exported_model", str(tmp_path / "down")))
    assert json.loads((local / "metadata.json").read_text()) == json.loads(
        (tmp_path / "exported" / "metadata.json").read_text())
    assert (local / "model.onnx").is_file()


def test_a_tracker_option_of_the_export_that_is_wrong_is_one_line(mvtec_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--ckpt_path=missing.ckpt", "--format=onnx", f"--out={tmp_path}",
              "--mlflow.enabled=maybe"])
    assert "adlight: error:" in capsys.readouterr().err


def test_wandb_offline_run_holds_a_table_of_the_test_images(mvtec_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    main(["fit", *tiny(mvtec_root, tmp_path / "run"), f"--config={REPO / 'configs' / 'logger' / 'wandb.yaml'}",
          "--model.image_threshold=0.01"])
    import wandb

    wandb.teardown()
    run_dir = tmp_path / "run" / "lightning_logs" / "version_0"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (table_file,) = (offline / "files" / "media" / "table" / "test").glob("images_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["image", "overlay", "ground_truth", "score", "label", "outcome", "class"]
    split = [line.split(",") for line in (run_dir / "split.csv").read_text().splitlines()[1:]]
    test_labels = sorted(int(row[-2]) for row in split if row[-3] == "test")
    assert sorted(row[4] for row in table["data"]) == test_labels  # every test image, under the cap
    assert {row[5] for row in table["data"]} <= {"TP", "FP", "TN", "FN"}
    assert {row[6] for row in table["data"] if row[4] == 1} == {"scratch", "hole"}
    # the run's file holds the cells' types; the images travel in the run's table artifact
    assert all(row[:3] == ["Image"] * 3 for row in table["data"])
    (run_log,) = offline.glob("run-*.wandb")
    tables = [[entry.path for entry in record.artifact.manifest.contents]
              for record in wandb_records(run_log)
              if record.WhichOneof("record_type") == "artifact" and record.artifact.type == "run_table"]
    (files,) = tables
    assert "test/images.table.json" in files
    assert sum(f.startswith("media/images/") for f in files) >= len(table["data"])  # overlays differ


def test_the_table_is_capped_and_spread_over_the_test_split():
    from adlight.callbacks.tracking import WandbTestTable, outcome

    assert outcome(1, 0.7, 0.5) == "TP" and outcome(0, 0.7, 0.5) == "FP"
    assert outcome(0, 0.2, 0.5) == "TN" and outcome(1, 0.2, 0.5) == "FN"
    assert outcome(1, 0.2, None) == "no threshold"
    import numpy as np
    import torch

    from adlight.metrics.epoch_outputs import EpochOutputs
    from adlight.metrics.results import TestResults

    pytest.importorskip("wandb")
    n = 40
    outputs = EpochOutputs(index=torch.arange(n), score=torch.linspace(0, 1, n), label=torch.arange(n) % 2,
                           class_id=torch.arange(n) % 2, anomaly_map=torch.rand(n, 8, 8),
                           mask=(torch.rand(n, 8, 8) > 0.8).float())
    results = TestResults("M", {}, outputs, image_threshold=0.5, class_names=["good", "bad"])
    dataset = [{"image": torch.rand(3, 8, 8)} for _ in range(n)]
    table = WandbTestTable(rows=6).table(results, dataset)
    assert len(table.data) == 6
    scores = [row[3] for row in table.data]
    assert scores[0] == 0.0 and scores[-1] == 1.0 and np.all(np.diff(scores) > 0)


def test_export_logs_the_exported_folder_as_a_wandb_artifact(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import torch

    from adlight.export import export_model
    from adlight.models import AutoencoderModel
    from adlight.nets import FadaeinejadAE
    from adlight.tracking import WandbOptions, log_export_to_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    torch.manual_seed(0)
    folder = tmp_path / "exported"
    export_model(AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32)), "onnx", folder, 32, 3)
    monkeypatch.chdir(tmp_path)
    log_export_to_wandb(folder, WandbOptions(enabled=True, offline=True))
    import wandb

    wandb.teardown()
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.onnx"]  # left as it was
    (run_log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    artifacts = [(record.artifact.type, record.artifact.name,
                  sorted(entry.path for entry in record.artifact.manifest.contents))
                 for record in wandb_records(run_log) if record.WhichOneof("record_type") == "artifact"]
    assert ("model", "exported-AutoencoderModel", ["metadata.json", "model.onnx"]) in artifacts
