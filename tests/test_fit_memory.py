"""The training-step memory estimate of gradient-trained families (adlight/models/fit_memory.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic import make_mvtec_tree

from adlight.cli import main
from adlight.models import AutoencoderModel
from adlight.models.fit_memory import (
    activation_bytes_per_image,
    batch_size_that_fits,
    parameter_bytes,
)
from adlight.nets import FadaeinejadAE

REPO = Path(__file__).resolve().parents[1]
AE = REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"

# one real Adam step in a fresh process: the rise of its peak resident memory against the estimate
_PEAK = """
import resource, sys, torch
from adlight.models import AutoencoderModel
from adlight.models.fit_memory import activation_bytes_per_image, parameter_bytes
from adlight.nets import FadaeinejadAE
size, n = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=size, latent_dim=100))
images = torch.rand(n, 3, size, size)
per_image = activation_bytes_per_image(model, {"image": images[:2].clone(), "label": torch.zeros(2)})
optimizer = torch.optim.Adam(model.parameters())
model.log = lambda *args, **kwargs: None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model.training_step({"image": images, "label": torch.zeros(n)}, 0).backward()
optimizer.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(n * per_image + parameter_bytes(model), peak)
"""


@pytest.mark.parametrize("size", [64, 128])
def test_the_estimate_is_within_a_factor_of_two_of_a_measured_step(size):
    # ru_maxrss (kB on Linux) only rises, so the step runs alone in a fresh process
    if not sys.platform.startswith("linux"):
        pytest.skip("ru_maxrss is in kB only on Linux")
    out = subprocess.run([sys.executable, "-c", _PEAK, str(size), "16"], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    estimate, peak = int(out[0]), int(out[1])
    assert peak > 10 * 2**20, peak  # a real step, not noise
    assert 0.5 < estimate / peak < 2, (estimate, peak)


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
