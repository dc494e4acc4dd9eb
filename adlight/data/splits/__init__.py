"""Every split policy of adlight: records (path, label, class, group, mask) into train/val/test.

One seeding rule (:func:`seeded_rng`) serves every policy:

- ``fractions``: hold-out fractions per class (digits), and MVTec's test-derived validation
  (the held-out images split into val and test; folders hold normals out first);
- ``class_draws``: splits made by class from a labelled source: one-vs-rest (Minhas & Zelek) and
  one-class with fixed test counts and repeated trials (Andrews et al.);
- ``table_shares``: per-class shares of a table's rows, optionally group-disjoint (test groups).

``abnormal_train_fraction`` (anomalies moved into train for supervised families) is
:func:`pick_abnormal` in all of them.
"""

from adlight.data.splits.core import (
    check_abnormal_train_fraction,
    even_quota,
    pick_abnormal,
    seeded_rng,
    stratified_split,
)

__all__ = [
    "check_abnormal_train_fraction",
    "even_quota",
    "pick_abnormal",
    "seeded_rng",
    "stratified_split",
]
