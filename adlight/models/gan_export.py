"""Export a trained GAN's generator as a ``torch.export`` program that draws [0, 1] images.

The ``.pt2`` file is what :class:`~adlight.data.WithGeneratedNormals` reads
(``generator_file``): ``torch.export.load(path).module()`` maps codes (N x latent_dim) to
images (N x C x S x S) in [0, 1], and the extra file ``adlight_generator.json`` says
``latent_dim``, ``image_size`` and ``channels``, so the data layer draws the codes
``model.sample_latent`` draws (N(0, I) from a seeded ``torch.Generator``) and builds no
network. (``torch.export`` rather than TorchScript: this torch deprecates ``torch.jit``.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import Tensor, nn

#: the extra file inside the archive that describes the generator
METADATA_FILE = "adlight_generator.json"


class ImageGenerator(nn.Module):
    """A generator followed by the map from its output range to [0, 1] image units."""

    def __init__(self, generator: nn.Module, input_range: tuple[float, float]) -> None:
        super().__init__()
        self.generator = generator
        self.low, self.high = float(input_range[0]), float(input_range[1])

    def forward(self, z: Tensor) -> Tensor:
        return ((self.generator(z) - self.low) / (self.high - self.low)).clamp(0.0, 1.0)


def export_generator(model, path: str | Path) -> Path:
    """Write ``model``'s sampling generator (the weight average when it keeps one) to ``path``.

    ``model`` is a :class:`~adlight.models.GANModel`; the generator is exported in eval mode
    (BatchNorm on its running statistics), as ``model.generate`` runs it, for any batch size.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"path {path} must end in .pt2 (torch.export's archive)")
    # a copy, so that the model's own generator keeps its device and train/eval mode
    module = ImageGenerator(copy.deepcopy(model.sampling_generator), model.input_range)
    module = module.to("cpu").eval()
    example = model.sample_latent(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        program = torch.export.export(module, (example,),
                                      dynamic_shapes={"z": {0: torch.export.Dim("batch")}})
    channels, size, _ = model.image_shape
    metadata = {"latent_dim": int(example.shape[1]), "image_size": size, "channels": channels}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(metadata)})
    return path
