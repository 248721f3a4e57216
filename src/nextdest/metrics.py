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
