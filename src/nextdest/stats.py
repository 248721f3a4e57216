"""Target statistics computed out of fold (transition counts, popularity).

Every function takes the feature table and a fold: ``fold=k`` uses only the targets that fold k's
models may see (:func:`nextdest.folds.target_mask`), so the held-out fold never sees its own
targets; ``fold=None`` uses every known target (for test predictions). Statistics are keyed on
target indices (``city_idx``), never on the rare-bucketed input indices.
"""

from __future__ import annotations

import polars as pl

from .folds import target_mask, valid_mask


def targets(feat: pl.LazyFrame | pl.DataFrame, fold: int | None) -> pl.LazyFrame:
    """Rows usable as targets with ``fold`` held out (original direction only)."""
    return feat.lazy().filter(target_mask(fold) & ~pl.col("is_reversed"))


def transitions(feat, fold: int | None, order: int = 1) -> pl.DataFrame:
    """Counts of (previous ``order`` cities -> next city).

    Columns: ``prev1`` [, ``prev2``], ``next``, ``count`` (prev1 = the city right before).
    """
    keys = [pl.col(f"city_lag{k}").alias(f"prev{k}") for k in range(1, order + 1)]
    t = targets(feat, fold).filter(pl.all_horizontal([pl.col(f"city_lag{k}") > 0 for k in range(1, order + 1)]))
    return (
        t.select(*keys, pl.col("city_idx").alias("next"))
        .group_by([f"prev{k}" for k in range(1, order + 1)] + ["next"])
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort([f"prev{k}" for k in range(1, order + 1)] + ["count", "next"], descending=[False] * order + [True, False])
        .collect()
    )


def popularity(feat, fold: int | None, by: str | None = None) -> pl.DataFrame:
    """How often each city is a target (optionally per value of column ``by``).

    Columns: [by,] ``city_idx``, ``count``, sorted by count (descending) within ``by``.
    """
    keys = ([by] if by else []) + ["city_idx"]
    return (
        targets(feat, fold)
        .group_by(keys)
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort(([by] if by else []) + ["count", "city_idx"], descending=([False] if by else []) + [True, False])
        .collect()
    )


def known_rows(feat, fold: int | None) -> pl.LazyFrame:
    """Every row known when fold ``fold``'s trips are predicted (original direction): all but the
    concealed test cities and, for ``fold=k``, fold k's validation targets."""
    lf = feat.lazy().filter(~pl.col("is_concealed") & ~pl.col("is_reversed"))
    return lf if fold is None else lf.filter(~valid_mask(fold))


def row_popularity(feat, fold: int | None) -> pl.DataFrame:
    """City frequency over all known rows (the official 'popular' baseline counts every train row),
    out of fold: fold k's validation rows are excluded. Columns: ``city_idx``, ``count``."""
    return (
        known_rows(feat, fold).group_by("city_idx").agg(pl.len().cast(pl.Int64).alias("count"))
        .sort(["count", "city_idx"], descending=[True, False]).collect()
    )
