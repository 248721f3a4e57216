"""Cross-validation: 5-fold GroupKFold by trip over train and test trips together, and the one
place that says which feature-table rows are training targets, validation rows and test rows.

The rule ("a held-out fold never sees its own targets"):
* validation rows of fold k: the last row of each *train* trip in fold k (its city is the target);
* training targets for fold k: every known row after a trip's first, in train trips and in the
  known prefixes of test trips, except fold k's validation rows, and except every reversed copy
  of a fold-k trip (a reversed copy carries the held-out last city as an input);
* test rows: the concealed last row of each test trip.
Target statistics (transition counts, popularity) obey the same rule through :func:`target_mask`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .schema import FOLDS, conform


def balanced_groups(n: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Group 0..n_groups-1 of each of ``n`` items (in a fixed order: sort them first), shuffled by
    ``rng`` and dealt round-robin, so group sizes differ by at most one. The one rule behind the
    CV folds, the rankers' trip groups and the blend's cross-fit groups."""
    group = np.empty(n, dtype=np.int64)
    group[rng.permutation(n)] = np.arange(n) % n_groups
    return group


def trip_groups(trips: pl.Series, n_groups: int, seed: int) -> pl.DataFrame:
    """(utrip_id, group) of every distinct trip: :func:`balanced_groups` over the sorted ids, so
    independent of the input order and deterministic by ``seed``."""
    ids = np.sort(trips.unique().to_numpy())
    group = balanced_groups(len(ids), n_groups, np.random.default_rng(seed))
    return pl.DataFrame({"utrip_id": ids, "group": group.astype(np.int32)})


def assign_folds(train_trips: pl.Series, test_trips: pl.Series, n_folds: int, seed: int) -> pl.DataFrame:
    """Balanced random GroupKFold: each trip (train or test) gets one fold, deterministic by seed.

    Train and test trips are shuffled and dealt round-robin separately, so every fold holds the
    same share of train trips (validation size) and of test trips.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for trips, is_test in ((train_trips, False), (test_trips, True)):
        ids = np.sort(trips.unique().to_numpy())  # sort first: independent of input order
        fold = balanced_groups(len(ids), n_folds, rng).astype(np.int8)
        parts.append(pl.DataFrame({"utrip_id": ids, "fold": fold, "is_test": np.full(len(ids), is_test)}))
    out = pl.concat(parts).sort("utrip_id")
    return conform(out, FOLDS, "folds")


def valid_mask(fold: int) -> pl.Expr:
    """Rows whose city is fold ``fold``'s validation target."""
    return pl.col("is_last") & ~pl.col("is_test") & ~pl.col("is_reversed") & (pl.col("fold") == fold)


def all_valid_mask() -> pl.Expr:
    """Validation rows of every fold (the last row of every train trip)."""
    return pl.col("is_last") & ~pl.col("is_test") & ~pl.col("is_reversed")


def test_mask() -> pl.Expr:
    return pl.col("is_concealed")


def target_mask(fold: int | None) -> pl.Expr:
    """Rows usable as training targets / target statistics when fold ``fold`` is held out.

    ``fold=None``: for the test predictions (every known target).
    """
    base = (pl.col("pos") >= 1) & ~pl.col("is_concealed")
    if fold is None:
        return base
    return base & ~valid_mask(fold) & ~(pl.col("is_reversed") & (pl.col("fold") == fold))


def run_folds_stage(ctx) -> None:
    from .artifacts import read_reservations, write_folds

    data = ctx.input("data")
    train = read_reservations(data, "train", columns=["utrip_id"])
    test = read_reservations(data, "test", columns=["utrip_id"])
    folds = assign_folds(train["utrip_id"], test["utrip_id"], ctx.cfg.cv.n_folds, ctx.cfg.seed)
    write_folds(ctx.out, folds)
    sizes = folds.group_by("fold", "is_test").len().sort("fold", "is_test")
    ctx.log("trips per fold (train/test): " + ", ".join(
        f"{f}: {sizes.filter((pl.col('fold') == f) & ~pl.col('is_test'))['len'].sum()}/"
        f"{sizes.filter((pl.col('fold') == f) & pl.col('is_test'))['len'].sum()}"
        for f in range(ctx.cfg.cv.n_folds)))
