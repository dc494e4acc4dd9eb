"""The seeding rule and the building blocks every split policy uses.

Hand-written instead of ``sklearn.model_selection.train_test_split(stratify=...)`` because that
refuses strata with a single member and cannot keep "at least one per split" for the handful of
images per defect type in MVTec AD (e.g. 4 validation images of a rare defect).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from adlight.checks import check_fraction
from adlight.errors import DataError

_MASK64 = (1 << 64) - 1
#: the stream of :func:`pick_abnormal`: the split's seed plus one (as recorded splits have it)
ABNORMAL_SEED_OFFSET = 1


def seeded_rng(seed: int, *stream: int) -> np.random.Generator:
    """The generator of one random stream of a split: ``seed`` plus the stream's numbers.

    ``default_rng([seed])`` equals ``default_rng(seed)``; the mask keeps negative seeds valid
    and distinct (SeedSequence wants non-negative words).
    """
    return np.random.default_rng([seed & _MASK64, *stream])


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
    rng = seeded_rng(seed)
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


def check_abnormal_train_fraction(value: float) -> float:
    """The one accepted range of ``abnormal_train_fraction``: [0, 1]."""
    return check_fraction("abnormal_train_fraction", value, one=True, error=DataError)


def pick_abnormal(class_ids: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Positions of the anomalies (given by class) that go into train: ``fraction`` of each
    class, seeded; none when ``fraction`` is 0. For supervised families only."""
    if fraction <= 0 or not class_ids:
        return []
    (chosen,) = stratified_split(class_ids, [fraction], seed + ABNORMAL_SEED_OFFSET)
    return chosen


def even_quota(asked: int, available: Sequence[int]) -> list[int]:
    """Split ``asked`` over classes as evenly as their ``available`` counts allow.

    Each class gets ``asked // k`` (the first ``asked % k`` one more); what a small class cannot
    give is spread over the others in the same way. The sum is ``min(asked, sum(available))``.
    """
    quota = [0] * len(available)
    open_ = [i for i, a in enumerate(available) if a > 0]
    left = asked
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            quota[i] += min(share + (j < extra), available[i] - quota[i])
        left = asked - sum(quota)
        open_ = [i for i in open_ if quota[i] < available[i]]
    return quota
