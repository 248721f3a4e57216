"""Fake neural-model outputs for tests and dry runs: top-k tables in the TOPK format written as
finished model stages, so the candidates, ranker and blend stages can run without training.

A fake model copies the ``prev_city`` baseline's list and, with probability ``hit_rate``, moves the
trip's true city to a random rank in 1..``max_rank`` (a model with some real signal); scores
decrease with rank (log-probability-like, negative).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from nextdest.artifacts import read_topk
from nextdest.registry import components
from nextdest.topk import rerank


def fake_topk(base: pl.DataFrame, truth: pl.DataFrame, model: str, hit_rate: float, max_rank: int, seed: int, k: int = 50) -> pl.DataFrame:
    """``base`` (a top-k table) with the true city (``truth``: utrip_id, city_id) promoted to a
    random rank for a random ``hit_rate`` share of trips."""
    rng = np.random.default_rng(seed)
    trips = base.select("utrip_id").unique().sort("utrip_id")
    pick = trips.with_columns(
        pl.Series("hit", rng.random(trips.height) < hit_rate),
        pl.Series("at", rng.integers(1, max_rank + 1, trips.height)),
    ).join(truth.select("utrip_id", pl.col("city_id").alias("true_city")), on="utrip_id", how="inner")
    df = base.join(pick, on="utrip_id", how="left").with_columns(pl.col("hit").fill_null(False))
    df = df.filter(~(pl.col("hit") & (pl.col("city_id") == pl.col("true_city"))))
    # Existing ranks shift down behind the inserted city; the true city takes rank ``at``.
    df = df.with_columns(
        pl.when(pl.col("hit") & (pl.col("rank") >= pl.col("at"))).then(pl.col("rank") + 1).otherwise(pl.col("rank")).alias("rank")
    )
    ins = pick.filter(pl.col("hit")).select("utrip_id", pl.col("true_city").alias("city_id"), pl.col("at").alias("rank"))
    out = pl.concat([df.select("utrip_id", "city_id", pl.col("rank").cast(pl.Int64)), ins.with_columns(pl.col("rank").cast(pl.Int64))])
    out = out.with_columns((-pl.col("rank").cast(pl.Float64).log()).alias("score"))
    return rerank(out, model, k)


def write_fake_stage(exp_dir: Path, stage: str, hit_rate: float, max_rank: int, seed: int) -> None:
    """Write ``exp_dir/stage`` as a finished model stage whose one model (named ``stage``) is a
    fake built from the baselines' ``prev_city`` tables and the CV / test truth."""
    from nextdest.folds import all_valid_mask

    feat = pl.read_parquet(exp_dir / "features" / "features.parquet")
    cv_truth = feat.filter(all_valid_mask()).select("utrip_id", "city_id")
    truth_path = exp_dir / "data" / "truth.parquet"
    test_truth = pl.read_parquet(truth_path).select("utrip_id", "city_id") if truth_path.exists() else cv_truth.clear()
    out = exp_dir / stage
    out.mkdir(parents=True, exist_ok=True)
    for split, truth in (("oof", cv_truth), ("test", test_truth)):
        base = read_topk(exp_dir / "baselines", split).filter(pl.col("model") == "prev_city")
        fake_topk(base, truth, stage, hit_rate, max_rank, seed).write_parquet(out / f"{split}_topk.parquet")
    (out / "metrics.json").write_text(json.dumps({"models": {stage: {"cv_acc4": None, "test_acc4": None, "seconds": 0.0}}}))
    (out / "manifest.json").write_text(json.dumps({"stage": stage, "outputs": {}, "outputs_digest": f"fake:{stage}:{hit_rate}:{max_rank}:{seed}"}))


def fake_experiment(exp_dir: Path, root: Path) -> Path:
    """Copy the finished experiment ``exp_dir`` (data, folds, features, baselines) under ``root``
    (an artifacts root) and add a fake stage for every enabled model, of decreasing strength.
    Returns the copy's folder; point ``NEXTDEST_ARTIFACTS`` at ``root`` to run stages on it."""
    import shutil

    dst = Path(root) / Path(exp_dir).name
    shutil.copytree(exp_dir, dst)
    for i, c in enumerate(enabled_models()):
        write_fake_stage(dst, c.name, hit_rate=max(0.5 - 0.1 * i, 0.1), max_rank=8, seed=i)
    return dst


def enabled_models():
    """The registered models the tiny config runs."""
    from tiny import tiny_config

    cfg = tiny_config()
    return [c for c in components("model") if cfg.section(c.section).enabled]
