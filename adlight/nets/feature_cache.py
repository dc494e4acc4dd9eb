"""An on-disk cache of extracted features, so a re-run skips the backbone.

Keys are everything that changes a feature vector: the representation's ``cache_key()``
(backbone name, weights file identity, layers, pooling, input size, normalisation...) picks
the cache folder, and a hash of each image tensor as the model receives it (after the
datamodule's decoding, resizing and channel conversion) picks the entry. A changed image,
image size or layer therefore misses instead of returning stale features.

Each process writes its own shard (``features-rank<r>.pt``, replaced atomically), and every
shard of the folder is read on first use, so DDP runs share one cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor

from adlight.errors import ConfigError


def image_digest(image: Tensor) -> str:
    """A content hash of one image tensor (its dtype and shape included)."""
    data = image.detach().contiguous().cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{data.dtype}{tuple(data.shape)}".encode())
    h.update(data.numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """Features by image content, for one representation.

    Args:
        directory: the cache root; a sub-folder per representation key is made in it.
        key: the representation's ``cache_key()``.
        rank: this process's global rank (names the shard it writes).
    """

    def __init__(self, directory: str | os.PathLike, key: str, rank: int = 0) -> None:
        self.folder = Path(directory) / hashlib.sha1(key.encode()).hexdigest()[:16]
        self.key = key
        self.rank = rank
        self._entries: dict[str, Tensor] | None = None
        self._dirty = False
        self.hits = 0
        self.misses = 0

    def _load(self) -> dict[str, Tensor]:
        if self._entries is None:
            self._entries = {}
            for shard in sorted(self.folder.glob("features-rank*.pt")):
                try:
                    data = torch.load(shard, map_location="cpu", weights_only=True)
                except Exception as error:
                    raise ConfigError(
                        f"feature cache shard {shard} is unreadable ({error}); delete it to rebuild"
                    ) from error
                if data.get("key") != self.key:
                    continue  # a hash collision on the folder name: ignore the foreign shard
                for group in data["groups"]:
                    self._entries.update(zip(group["digests"], group["features"].unbind(0), strict=True))
        return self._entries

    def __len__(self) -> int:
        return len(self._load())

    def features(self, images: Tensor, compute) -> Tensor:
        """Features of ``images``: cached rows, and ``compute(images[missing])`` for the rest."""
        entries = self._load()
        digests = [image_digest(image) for image in images]
        missing = [i for i, d in enumerate(digests) if d not in entries]
        self.hits += len(digests) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = compute(images[missing]).detach().float()
            for i, row in zip(missing, computed.cpu().unbind(0), strict=True):
                entries[digests[i]] = row.clone()
            self._dirty = True
        return torch.stack([entries[d] for d in digests]).to(images.device)

    def save(self) -> Path | None:
        """Write this process's shard if anything new was computed (atomic replace)."""
        if not self._dirty or self._entries is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"features-rank{self.rank}.pt"
        # one stacked tensor per feature shape (a representation without a fixed input size,
        # such as RawPixels(size=None), gives different sizes for different image sizes)
        by_shape: dict[tuple, list[str]] = {}
        for digest, row in self._entries.items():
            by_shape.setdefault(tuple(row.shape), []).append(digest)
        groups = [{"digests": ds, "features": torch.stack([self._entries[d] for d in ds])}
                  for ds in by_shape.values()]
        data = {"key": self.key, "groups": groups}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        os.replace(tmp, path)
        self._dirty = False
        return path
