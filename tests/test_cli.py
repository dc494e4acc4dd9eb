"""The ``adlight`` command line, run in-process on synthetic data and on the quick start."""

import csv
import json
from pathlib import Path

import pytest
from synthetic import make_mvtec_tree

from adlight.cli import main
from adlight.cli.config_files import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _is_mvtec_autoencoder(path: Path) -> bool:
    config = load_config(path)
    return (config.get("model", {}).get("class_path") == "adlight.models.AutoencoderModel"
            and config.get("data", {}).get("class_path") == "adlight.data.MVTecDataModule")


# every shipped MVTec autoencoder config; other families test their configs in their own files
PAPER_CONFIGS = sorted(p for p in CONFIGS.glob("*/[!_]*.yaml") if _is_mvtec_autoencoder(p))


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=8, n_good_test=6,
                           defects={"scratch": 4, "hole": 4}, size=64)


def tiny(root, run_dir, size=32):
    """Overrides that shrink any shipped MVTec config to a seconds-long run."""
    return [f"--data.root={root}", f"--data.image_size={size}", "--data.loader.batch_size=4",
            f"--model.network.init_args.image_size={size}", "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"]


def only_run_dir(root: Path) -> Path:
    reports = sorted(root.rglob("metrics.json"))
    assert reports, f"no metrics.json under {root}"
    return reports[-1].parent


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_config_fits_and_tests(config, mvtec_root, tmp_path):
    main(["fit", f"--config={config}", *tiny(mvtec_root, tmp_path)])
    run_dir = only_run_dir(tmp_path)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["n_images"] > 0 and report["n_anomalous"] > 0
    assert 0.0 <= report["image_AUROC"] <= 1.0
    assert 0.0 <= report["pixel_AUROC"] <= 1.0
    assert report["image_threshold_source"] in ("validation split, F1-optimal", "none")
    assert set(report["per_class"]) == {"hole", "scratch", "ALL"}
    for figure in ("examples.png", "roc.png", "score_histogram.png", "pixel_f1_vs_tau.png"):
        assert (run_dir / figure).stat().st_size > 1000
    assert (run_dir / "split.csv").exists() and (run_dir / "config.yaml").exists()


def test_test_from_checkpoint_reproduces_the_fit_report_and_predict_writes_maps(mvtec_root, tmp_path):
    config = CONFIGS / "fadaeinejad" / "mvtec_ae_l2.yaml"
    main(["fit", f"--config={config}", *tiny(mvtec_root, tmp_path / "fit")])
    fit_dir = only_run_dir(tmp_path / "fit")
    fit_report = json.loads((fit_dir / "metrics.json").read_text())
    checkpoint = next(fit_dir.rglob("*.ckpt"))

    main(["test", f"--config={config}", *tiny(mvtec_root, tmp_path / "test"),
          f"--ckpt_path={checkpoint}"])
    test_report = json.loads((only_run_dir(tmp_path / "test") / "metrics.json").read_text())
    for key in ("image_AUROC", "pixel_AUROC", "image_threshold", "pixel_threshold", "image_F1"):
        assert test_report[key] == pytest.approx(fit_report[key], abs=1e-6), key
    assert test_report["pixel_threshold"] == 0.2  # the config's fixed tau

    images = mvtec_root / "bottle" / "test" / "scratch"
    main(["predict", f"--config={config}", *tiny(mvtec_root, tmp_path / "predict"),
          f"--data.predict_dir={images}", f"--ckpt_path={checkpoint}"])
    scores = next((tmp_path / "predict").rglob("scores.csv"))
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == len(list(images.glob("*.png")))
    assert all(float(r["score"]) >= 0 and r["prediction"] in ("0", "1") for r in rows)
    maps = scores.parent / "maps"
    assert (maps / rows[0]["anomaly_map"]).exists() and (maps / rows[0]["defect_mask"]).exists()


def test_a_missing_root_is_one_clear_line_not_a_traceback(tmp_path, capsys):
    config = CONFIGS / "fadaeinejad" / "mvtec_ae_l2.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={config}", *tiny(tmp_path / "nowhere", tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "adlight: error:" in err and "nowhere" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("bad", ["--data.image_size=-3", "--model.network.init_args.image_size=-3"],
                         ids=["datamodule", "network"])
def test_a_bad_value_checked_in_a_constructor_is_one_line(bad, mvtec_root, tmp_path, capsys):
    # jsonargparse wraps an error raised in a subclass's __init__ into a multi-line
    # "Does not validate against any of the Union subtypes" with the namespace dumped
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={CONFIGS / 'fadaeinejad' / 'mvtec_ae_l2.yaml'}",
              *tiny(mvtec_root, tmp_path), bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("adlight: error:") and "image_size" in err[-1] and "-3" in err[-1]
    assert not any("Union subtypes" in line or "Namespace(" in line for line in err)


def test_an_undecodable_image_names_the_file(mvtec_root, tmp_path, capsys):
    broken = make_mvtec_tree(tmp_path / "broken", n_train=4, n_good_test=2, defects={"scratch": 2})
    bad = broken / "bottle" / "train" / "good" / "001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SystemExit):
        main(["fit", f"--config={CONFIGS / 'fadaeinejad' / 'mvtec_ae_l2.yaml'}",
              *tiny(broken, tmp_path / "run")])
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config writes into ./runs
    main(["fit", f"--config={CONFIGS / 'quickstart.yaml'}", "--trainer.enable_progress_bar=false"])
    report = json.loads(next(Path("runs/quickstart").rglob("metrics.json")).read_text())
    # measured 1.000 (digit 0 normal); the floor leaves room for other CPUs' arithmetic
    assert report["image_AUROC"] >= 0.97
    assert report["image_threshold_source"] == "validation split, F1-optimal"
