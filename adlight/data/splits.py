"""Seeded, stratified splits of index lists.

Hand-written instead of ``sklearn.model_selection.train_test_split(stratify=...)`` because that
refuses strata with a single member and cannot keep "at least one per split" for the handful of
images per defect type in MVTec AD (e.g. 4 validation images of a rare defect).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from adlight.errors import DataError

if TYPE_CHECKING:
    from adlight.data.datasets import Sample


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` items each part gets: largest remainder, at least one per positive part
    when there are enough items."""
    total = min(n, round(n * sum(fractions) + 1e-9))
    raw = [n * f for f in fractions]
    counts = [math.floor(r + 1e-9) for r in raw]
    order = sorted(range(len(fractions)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: max(0, total - sum(counts))]:
        counts[i] += 1
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if len(positive) <= total:
        for i in positive:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def stratified_split(
    strata: Sequence[Hashable], fractions: Sequence[float], seed: int
) -> list[list[int]]:
    """Split ``range(len(strata))`` into ``len(fractions)`` disjoint parts, per stratum.

    Within each stratum (items with equal ``strata`` value) the items are shuffled with
    ``numpy.random.default_rng(seed)`` and cut by ``fractions`` (largest-remainder rounding).
    A part with a positive fraction gets at least one item of every stratum that has at least
    as many items as there are positive parts. ``fractions`` may sum to less than 1: the rest
    is left out of every part. Parts are returned as sorted index lists, so the same ``strata``
    and ``seed`` always give the same split.
    """
    fractions = [float(f) for f in fractions]
    if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise DataError(f"split fractions must be >= 0 and sum to at most 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    by_key: dict[Hashable, list[int]] = {}
    for i, key in enumerate(strata):
        by_key.setdefault(key, []).append(i)
    for key in sorted(by_key, key=lambda k: (type(k).__name__, k)):
        members = by_key[key]
        perm = [members[j] for j in rng.permutation(len(members))]
        start = 0
        for p, c in enumerate(_counts(len(members), fractions)):
            parts[p].extend(perm[start : start + c])
            start += c
    return [sorted(p) for p in parts]


def move_abnormal_to_train(
    train: list[Sample], pool: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Move a seeded ``fraction`` of each anomaly class of ``pool`` into ``train``.

    Used by supervised families only; with ``fraction == 0`` nothing moves.
    """
    if fraction <= 0:
        return train, pool
    abnormal = [i for i, s in enumerate(pool) if s.label == 1]
    (chosen,) = stratified_split([pool[i].class_id for i in abnormal], [fraction], seed)
    moved = {abnormal[j] for j in chosen}
    return train + [pool[i] for i in sorted(moved)], [
        s for i, s in enumerate(pool) if i not in moved
    ]
