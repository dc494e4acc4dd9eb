"""Hold-out fractions per class (digits) and MVTec's test-derived validation (MVTec, folders)."""

from __future__ import annotations

from collections.abc import Sequence

from adlight.data.datasets import Sample
from adlight.data.splits.core import pick_abnormal, stratified_split


def hold_out(
    classes: Sequence[int], labels: Sequence[int], fractions: Sequence[float],
    abnormal_train_fraction: float, seed: int,
) -> tuple[list[int], list[int], list[int]]:
    """Train/val/test positions: ``fractions`` of every class; train keeps its normals and
    ``abnormal_train_fraction`` of its anomalies (the rest of them are used nowhere)."""
    train, val, test = stratified_split(classes, fractions, seed)
    abnormal = [i for i in train if labels[i] == 1]
    chosen = pick_abnormal([classes[i] for i in abnormal], abnormal_train_fraction, seed)
    train = sorted([i for i in train if labels[i] == 0] + [abnormal[j] for j in chosen])
    return train, val, test


def hold_out_normals(
    normals: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """``(train, held out)``: a seeded ``fraction`` of ``normals`` is held out for val/test."""
    train, held = stratified_split([0] * len(normals), [1.0 - fraction, fraction], seed)
    return [normals[i] for i in train], [normals[i] for i in held]


def test_derived_validation(
    train: list[Sample], pool: list[Sample], val_fraction: float,
    abnormal_train_fraction: float, seed: int,
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Train/val/test from training normals and a test ``pool`` (MVTec's test images).

    ``abnormal_train_fraction`` of each anomaly class moves from the pool into train; the rest
    of the pool is split per class into val (``val_fraction``) and test, which never overlap.
    """
    abnormal = [i for i, s in enumerate(pool) if s.label == 1]
    chosen = pick_abnormal([pool[i].class_id for i in abnormal], abnormal_train_fraction, seed)
    moved = {abnormal[j] for j in chosen}
    train = train + [pool[i] for i in sorted(moved)]
    pool = [s for i, s in enumerate(pool) if i not in moved]
    val, test = stratified_split(
        [s.class_id for s in pool], [val_fraction, 1.0 - val_fraction], seed
    )
    return train, [pool[i] for i in val], [pool[i] for i in test]
