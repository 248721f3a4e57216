"""The common model-output format: one row per (trip, suggested city) with score, rank and model
name, for out-of-fold validation trips (``oof_topk.parquet``) and test trips (``test_topk.parquet``).
Rankers and the blend take any model's tables."""

from __future__ import annotations

import numpy as np
import polars as pl

from .schema import TOPK, conform


def from_scores(utrip_ids, city_ids: np.ndarray, scores: np.ndarray, model: str) -> pl.DataFrame:
    """Build a top-k table from per-trip arrays: ``city_ids`` and ``scores`` are (n_trips, k),
    sorted best first within each row. Cities <= 0 (padding) are dropped."""
    n, k = city_ids.shape
    df = pl.DataFrame(
        {
            "utrip_id": np.repeat(np.asarray(utrip_ids, dtype=object), k).astype(str),
            "city_id": city_ids.reshape(-1).astype(np.int64),
            "score": scores.reshape(-1).astype(np.float64),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            "model": model,
        }
    )
    return conform(df.filter(pl.col("city_id") > 0), TOPK, f"top-k of {model}")


def rerank(df: pl.DataFrame, model: str, k: int) -> pl.DataFrame:
    """From (utrip_id, city_id, score) keep the best ``k`` per trip, rank them 1..k (ties broken by
    city id for determinism) and stamp the model name."""
    out = (
        df.select("utrip_id", "city_id", "score")
        .sort(["utrip_id", "score", "city_id"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("utrip_id").alias("rank"))
        .filter(pl.col("rank") <= k)
        .with_columns(pl.lit(model).alias("model"))
    )
    return conform(out, TOPK, f"top-k of {model}")


def validation_truth(features: pl.DataFrame | pl.LazyFrame, folds: tuple[int, ...] | None = None) -> pl.DataFrame:
    """The CV targets: (utrip_id, city_id, fold) of the last row of every train trip, optionally
    only for ``folds``."""
    from .folds import all_valid_mask

    lf = features.lazy().filter(all_valid_mask())
    if folds is not None:
        lf = lf.filter(pl.col("fold").is_in(list(folds)))
    return lf.select("utrip_id", "city_id", pl.col("fold").cast(pl.Int64)).sort("utrip_id").collect()


def evaluate(
    oof: pl.DataFrame | None,
    test: pl.DataFrame | None,
    valid_truth: pl.DataFrame,
    test_truth: pl.DataFrame | None,
) -> dict:
    """CV metrics per fold and overall (over the folds present in ``valid_truth``) and test metrics."""
    from .metrics import topk_metrics

    out: dict = {"cv_acc4": None, "cv": None, "cv_acc4_folds": {}, "test_acc4": None, "test": None}
    if oof is not None and valid_truth.height:
        out["cv"] = topk_metrics(oof, valid_truth)
        out["cv_acc4"] = out["cv"]["acc4"]
        for fold in sorted(valid_truth["fold"].unique().to_list()):
            vt = valid_truth.filter(pl.col("fold") == fold)
            out["cv_acc4_folds"][str(fold)] = topk_metrics(oof.join(vt.select("utrip_id"), on="utrip_id", how="semi"), vt)["acc4"]
    if test is not None and test_truth is not None:
        out["test"] = topk_metrics(test, test_truth)
        out["test_acc4"] = out["test"]["acc4"]
    return out


def write_outputs(ctx, results: dict[str, tuple[pl.DataFrame | None, pl.DataFrame | None, float, dict]]) -> dict:
    """Write a model stage's outputs into ``ctx.out``: ``oof_topk.parquet`` and ``test_topk.parquet``
    (all the stage's models stacked, TOPK schema) and ``metrics.json``::

        {"models": {NAME: {"cv_acc4", "cv_acc4_folds", "cv", "test_acc4", "test", "seconds",
                           "folds", ...extra}}}

    ``results`` maps model name -> (oof top-k, test top-k, seconds, extra info). CV is scored on
    the validation trips of ``cfg.cv.train_folds``; test on ``data/truth.parquet`` when it exists.
    """
    from . import artifacts

    folds = tuple(ctx.cfg.cv.train_folds)
    vt = validation_truth(artifacts.scan_features(ctx.input("features")), folds)
    tt = artifacts.read_truth(ctx.input("data"))
    tt = tt.select("utrip_id", "city_id") if tt is not None else None
    oofs, tests, metrics = [], [], {}
    for name, (oof, test, seconds, extra) in results.items():
        if oof is not None:
            oofs.append(conform(oof, TOPK, f"{name} oof"))
        if test is not None:
            tests.append(conform(test, TOPK, f"{name} test"))
        m = evaluate(oof, test, vt, tt)
        m.update({"seconds": round(float(seconds), 3), "folds": list(folds)})
        m.update(extra)
        metrics[name] = m
        cv = "n/a" if m["cv_acc4"] is None else f"{m['cv_acc4']:.4f}"
        te = "n/a" if m["test_acc4"] is None else f"{m['test_acc4']:.4f}"
        ctx.log(f"{name}: CV acc@4 {cv} (folds {list(folds)}), test acc@4 {te}, {seconds:.1f}s")
    if oofs:
        artifacts.write_topk(ctx.out, "oof", pl.concat(oofs))
    if tests:
        artifacts.write_topk(ctx.out, "test", pl.concat(tests))
    artifacts.write_metrics(ctx.out, metrics)
    return metrics
