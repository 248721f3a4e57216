"""Baselines, written in the common top-k format and scored like every model.

* ``popular``: the most frequent cities over the train rows (the official sample submission's
  rule), the same list for every trip.
* ``prev_city``: the most frequent next cities after the trip's previous city (the last known
  one), counted over every known transition, backfilled by target popularity.

Both are out of fold: a validation trip of fold k is answered from statistics that exclude fold
k's validation targets (:mod:`nextdest.stats`); test trips use every known row.
"""

from __future__ import annotations

import time

import polars as pl

from .artifacts import read_cities, read_features
from .folds import test_mask, valid_mask
from .stats import popularity, row_popularity, transitions
from .topk import write_outputs


def _with_city_ids(df: pl.DataFrame, cities: pl.DataFrame, model: str, k: int) -> pl.DataFrame:
    """(utrip_id, city_idx, score) -> top-k table with raw city ids."""
    from .topk import rerank

    out = df.join(cities.select("city_idx", "city_id"), on="city_idx", how="inner")
    return rerank(out, model, k)


def popular_topk(feat: pl.DataFrame, queries: pl.DataFrame, fold: int | None, k: int, cities: pl.DataFrame) -> pl.DataFrame:
    """The k most frequent train-row cities (fold's validation rows excluded), for every query trip."""
    pop = row_popularity(feat.filter(~pl.col("is_test")), fold).filter(pl.col("city_idx") >= 2).head(k)
    total = max(int(pop["count"].sum()), 1)
    pop = pop.with_columns((pl.col("count") / total).alias("score")).select("city_idx", "score")
    return _with_city_ids(queries.select("utrip_id").join(pop, how="cross"), cities, "popular", k)


def prev_city_topk(feat: pl.DataFrame, queries: pl.DataFrame, fold: int | None, k: int, cities: pl.DataFrame) -> pl.DataFrame:
    """P(next | previous city) from out-of-fold transition counts, backfilled by popularity.

    Transition candidates score count / out-degree of the previous city (in (0, 1]); backfilled
    cities score 1e-3 x their popularity share, so they always rank after every transition.
    """
    trans = transitions(feat, fold, order=1)
    trans = trans.with_columns(
        (pl.col("count") / pl.col("count").sum().over("prev1")).alias("score"),
        pl.int_range(1, pl.len() + 1).over("prev1").alias("r"),
    ).filter(pl.col("r") <= k)
    q = queries.select("utrip_id", pl.col("city_lag1").alias("prev1"))
    cand = q.join(trans, on="prev1", how="inner").select("utrip_id", pl.col("next").alias("city_idx"), "score")
    pop = popularity(feat, fold).filter(pl.col("city_idx") >= 2).head(k)
    total = max(int(pop["count"].sum()), 1)
    back = q.select("utrip_id").join(
        pop.select("city_idx", (1e-3 * pl.col("count") / total).alias("score")), how="cross"
    ).join(cand.select("utrip_id", "city_idx"), on=["utrip_id", "city_idx"], how="anti")
    return _with_city_ids(pl.concat([cand, back]), cities, "prev_city", k)


POPULAR, PREV_CITY = "popular", "prev_city"
BASELINES = {POPULAR: popular_topk, PREV_CITY: prev_city_topk}


def run_baselines_stage(ctx) -> None:
    feat_dir = ctx.input("features")
    feat = read_features(feat_dir)
    cities = read_cities(feat_dir)
    k = ctx.cfg.baselines.top_k
    results = {}
    for name, fn in BASELINES.items():
        t0 = time.perf_counter()
        oof = pl.concat([fn(feat, feat.filter(valid_mask(f)), f, k, cities) for f in ctx.cfg.cv.train_folds])
        test = fn(feat, feat.filter(test_mask()), None, k, cities)
        results[name] = (oof, test, time.perf_counter() - t0, {})
    write_outputs(ctx, results)
