"""Evaluation metrics.

accuracy@4 is the official metric, defined as in the challenge's evaluation notebook: for each
trip in the ground truth, 1 if the true city is among the four suggested cities, else 0; the mean
over all ground-truth trips (a trip without a prediction counts as a miss). accuracy@1,
accuracy@10 and MRR@10 are computed on top-k tables (rank 1 = best).
"""

from __future__ import annotations

import math

import polars as pl

from .schema import SUBMISSION_COLUMNS


def accuracy_at_4_submission(submission: pl.DataFrame, truth: pl.DataFrame) -> float:
    """The official accuracy@4 of a submission table (utrip_id, city_id_1..city_id_4)."""
    sub = submission.select(SUBMISSION_COLUMNS)
    merged = truth.select("utrip_id", "city_id").join(sub, on="utrip_id", how="left")
    hits = pl.any_horizontal([pl.col(c) == pl.col("city_id") for c in SUBMISSION_COLUMNS[1:]]).fill_null(False)
    return float(merged.select(hits.cast(pl.Float64).mean()).item())


def headroom(acc: float | None, base: float | None, ceiling: float | None) -> float | None:
    """Share of the gap between a baseline (the previous-city one) and the ceiling that ``acc``
    closes: ``(acc - base) / (ceiling - base)``; None when a figure is missing or the gap is empty."""
    if acc is None or base is None or ceiling is None or ceiling <= base:
        return None
    return (acc - base) / (ceiling - base)


def topk_metrics(topk: pl.DataFrame, truth: pl.DataFrame, ks: tuple[int, ...] = (1, 4, 10)) -> dict[str, float]:
    """accuracy@k for each k and MRR@10 of a top-k table (utrip_id, city_id, rank) against truth
    (utrip_id, city_id). The denominator is the number of truth trips."""
    n = truth.height
    if n == 0:
        return {**{f"acc{k}": float("nan") for k in ks}, "mrr10": float("nan"), "n": 0}
    hit = topk.select("utrip_id", "city_id", "rank").join(
        truth.select("utrip_id", "city_id"), on=["utrip_id", "city_id"], how="inner"
    )
    best = hit.group_by("utrip_id").agg(pl.col("rank").min())
    ranks = best["rank"]
    out = {f"acc{k}": float((ranks <= k).sum()) / n for k in ks}
    # math.fsum: exactly rounded, so independent of row order and chunking (a polars float sum is not).
    out["mrr10"] = math.fsum(1.0 / r for r in ranks.filter(ranks <= 10).to_list()) / n
    out["n"] = n
    return out


# --------------------------------------------------------------------------- accuracy by city frequency
def city_frequency(train_cities: pl.Series) -> pl.DataFrame:
    """(city_id, freq): a city's frequency is the number of its rows in train, every train row
    counted (the last row of each train trip included, so the true city of a CV trip counts its own
    row). Cities absent from train have no row here (frequency 0)."""
    return train_cities.to_frame("city_id").group_by("city_id").agg(pl.len().cast(pl.Int64).alias("freq"))


def bucket_labels(edges: tuple[int, ...] | list[int]) -> list[str]:
    """The bucket names of upper ``edges`` (increasing): [5, 20] -> ``<=5``, ``6-20``, ``>20``."""
    labels = [f"<={edges[0]}"]
    for lo, hi in zip(edges, edges[1:]):
        labels.append(f"{lo + 1}-{hi}" if hi > lo + 1 else f"{hi}")
    return [*labels, f">{edges[-1]}"]


def frequency_bucket(edges: tuple[int, ...] | list[int], freq: str = "freq") -> pl.Expr:
    """The bucket label of column ``freq`` (a missing frequency counts as 0)."""
    labels = bucket_labels(edges)
    f = pl.col(freq).fill_null(0)
    expr = pl.lit(labels[-1])
    for edge, label in reversed(list(zip(edges, labels))):
        expr = pl.when(f <= edge).then(pl.lit(label)).otherwise(expr)
    return expr.alias("bucket")


def trips_by_bucket(truth: pl.DataFrame, freq: pl.DataFrame, edges: tuple[int, ...] | list[int]) -> dict[str, int]:
    """The number of ``truth`` trips in every bucket of ``edges`` (see :func:`accuracy4_by_bucket`)."""
    return {label: v["n"] for label, v in accuracy4_by_bucket(None, truth, freq, edges).items()}


def accuracy4_by_bucket(topk: pl.DataFrame | None, truth: pl.DataFrame, freq: pl.DataFrame,
                        edges: tuple[int, ...] | list[int]) -> dict[str, dict]:
    """accuracy@4 of a top-k table (utrip_id, city_id, rank) on the ``truth`` trips (utrip_id,
    city_id), per bucket of the true city's frequency (``freq``: city_id, freq; see
    :func:`city_frequency`): ``{label: {"acc4": share of the bucket's trips whose true city is in the
    top 4 (None for an empty bucket), "n": trips}}`` for every bucket of ``edges``, in order. A trip
    without a prediction counts as a miss, as in :func:`topk_metrics` (``topk`` None: no prediction)."""
    per_trip = truth.select("utrip_id", "city_id").join(freq, on="city_id", how="left").with_columns(frequency_bucket(edges))
    if topk is None:
        per_trip = per_trip.with_columns(pl.lit(False).alias("hit"))
    else:
        hits = topk.filter(pl.col("rank") <= 4).select("utrip_id", "city_id").unique().with_columns(pl.lit(True).alias("hit"))
        per_trip = per_trip.join(hits, on=["utrip_id", "city_id"], how="left").with_columns(pl.col("hit").fill_null(False))
    counts = {r["bucket"]: r for r in per_trip.group_by("bucket").agg(pl.len().alias("n"), pl.col("hit").sum().alias("hits")).to_dicts()}
    out = {}
    for label in bucket_labels(edges):
        n = int(counts[label]["n"]) if label in counts else 0
        out[label] = {"acc4": int(counts[label]["hits"]) / n if n else None, "n": n}
    return out
