"""The training-step memory estimate of gradient-trained families (adlight/models/fit_memory.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from synthetic import make_mvtec_tree
from torch import nn

from adlight.cli import main
from adlight.models import AutoencoderModel
from adlight.models.fit_memory import (
    activation_bytes_per_image,
    batch_size_that_fits,
    parameter_bytes,
    saved_tensor_bytes,
)
from adlight.nets import FadaeinejadAE

REPO = Path(__file__).resolve().parents[1]
AE = REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"

def test_the_saved_activations_are_counted_exactly_for_a_known_network():
    # Conv2d keeps its input for the weight gradient, ReLU its output; the weights (excluded,
    # they exist once whatever the batch) and the graph's other tensors are not activations.
    # (A peak-RSS comparison was tried first: ru_maxrss only rises, and the allocator reuses
    # memory freed by earlier work in the process, so it measured 0 on a quiet machine.)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    images = torch.rand(2, 3, 16, 16)
    with torch.enable_grad(), saved_tensor_bytes(exclude=net) as total:
        net(images).sum()
    assert total[0] == 2 * 3 * 16 * 16 * 4 + 2 * 8 * 16 * 16 * 4
    with torch.enable_grad(), saved_tensor_bytes() as with_weights:
        net(images).sum()
    assert with_weights[0] == total[0] + 8 * 3 * 3 * 3 * 4  # the conv weight, counted when not excluded


def test_the_activations_grow_with_the_pixels_and_the_model_is_left_as_it_was():
    model = AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=64, latent_dim=8))
    large_model = AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=128, latent_dim=8))
    small_batch = {"image": torch.rand(2, 3, 64, 64), "label": torch.zeros(2)}
    large_batch = {"image": torch.rand(2, 3, 128, 128), "label": torch.zeros(2)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    small = activation_bytes_per_image(model, small_batch)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the fit draws what it would have
    assert all(torch.equal(v, before[k]) or v.isnan().all() and before[k].isnan().all()  # unset thresholds
               for k, v in model.state_dict().items())
    assert "log" not in model.__dict__
    large = activation_bytes_per_image(large_model, large_batch)
    assert 3 < large / small < 5  # 4x the pixels
    assert parameter_bytes(model) == 4 * 4 * sum(p.numel() for p in model.parameters())


def test_batch_size_that_fits():
    assert batch_size_that_fits(per_image=100, fixed=1000, available=1350) == 3
    assert batch_size_that_fits(per_image=100, fixed=1000, available=900) == 0


def test_a_fit_larger_than_free_memory_is_one_line_naming_the_batch_size_before_any_step(tmp_path, capfd,
                                                                                        monkeypatch):
    from adlight import process_memory
    from adlight.models import fit_memory

    root = make_mvtec_tree(tmp_path / "mvtec", n_train=8, n_good_test=2, defects={"scratch": 2}, size=32)
    measured = []
    original = fit_memory.training_step_bytes
    monkeypatch.setattr(fit_memory, "training_step_bytes",
                        lambda model, dataset, batch_size: measured.append(original(model, dataset, batch_size))
                        or measured[-1])
    # free: the parameters and two and a half images' activations, after the 10 % margin
    monkeypatch.setattr(process_memory, "available_bytes",
                        lambda device=None: int((measured[0][0] - 1.5 * measured[0][1]) / 0.9))
    steps = []
    monkeypatch.setattr(AutoencoderModel, "on_train_batch_start", lambda self, batch, i: steps.append(i))
    capfd.readouterr()
    code = 0
    try:
        main(["fit", f"--config={AE}", f"--data.root={root}", "--data.image_size=32", "--data.loader.batch_size=4",
              "--trainer.max_epochs=1", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'runs'}",
              "--trainer.enable_progress_bar=false"])
    except SystemExit as exit_:
        code = exit_.code
    err = capfd.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if re.match(r"adlight( [\w-]+)?: error", line)]
    assert len(errors) == 1, err[-3000:]
    for words in ("AutoencoderModel's training step needs about", "image_size 32 with batch_size 4",
                  "free on cpu", "use --data.loader.batch_size 2"):
        assert words in errors[0], (words, errors[0])
    assert not steps and not list(tmp_path.rglob("*.ckpt"))


def test_the_gan_is_measured_through_its_probe_step_without_touching_its_weights():
    from adlight.models import GANModel
    from adlight.models.fit_memory import training_step_bytes

    (model, *_) = GANModel.examples(image_size=32)
    assert not model.automatic_optimization  # it steps its own optimisers: training_step is no probe
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(3, 3, 32, 32)
    dataset = [{"image": image, "label": torch.tensor(0)} for image in images]
    need, per_image = training_step_bytes(model, dataset, batch_size=16)
    assert per_image > 0 and need == 16 * per_image + parameter_bytes(model)
    assert all(torch.equal(v, before[k]) or v.isnan().all() and before[k].isnan().all()
               for k, v in model.state_dict().items())


def test_simplenet_features_larger_than_free_memory_are_one_line_before_any_extraction(tmp_path, capfd,
                                                                                       monkeypatch):
    from adlight import process_memory
    from adlight.models import FeatureDiscriminatorModel
    from adlight.models import feature_discriminator as module

    root = make_mvtec_tree(tmp_path / "mvtec", n_train=8, n_good_test=2, defects={"scratch": 2}, size=32)
    monkeypatch.setattr(process_memory, "available_bytes", lambda device=None: 1000)
    extracted = []
    monkeypatch.setattr(module, "gather_training_features", lambda *args: extracted.append(1))
    config = REPO / "configs" / "feature_discriminator" / "mvtec_simplenet.yaml"
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["fit", f"--config={config}", f"--data.root={root}", "--data.image_size=32",
              "--model.network.init_args.features.init_args.backbone.init_args.input_size=32",
              "--data.loader.batch_size=4", "--trainer.accelerator=cpu",
              f"--trainer.default_root_dir={tmp_path / 'runs'}", "--trainer.enable_progress_bar=false"])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if re.match(r"adlight( [\w-]+)?: error", line)]
    assert len(errors) == 1, err[-3000:]
    assert "FeatureDiscriminatorModel's training features need about" in errors[0]
    assert "8 images x 4x4 patches" in errors[0] and "at most 0 training images" in errors[0], errors[0]
    assert not extracted and not list(tmp_path.rglob("*.ckpt"))
    assert FeatureDiscriminatorModel.measures_training_step is False
