"""Operations: resume after SIGKILL, determinism, versioned run directories, W&B offline."""

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic import make_mvtec_tree

from adlight.callbacks.resume import RNG_STATE_KEY, find_last_checkpoint
from adlight.cli import main

REPO = Path(__file__).resolve().parents[1]
L2_CONFIG = REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=8, n_good_test=5,
                           defects={"scratch": 4, "hole": 3}, size=32)


def tiny(root, run_dir, epochs=2):
    """The L2 AE config at 32 px, two batches per epoch; its augmentations (rotation, flips,
    noise) stay on, so a resumed run only matches when the random generators are restored."""
    return [f"--config={L2_CONFIG}", f"--data.root={root}", "--data.image_size=32",
            "--data.loader.batch_size=4", "--model.network.init_args.image_size=32",
            "--model.network.init_args.latent_dim=16", f"--trainer.max_epochs={epochs}",
            "--trainer.check_val_every_n_epoch=2", "--trainer.log_every_n_steps=1",
            "--trainer.accelerator=cpu", f"--trainer.default_root_dir={run_dir}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def report_of(run_dir: Path) -> dict:
    report = json.loads((run_dir / "metrics.json").read_text())
    report.pop("checkpoint")  # the path differs between runs by construction
    return report


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# a ModelCheckpoint on a monitored metric, as a config may add: it must keep working
BEST = ('--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
        '"init_args": {"monitor": "val/image_AUROC", "mode": "max", "filename": "best-{epoch}"}}')


def test_a_fit_killed_mid_epoch_resumes_from_last_to_the_uninterrupted_metrics(mvtec_root, tmp_path):
    epochs = 4
    main(["fit", *tiny(mvtec_root, tmp_path / "whole", epochs), BEST])
    whole_dir = tmp_path / "whole" / "lightning_logs" / "version_0"

    # the same fit in a fresh process, SIGKILLed in the middle of epoch 3 (0-based): no
    # teardown runs. Validation (and so the monitored and the default checkpoint) ran after
    # epochs 1 and 3 only; last.ckpt is from epoch 2
    kill = ('--trainer.callbacks+={"class_path": "killswitch.SigkillAt", '
            '"init_args": {"epoch": 3, "batch": 1}}')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           # the same number of threads as this process, so float sums match bit for bit
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run([sys.executable, "-m", "adlight", "fit",
                             *tiny(mvtec_root, tmp_path / "killed", epochs), BEST, kill],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    killed_dir = tmp_path / "killed" / "lightning_logs" / "version_0"
    last = killed_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)  # the RNG states load without pickle
    assert checkpoint["epoch"] == 2 and RNG_STATE_KEY in checkpoint
    # the config's monitored checkpoint is kept beside it
    assert [p.name for p in killed_dir.glob("checkpoints/best-*.ckpt")] == ["best-epoch=1.ckpt"]
    assert not (killed_dir / "metrics.json").exists()
    before = snapshot(killed_dir)

    main(["fit", *tiny(mvtec_root, tmp_path / "killed", epochs), BEST, "--ckpt_path=last"])
    resumed_dir = tmp_path / "killed" / "lightning_logs" / "version_1"
    assert report_of(resumed_dir) == report_of(whole_dir)
    assert snapshot(killed_dir) == before  # the killed run's files are untouched
    # both tested the config's best checkpoint (epoch 1): the resumed fit kept ranking its
    # copy of the killed run's best-epoch=1.ckpt, as the uninterrupted fit ranked the original
    assert Path(json.loads((whole_dir / "metrics.json").read_text())["checkpoint"]).name == "best-epoch=1.ckpt"
    assert (json.loads((resumed_dir / "metrics.json").read_text())["checkpoint"]
            == str(resumed_dir / "checkpoints" / "best-epoch=1.ckpt"))
    assert find_last_checkpoint(tmp_path / "killed") == resumed_dir / "checkpoints" / "last.ckpt"


def test_the_test_after_fit_scores_the_monitored_best_checkpoint(mvtec_root, tmp_path):
    """A config that keeps "the best checkpoint by validation loss" is tested on it; before,
    the test after fit scored the last epoch's weights whatever the config kept."""
    first_epoch = ('--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                   '"init_args": {"monitor": "epoch", "mode": "min", "save_top_k": 1, '
                   '"filename": "best-{epoch}"}}')  # the best is epoch 0, never the last
    args = [*tiny(mvtec_root, tmp_path / "fit", epochs=3), "--trainer.check_val_every_n_epoch=1",
            first_epoch]
    main(["fit", *args])
    run_dir = tmp_path / "fit" / "lightning_logs" / "version_0"
    tested = json.loads((run_dir / "metrics.json").read_text())
    best = run_dir / "checkpoints" / "best-epoch=0.ckpt"
    assert Path(tested["checkpoint"]) == best
    # the same numbers as testing that file on its own, and not those of the last epoch
    main(["test", *args, f"--ckpt_path={best}", f"--trainer.default_root_dir={tmp_path / 'best'}"])
    main(["test", *args, f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
          f"--trainer.default_root_dir={tmp_path / 'last'}"])
    of_best, of_last = (report_of(tmp_path / name / "lightning_logs" / "version_0")
                        for name in ("best", "last"))
    tested.pop("checkpoint")
    tested.pop("validation")  # the fit's report also scores the validation split
    assert tested == of_best
    assert tested != of_last


def test_the_same_config_twice_gives_the_same_metrics_in_a_new_version(mvtec_root, tmp_path):
    main(["fit", *tiny(mvtec_root, tmp_path), "--trainer.deterministic=true"])
    first = tmp_path / "lightning_logs" / "version_0"
    before = snapshot(first)
    main(["fit", *tiny(mvtec_root, tmp_path), "--trainer.deterministic=true"])
    second = tmp_path / "lightning_logs" / "version_1"
    assert report_of(second) == report_of(first)
    assert snapshot(first) == before  # nothing of the first run was overwritten
    for name in ("metrics.json", "config.yaml", "split.csv", "checkpoints/last.ckpt"):
        assert (second / name).is_file(), name


def test_save_last_false_writes_no_last_checkpoint(mvtec_root, tmp_path):
    main(["fit", *tiny(mvtec_root, tmp_path, epochs=1), "--save_last=false",
          "--trainer.check_val_every_n_epoch=1", "--test_after_fit=false"])
    checkpoints = {p.name for p in tmp_path.rglob("*.ckpt")}
    assert checkpoints and "last.ckpt" not in checkpoints  # Lightning's default one stays


def wandb_records(path: Path):
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte ``:W&B`` header,
    then LevelDB log blocks of 32 KiB whose chunks are crc32 (4 bytes), length (2, little
    endian) and type (1 full, 2 first, 3 middle, 4 last). wandb no longer ships a reader."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_holds_config_metrics_figures_and_checkpoint(mvtec_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))  # not the user's home
    main(["fit", *tiny(mvtec_root, tmp_path / "run"), "--trainer.check_val_every_n_epoch=1",
          f"--config={REPO / 'configs' / 'logger' / 'wandb.yaml'}", "--wandb.log_model=true"])
    # the run is finished, but its transaction log is written by wandb's service process,
    # which outlives it in this process (a command-line run ends it on exit): a loaded CI
    # machine once read a half-written record here. Shut the service down first.
    import wandb

    wandb.teardown()
    run_dir = tmp_path / "run" / "lightning_logs" / "version_0"
    assert (run_dir / "metrics.json").is_file()  # the run directory did not move
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    images = {p.name.split("_")[0] for p in (offline[0] / "files" / "media" / "images").rglob("*.png")}
    assert {"examples", "roc", "score"} <= images

    def key(item):  # wandb writes a key either whole or split at "/"
        return item.key or "/".join(item.nested_key)

    metrics, config, artifacts = set(), {}, []
    for record in wandb_records(next(offline[0].glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            metrics |= {key(item) for item in record.history.item}
        elif kind == "config":
            config.update({key(item): json.loads(item.value_json) for item in record.config.update})
        elif kind == "artifact":
            artifacts.append((record.artifact.type,
                              [entry.path for entry in record.artifact.manifest.contents]))
    assert {"train/loss", "val/image_AUROC", "test/image_AUROC", "test/pixel_AUROC"} <= metrics
    # the whole LightningCLI config, network and optimiser included
    network = config["model"]["init_args"]["network"]
    assert network["class_path"] == "adlight.nets.FadaeinejadAE"
    assert network["init_args"]["latent_dim"] == 16
    assert config["trainer"]["max_epochs"] == 2 and config["wandb"]["log_model"] is True
    assert ("model", ["model.ckpt"]) in artifacts
    # finished, so that a next run in this process starts its own W&B run
    import wandb

    assert wandb.run is None
