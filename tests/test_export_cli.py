"""``adlight export`` and ``adlight predict --exported`` end to end, from a bf16-mixed and a DDP fit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_mvtec_tree

# the DDP rows' helpers and their synthetic trees
from test_distributed import FAMILIES, cli_args, last_checkpoint, run_ddp, run_dir_of, trees  # noqa: F401

from adlight.cli import AdlightCLI, main
from adlight.data.image_tensors import load_image
from adlight.export.command import load_fitted
from adlight.inference import Inferencer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"


def tiny(root, run_dir, size=32):
    return [f"--config={CONFIG}", f"--data.root={root}", f"--data.image_size={size}",
            "--data.loader.batch_size=4", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"]


def rows(path: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in csv.DictReader(path.open())}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A bf16-mixed fit of the L2 AE at 32 px (images written at 32 px: no resizing anywhere)."""
    base = tmp_path_factory.mktemp("export_cli")
    root = make_mvtec_tree(base / "data", n_train=8, n_good_test=4, defects={"scratch": 4}, size=32)
    main(["fit", *tiny(root, base / "fit"), "--trainer.precision=bf16-mixed", "--test_after_fit=false"])
    return base, root, next((base / "fit").rglob("*.ckpt"))


def test_export_then_predict_exported_writes_what_predict_writes(fitted, tmp_path):
    base, root, checkpoint = fitted
    images = root / "bottle" / "test" / "scratch"
    main(["export", *tiny(root, tmp_path / "x"), f"--ckpt_path={checkpoint}", "--format=onnx",
          f"--out={tmp_path / 'onnx'}"])
    meta = json.loads((tmp_path / "onnx" / "metadata.json").read_text())
    assert meta["input"] == {"name": "images", "dtype": "uint8", "layout": "NCHW", "channels": 3,
                             "height": 32, "width": 32}
    assert meta["outputs"] == ["score", "anomaly_map"]
    assert meta["pixel_threshold"] == {"value": 0.2, "source": "fixed"}  # the config's tau
    assert meta["representation"]["network"]["class"] == "FadaeinejadAE"

    main(["predict", f"--exported={tmp_path / 'onnx'}", f"--data.predict_dir={images}",
          f"--out={tmp_path / 'exported'}"])
    # the Lightning predict of the same checkpoint, in float32 (the export is float32)
    main(["predict", *tiny(root, tmp_path / "eager"), "--trainer.precision=32-true",
          f"--data.predict_dir={images}", f"--ckpt_path={checkpoint}"])
    exported = rows(next((tmp_path / "exported").rglob("scores.csv")))
    eager = rows(next((tmp_path / "eager").rglob("scores.csv")))
    assert exported.keys() == eager.keys() and len(eager) == 4
    for name, row in eager.items():
        assert float(exported[name]["score"]) == pytest.approx(float(row["score"]), rel=1e-4)
        for key in ("prediction", "anomaly_map", "defect_mask", "map_max"):
            assert exported[name][key] == row[key], key
    maps = next((tmp_path / "exported").rglob("maps"))
    assert (maps / exported[name]["defect_mask"]).stat().st_size > 0


def test_bad_export_input_is_one_line(fitted, tmp_path, capsys):
    base, root, checkpoint = fitted
    for extra, message in (
        (["--format=tflite"], "--format must be one of onnx, openvino, torchscript, got 'tflite'"),
        (["--format=onnx", f"--ckpt_path={tmp_path / 'none.ckpt'}"], "none.ckpt does not exist"),
    ):
        args = ["export", *tiny(root, tmp_path), f"--out={tmp_path / 'o'}", f"--ckpt_path={checkpoint}", *extra]
        with pytest.raises(SystemExit):
            main(args)
        err = capsys.readouterr().err.strip()
        assert err.startswith("adlight: error: ") and message in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["predict", f"--exported={tmp_path / 'missing'}", f"--data.predict_dir={root}"])
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_a_ddp_fitted_kd_cae_exports_and_matches(trees, tmp_path):  # noqa: F811
    family = next(f for f in FAMILIES if f.name == "wilmet_kd_cae")  # KDE fitted on both ranks' codes
    run_ddp("fit", cli_args(family, trees, tmp_path / "ddp", ddp=True))
    checkpoint = last_checkpoint(run_dir_of(tmp_path / "ddp"))
    args = cli_args(family, trees, tmp_path / "x", ddp=False)
    main(["export", *args, f"--ckpt_path={checkpoint}", "--format=onnx", f"--out={tmp_path / 'onnx'}"])
    paths = sorted((trees["odd"] / "bottle" / "test").rglob("*.png"))
    model, _ = load_fitted(AdlightCLI, args, str(checkpoint))
    with torch.no_grad():
        eager = model.eval().anomaly_outputs({"image": torch.stack([load_image(p, 3) for p in paths])})
    got = Inferencer(tmp_path / "onnx").predict([str(p) for p in paths])
    for key in ("score", "anomaly_map"):
        want = eager[key].numpy()
        assert np.abs(got[key] - want).max() <= 1e-4 * np.abs(want).max(), key
    # the F1-optimal threshold is one validation image's own score: that image is a tie that
    # float rounding decides either way; every other decision must be the same
    threshold = float(model.image_threshold)
    clear = np.abs(eager["score"].numpy() - threshold) > 1e-4 * abs(threshold)
    assert clear.sum() >= len(paths) - 1
    np.testing.assert_array_equal(got["prediction"][clear], (eager["score"].numpy() >= threshold)[clear])
