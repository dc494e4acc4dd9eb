"""Generated images as training data: any datamodule plus N normals from a trained generator.

Wilmet et al. train a DCGAN on a small MVTec category (toothbrush: 60 training images) and
add its samples to the training set. :class:`WithGeneratedNormals` does that for any
:class:`~adlight.data.AnomalyDataModule`: it delegates everything to the wrapped datamodule
and appends ``num_images`` images from a :class:`~adlight.models.GANModel` checkpoint to the
**training split only** (label 0, ``path`` ``generated:<i>``), generated once and
deterministically from ``seed``. Validation and test splits are the wrapped datamodule's,
untouched, so a model trained with and without generated images is measured on the same
images. In YAML::

    data:
      class_path: adlight.data.WithGeneratedNormals
      init_args:
        datamodule:
          class_path: adlight.data.MVTecDataModule
          init_args: {root: data/mvtec_ad, category: bottle, image_size: 64}
        generator_checkpoint: runs/wilmet/mvtec_dcgan/.../checkpoints/last.ckpt
        num_images: 200
"""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset
from torchvision.transforms.v2.functional import rgb_to_grayscale

from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import TensorImageDataset
from adlight.errors import ConfigError

#: ``path`` prefix of generated samples (``generated:<i>``)
GENERATED_SOURCE = "generated"


class AppendedDataset(ConcatDataset):
    """Datasets one after the other, with ``index`` the position in the whole.

    ``index`` must be unique within a dataset (metrics and head fitting drop duplicates
    by it), so each part's own position is replaced by the position in the concatenation.
    """

    def rows(self) -> list[tuple[str, int, int]]:
        """``(path, label, class_id)`` of every item, in order (for split.csv)."""
        return [row for part in self.datasets for row in part.rows()]

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        item = dict(super().__getitem__(index))
        item["index"] = int(index)
        return item


def load_generator(checkpoint: str | Path) -> nn.Module:
    """The generator of a :class:`~adlight.models.GANModel` checkpoint, in eval mode.

    The checkpoint names the generator's class, constructor arguments and where its weights
    are (``adlight_generator``: ``state_dict["generator.*"]``, or the weight average's
    ``generator_ema.module.*`` when the model kept one). Only
    classes from ``adlight`` are built, so a checkpoint cannot make this import other code.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(
            f"generator_checkpoint {path} does not exist; train a GAN first (e.g. adlight fit "
            "--config configs/wilmet/mvtec_dcgan.yaml) and pass one of its .ckpt files"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, pickled objects...
        raise ConfigError(f"generator_checkpoint {path} could not be read: {error}") from error
    spec = data.get("adlight_generator") if isinstance(data, dict) else None
    state = data.get("state_dict") if isinstance(data, dict) else None
    if not isinstance(spec, dict) or not isinstance(state, dict):
        raise ConfigError(
            f"generator_checkpoint {path} holds no generator: expected a checkpoint written by "
            "adlight.models.GANModel with a generator such as adlight.nets.DCGANGenerator"
        )
    class_path = str(spec.get("class_path", ""))
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name.startswith("adlight."):
        raise ConfigError(
            f"generator_checkpoint {path} names generator class {class_path!r}; only adlight "
            "classes are built from checkpoints"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"generator_checkpoint {path}: generator class {class_path!r} does not exist"
        ) from error
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"generator_checkpoint {path}: {class_path!r} is not a network")
    generator = cls(**dict(spec.get("init_args", {})))
    # the weight average when the model kept one (GANModel's generator_ema_decay)
    prefix = str(spec.get("state_prefix", "generator."))
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ConfigError(
            f"generator_checkpoint {path}: its generator weights do not fit {class_path} "
            f"with {spec.get('init_args')}: {str(error).splitlines()[0]}"
        ) from error
    return generator.eval()


class WithGeneratedNormals(AnomalyDataModule):
    """A datamodule whose training split also holds ``num_images`` generated normals.

    Args:
        datamodule: the datamodule to wrap; its splits, class names, batch size, workers,
            image size and channels are used as they are, and any attribute this class
            does not define is read from it.
        generator_checkpoint: a checkpoint written by :class:`~adlight.models.GANModel`
            (``fit`` writes them under ``<run>/checkpoints``). Its image size must be the
            datamodule's; an RGB generator's images are converted to grayscale (ITU-R 601
            luma, as the image loader does) for a 1-channel datamodule, and the other way
            round by repeating the plane.
        num_images: how many images to add (0: none, and the checkpoint is not read).
        seed: seeds the generator's codes: the same seed gives the same images.
        generation_batch_size: images generated per forward pass.

    Generated images get the wrapped training split's transform (its augmentation), carry
    a zero ``mask`` when the training split has masks, ``label`` 0 and the ``class_id`` of
    the training normals' class (-1 when they come from several classes). They appear in
    ``split.csv`` as ``generated:<i>`` rows of the train split, and in
    :meth:`train_eval_dataset` (without augmentation), so one-class heads see them too.
    """

    def __init__(
        self,
        datamodule: AnomalyDataModule,
        generator_checkpoint: str | None = None,
        num_images: int = 100,
        seed: int = 0,
        generation_batch_size: int = 64,
    ) -> None:
        if not isinstance(datamodule, AnomalyDataModule):
            raise ConfigError(
                f"datamodule must be an adlight.data.AnomalyDataModule, got {type(datamodule).__name__}"
            )
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
            raise ConfigError(f"num_images must be an int >= 0, got {num_images!r}")
        if (isinstance(generation_batch_size, bool) or not isinstance(generation_batch_size, int)
                or generation_batch_size < 1):
            raise ConfigError(f"generation_batch_size must be an int >= 1, got {generation_batch_size!r}")
        super().__init__(datamodule.batch_size, datamodule.num_workers, datamodule.image_size,
                         datamodule.channels, seed, datamodule.predict_dir)
        self.datamodule = datamodule
        self.num_images = num_images
        self.generation_batch_size = generation_batch_size
        self.generator_checkpoint = None if generator_checkpoint is None else str(generator_checkpoint)
        if num_images > 0 and self.generator_checkpoint is None:
            raise ConfigError(f"num_images={num_images} needs a generator_checkpoint")
        # read at setup (like every datamodule's files), so that a bad checkpoint fails
        # as one ConfigError line from the CLI rather than inside its argument parsing
        self._generator: nn.Module | None = None
        self._generated: TensorImageDataset | None = None

    def __getattr__(self, name: str):
        # "delegates everything": attributes of the wrapped datamodule (category, root,
        # normal_class_ids...) read through; guarded so copying or unpickling, which look
        # attributes up before __dict__ is filled, does not recurse
        inner = self.__dict__.get("datamodule")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    @property
    def generator(self) -> nn.Module | None:
        """The checkpoint's generator (read on first use), ``None`` when ``num_images`` is 0."""
        if self.num_images == 0:
            return None
        if self._generator is None:
            generator = load_generator(self.generator_checkpoint)
            size = getattr(generator, "image_size", None)
            if size != self.image_size:
                raise ConfigError(
                    f"generator_checkpoint {self.generator_checkpoint} generates {size} px images "
                    f"but the datamodule's image_size is {self.image_size}; train the GAN at "
                    f"{self.image_size} px or set the datamodule's image_size to {size}"
                )
            self._generator = generator
        return self._generator

    # ----------------------------------------------------------------- lightning hooks
    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    # ----------------------------------------------------------------- splits
    @torch.no_grad()
    def generate(self) -> torch.Tensor:
        """The ``num_images`` generated images, ``N x channels x S x S`` in [0, 1]."""
        generator = self.generator
        if generator is None:
            return torch.zeros(0, self.channels, self.image_size, self.image_size)
        rng = torch.Generator().manual_seed(self.seed)
        codes = generator.sample_latent(self.num_images, rng)
        low, high = getattr(generator, "input_range", (-1.0, 1.0))
        images = torch.cat([((generator(chunk) - low) / (high - low)).clamp(0.0, 1.0)
                            for chunk in codes.split(self.generation_batch_size)])
        if images.shape[1] == 3 and self.channels == 1:
            images = rgb_to_grayscale(images)
        elif images.shape[1] == 1 and self.channels == 3:
            images = images.expand(-1, 3, -1, -1)
        return images.contiguous()

    def _build_splits(self) -> SplitDatasets:
        inner = self.datamodule
        train = inner.train_dataset
        if self.num_images == 0:
            self._generated = None
            return SplitDatasets(train, inner.val_dataset, inner.test_dataset, inner.class_names)
        normal_classes = Counter(cid for _, label, cid in train.rows() if label == 0)
        class_id = next(iter(normal_classes)) if len(normal_classes) == 1 else -1
        images = self.generate()
        has_masks = len(train) > 0 and "mask" in train[0]
        self._generated = TensorImageDataset(
            images, [0] * len(images), [class_id] * len(images), source=GENERATED_SOURCE,
            masks=torch.zeros(len(images), 1, *images.shape[-2:]) if has_masks else None,
            transform=getattr(train, "transform", None),
        )
        return SplitDatasets(AppendedDataset([train, self._generated]), inner.val_dataset,
                             inner.test_dataset, inner.class_names)

    def train_eval_dataset(self) -> Dataset:
        """The wrapped datamodule's training normals, then the generated ones, unaugmented."""
        self._ensure_splits()
        real = self.datamodule.train_eval_dataset()
        if self._generated is None:
            return real
        generated = self._generated.subset(range(len(self._generated)), transform=None)
        return AppendedDataset([real, generated])

    @property
    def predict_dataset(self) -> Dataset:
        return self.datamodule.predict_dataset
