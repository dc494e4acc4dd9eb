"""What every scorer is: an ``nn.Module`` whose ``outputs`` name the entries of its tuple."""

from __future__ import annotations

from torch import Tensor, nn

#: attributes of a network (or of its ``backbone``) that say which representation it is
_DESCRIBED = ("name", "input_size", "layers", "layer")

SCORE_ONLY = ("score",)
LOCALISING = ("score", "anomaly_map")


class Scorer(nn.Module):
    """``[0, 1]`` images N x C x H x W -> ``(score,)`` or ``(score, anomaly_map)``.

    Subclasses set :attr:`outputs` and implement :meth:`forward`; a family whose LightningModule
    needs more than the tuple (a reconstruction for figures, a sweep of scores) offers it as a
    further method, which ``forward`` calls too, so eager scoring and export run one path.
    """

    #: the names of ``forward``'s outputs, in order
    outputs: tuple[str, ...] = SCORE_ONLY
    #: how closely an exported graph of it (ONNX Runtime, OpenVINO) reproduces its outputs,
    #: relative to the largest value (``docs/export.md``)
    export_rtol: float = 1e-4

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError


def describe_network(module: nn.Module) -> dict:
    """The class of ``module`` and, where it has them, its backbone's name and input size and its
    layers (and a per-image intensity standardisation's reference): what an export's
    ``metadata.json`` records of the representation."""
    entry: dict = {"class": type(module).__name__}
    backbone = getattr(module, "backbone", module)
    for attr in _DESCRIBED:
        value = getattr(backbone, attr, None) if attr != "layers" else getattr(module, attr, None)
        if isinstance(value, (str, int, list, tuple)):
            entry[attr] = list(value) if isinstance(value, tuple) else value
    if getattr(backbone, "intensity", "dataset") == "image":
        # the standardisation is inside the exported graph; the record says onto what
        entry["intensity"] = {"mode": "image",
                              "reference_mean_std": [round(v, 6) for v in backbone.intensity_reference.tolist()]}
    return entry
