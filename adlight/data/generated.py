"""Generated images as training data: any datamodule plus N normals from a trained generator.

Wilmet et al. train a DCGAN on a small MVTec category (toothbrush: 60 training images) and
add its samples to the training set. :class:`WithGeneratedNormals` does that for any
:class:`~adlight.data.AnomalyDataModule`: it delegates everything to the wrapped datamodule
and appends ``num_images`` images drawn from an exported generator (a ``torch.export`` program, see
:mod:`adlight.models.gan_export`; ``fit`` with ``configs/wilmet/mvtec_dcgan.yaml`` writes
``<run>/generator.pt2``) to the **training split only** (label 0, ``path``
``generated:<i>``), generated once and deterministically from ``seed``. Validation and test splits are the wrapped datamodule's,
untouched, so a model trained with and without generated images is measured on the same
images. In YAML::

    data:
      class_path: adlight.data.WithGeneratedNormals
      init_args:
        datamodule:
          class_path: adlight.data.MVTecDataModule
          init_args: {root: data/mvtec_ad, category: bottle, image_size: 64}
        generator_file: runs/wilmet/mvtec_dcgan/lightning_logs/version_0/generator.pt2
        num_images: 200
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset
from torchvision.transforms.v2.functional import rgb_to_grayscale

from adlight.checks import is_int
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import TensorImageDataset
from adlight.errors import ConfigError

#: ``path`` prefix of generated samples (``generated:<i>``)
GENERATED_SOURCE = "generated"
#: the metadata inside an exported generator (adlight.models.gan_export.METADATA_FILE: the
#: file format is the contract, so the data layer imports nothing from the model layer)
GENERATOR_METADATA = "adlight_generator.json"


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


def load_generator_file(path: str | Path) -> tuple[nn.Module, dict]:
    """The generator ``export_generator`` wrote (a ``torch.export`` program) and its metadata.

    The module maps codes (N x latent_dim) to [0, 1] images; the metadata (the archive's
    ``adlight_generator.json``) gives ``latent_dim``, ``image_size`` and ``channels``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"generator_file {path} does not exist; train a GAN first (adlight fit --config "
            "configs/wilmet/mvtec_dcgan.yaml writes <run>/generator.pt2)"
        )
    if path.suffix != ".pt2":
        raise ConfigError(
            f"generator_file {path} is not a .pt2 file: pass the generator.pt2 a DCGAN fit "
            "exports, not its checkpoint"
        )
    extra = {GENERATOR_METADATA: ""}
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # it logs a traceback before raising; we say it in one line
    try:
        module = torch.export.load(path, extra_files=extra).module()
    except Exception as error:  # truncated, another format...
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"generator_file {path} could not be read: {first}") from error
    finally:
        export_log.setLevel(level)
    try:
        metadata = json.loads(extra[GENERATOR_METADATA] or "null")
        latent_dim, image_size = int(metadata["latent_dim"]), int(metadata["image_size"])
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(
            f"generator_file {path} holds no adlight generator ({GENERATOR_METADATA} missing "
            "or incomplete): write it with adlight.models.gan_export.export_generator"
        ) from error
    return module, {"latent_dim": latent_dim, "image_size": image_size,
                    "channels": int(metadata.get("channels", 3))}


class WithGeneratedNormals(AnomalyDataModule):
    """A datamodule whose training split also holds ``num_images`` generated normals.

    Args:
        datamodule: the datamodule to wrap; its splits, class names, batch size, workers,
            image size and channels are used as they are, and any attribute this class
            does not define is read from it.
        generator_file: a generator exported by
            :func:`adlight.models.gan_export.export_generator` (the DCGAN config's ``fit``
            writes ``<run>/generator.pt2``). Its image size must be the
            datamodule's; an RGB generator's images are converted to grayscale (ITU-R 601
            luma, as the image loader does) for a 1-channel datamodule, and the other way
            round by repeating the plane.
        num_images: how many images to add (0: none, and the file is not read).
        seed: seeds the generator's codes: the same seed gives the same images.
        generation_batch_size: images generated per forward pass.

    Generated images are augmented with the real ones (by batch, ``augment_batch``), carry
    a zero ``mask`` when the training split has masks, ``label`` 0 and the ``class_id`` of
    the training normals' class (-1 when they come from several classes). They appear in
    ``split.csv`` as ``generated:<i>`` rows of the train split, and in
    :meth:`train_eval_dataset` (without augmentation), so one-class heads see them too.
    """

    def __init__(
        self,
        datamodule: AnomalyDataModule,
        generator_file: str | None = None,
        num_images: int = 100,
        seed: int = 0,
        generation_batch_size: int = 64,
    ) -> None:
        if not isinstance(datamodule, AnomalyDataModule):
            raise ConfigError(
                f"datamodule must be an adlight.data.AnomalyDataModule, got {type(datamodule).__name__}"
            )
        if not is_int(num_images) or num_images < 0:
            raise ConfigError(f"num_images must be an int >= 0, got {num_images!r}")
        if (not is_int(generation_batch_size)
                or generation_batch_size < 1):
            raise ConfigError(f"generation_batch_size must be an int >= 1, got {generation_batch_size!r}")
        super().__init__(datamodule.image_size, datamodule.channels, seed, datamodule.predict_dir,
                         strict_predict=datamodule.strict_predict, loader=datamodule.loader)
        self.datamodule = datamodule
        self.num_images = num_images
        self.generation_batch_size = generation_batch_size
        self.generator_file = None if generator_file is None else str(generator_file)
        if num_images > 0 and self.generator_file is None:
            raise ConfigError(f"num_images={num_images} needs a generator_file")
        # read at setup (like every datamodule's files), so that a bad file fails
        # as one ConfigError line from the CLI rather than inside its argument parsing
        self._generator: tuple[nn.Module, dict] | None = None
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
    def generator(self) -> tuple[nn.Module, dict] | None:
        """The exported generator and its metadata (read on first use); ``None`` for 0 images."""
        if self.num_images == 0:
            return None
        if self._generator is None:
            module, metadata = load_generator_file(self.generator_file)
            size = metadata["image_size"]
            if size != self.image_size:
                raise ConfigError(
                    f"generator_file {self.generator_file} generates {size} px images "
                    f"but the datamodule's image_size is {self.image_size}; train the GAN at "
                    f"{self.image_size} px or set the datamodule's image_size to {size}"
                )
            self._generator = module, metadata
        return self._generator

    # ----------------------------------------------------------------- lightning hooks
    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    # ----------------------------------------------------------------- splits
    @torch.no_grad()
    def generate(self) -> torch.Tensor:
        """The ``num_images`` generated images, ``N x channels x S x S`` in [0, 1]."""
        if self.generator is None:
            return torch.zeros(0, self.channels, self.image_size, self.image_size)
        module, metadata = self.generator
        # the codes GANModel.sample_latent draws from the same seed: N(0, I) on the CPU
        codes = torch.randn(self.num_images, metadata["latent_dim"],
                            generator=torch.Generator().manual_seed(self.seed))
        images = torch.cat([module(chunk) for chunk in codes.split(self.generation_batch_size)])
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
