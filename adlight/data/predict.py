"""Predicting over a folder in which some files cannot be decoded.

The dataset yields a marker (``path`` and ``error``) for a file it cannot read; the collate
function keeps batches to the readable images and lists the others under ``unreadable``; the
loader warns about each of them (or, strict, stops with one line) and never hands the model a
batch without images, so no model needs to know about unreadable files.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch.utils.data import DataLoader, default_collate

from adlight.data.datasets import ImageFileDataset, Sample
from adlight.data.image_tensors import open_image
from adlight.errors import DataError

#: batch key: ``[{"path": ..., "error": ...}]`` of the files of this batch that could not be read
UNREADABLE = "unreadable"


class PredictImageDataset(ImageFileDataset):
    """Unlabelled image files; an unreadable one becomes ``{"path", "index", "error"}``.

    ``strict``: the loader stops at the first unreadable file instead of skipping it.
    """

    def __init__(self, samples: Sequence[Sample], channels: int, resize: int,
                 strict: bool = False) -> None:
        super().__init__(samples, None, channels, has_masks=False, resize=resize)
        self.strict = bool(strict)

    def check_decodable(self) -> None:
        """Decode every file once, so that (strict) a bad one stops the run before any output."""
        for s in self.samples:
            open_image(Path(s.path), "image")

    def __getitem__(self, index: int) -> dict:
        try:
            return super().__getitem__(index)
        except DataError as e:
            return {"path": str(self.samples[index].path), "index": int(index), "error": str(e)}


def collate_readable(items: list[dict]) -> dict:
    """Collate the readable items; the unreadable ones go, as they are, under ``unreadable``."""
    readable = [it for it in items if "error" not in it]
    batch = default_collate(readable) if readable else {}
    unreadable = [{"path": it["path"], "error": it["error"]} for it in items if "error" in it]
    if unreadable:  # absent otherwise: a clean batch is exactly the contract's batch
        batch[UNREADABLE] = unreadable
    return batch


class PredictLoader(DataLoader):
    """A DataLoader over a :class:`PredictImageDataset` that skips unreadable files.

    Each unreadable file is warned about with its path, and travels to the prediction writer
    in the ``unreadable`` list of a batch that has images: a batch whose every file failed is
    merged into its neighbour (the loader looks one batch ahead), so fewer batches may come
    than ``len()`` says.
    """

    def __iter__(self) -> Iterator[dict]:
        strict = getattr(self.dataset, "strict", False)
        held: dict | None = None  # the last batch with images, yielded once the next is known
        pending: list[dict] = []  # unreadable files seen before the first batch with images
        for batch in super().__iter__():
            unreadable = batch.pop(UNREADABLE, [])
            for bad in unreadable:
                if strict:
                    raise DataError(f"{bad['error']} (strict_predict is true)")
                warnings.warn(f"{bad['error']}; it is not scored and is listed in scores.csv "
                              "with its error", UserWarning, stacklevel=2)
            if "image" not in batch:
                if held is not None:
                    held.setdefault(UNREADABLE, []).extend(unreadable)
                else:
                    pending.extend(unreadable)
                continue
            if pending or unreadable:
                batch[UNREADABLE] = pending + unreadable
            pending = []
            if held is not None:
                yield held
            held = batch
        if held is None and pending:
            raise DataError(f"no image of the predict folder could be decoded; the first: "
                            f"{pending[0]['error']}")
        if held is not None:
            yield held
