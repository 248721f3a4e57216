"""Ranker fold loop and stages (XGBoost, LightGBM) on the tiny experiment with fake neural models."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

from nextdest.folds import trip_groups
from nextdest.rankers.base import cross_fit, load_candidates, make_ranker, query_sizes
from nextdest.rankers.candidates import feature_columns
from fakes import fake_experiment
from nextdest.stages import run_stage, stage_function
from nextdest.artifacts import read_topk


@pytest.fixture(scope="module")
def ranker_exp(tiny_upstream, tmp_path_factory):
    cfg, exp = tiny_upstream
    root = tmp_path_factory.mktemp("ranker_artifacts")
    dst = fake_experiment(exp, root)
    old = os.environ.get("NEXTDEST_ARTIFACTS")
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        for stage in ("candidates", "xgb_ranker", "lgb_ranker"):
            run_stage(stage, cfg, stage_function(stage))
        yield cfg, dst
    finally:
        os.environ.pop("NEXTDEST_ARTIFACTS") if old is None else os.environ.__setitem__("NEXTDEST_ARTIFACTS", old)


def test_trip_groups_balanced_deterministic():
    trips = pl.Series([f"{i}_1" for i in range(103)])
    a = trip_groups(trips, 5, seed=7)
    b = trip_groups(trips.reverse(), 5, seed=7)
    assert a.equals(b)
    sizes = a.group_by("group").len()["len"]
    assert sizes.max() - sizes.min() <= 1 and a["utrip_id"].n_unique() == 103


def test_query_sizes_rejects_split_trips():
    assert query_sizes(np.array(["a", "a", "b", "c", "c", "c"])).tolist() == [2, 1, 3]
    with pytest.raises(ValueError):
        query_sizes(np.array(["a", "b", "a"]))


def test_fold_loop_scores_every_row_once(ranker_exp):
    cfg, exp = ranker_exp
    oof, test = load_candidates(exp / "candidates", cfg.rankers.max_candidates)
    feats = feature_columns(oof)
    res = cross_fit(lambda: make_ranker("lgb_ranker", cfg, "cpu"), oof, test, feats, 3, cfg.seed, log=lambda m: None)
    assert res.oof.height == oof.height and res.oof["score"].is_finite().all()
    assert res.oof.select("utrip_id", "city_id").n_unique() == oof.height
    # Each trip sits in exactly one group, and its rows are contiguous.
    assert (res.oof.group_by("utrip_id").agg(pl.col("group").n_unique())["group"] == 1).all()
    query_sizes(res.oof["utrip_id"])
    assert res.test.height == test.height and len(res.best_iterations) == 3


@pytest.mark.parametrize("stage", ["xgb_ranker", "lgb_ranker"])
def test_ranker_stage_outputs(ranker_exp, stage):
    cfg, exp = ranker_exp
    out = exp / stage
    oof = read_topk(out, "oof")
    cands = pl.read_parquet(exp / "candidates" / "oof_candidates.parquet")
    # OOF top-k for every OOF trip, ranks 1..n without gaps or repeats.
    assert set(oof["utrip_id"].unique()) == set(cands["utrip_id"].unique())
    r = oof.group_by("utrip_id").agg(pl.col("rank").max().alias("hi"), pl.len(), pl.col("rank").n_unique().alias("u"))
    assert (r["hi"] == r["len"]).all() and (r["u"] == r["len"]).all()
    assert (out / "importance.png").stat().st_size > 0
    imp = json.loads((out / "importance.json").read_text())
    assert set(imp) == set(feature_columns(cands)) and sum(imp.values()) > 0
    m = json.loads((out / "metrics.json").read_text())["models"][stage]
    assert m["cv_acc4"] is not None and len(m["best_iterations"]) == cfg.rankers.n_folds
    test = read_topk(out, "test")
    assert test["utrip_id"].n_unique() == pl.read_parquet(exp / "candidates" / "test_candidates.parquet")["utrip_id"].n_unique()


def test_lightgbm_results_do_not_depend_on_the_thread_count(ranker_exp):
    """LightGBM runs with deterministic=True (so rankers.n_threads is not in its cache key);
    XGBoost's thread count is in its key instead."""
    from tiny import tiny_config

    cfg, exp = ranker_exp
    oof, test = load_candidates(exp / "candidates", cfg.rankers.max_candidates)
    feats = feature_columns(oof)
    scores = []
    for threads in (1, 2):
        c = tiny_config(f"rankers.n_threads={threads}")
        res = cross_fit(lambda: make_ranker("lgb_ranker", c, "cpu"), oof, test, feats, 3, c.seed, log=lambda m: None)
        scores.append((res.oof["score"].to_list(), res.test["score"].to_list()))
    assert scores[0] == scores[1]


def test_ndcg4_by_hand():
    from nextdest.rankers.base import ndcg4

    # Trip A: true city first (1.0); trip B: two rows score higher, rank 3 (1 / log2 4 = 0.5);
    # trip C: four rows score higher, rank 5 (0); trip D: no true city in its pool (not counted).
    score = np.array([0.9, 0.1, 0.5, 0.7, 0.8, 0.1, 1, 2, 3, 4, 5, 0.3, 0.2])
    y = np.zeros(len(score), dtype=np.float32)
    y[[0, 2, 6]] = 1
    total, count = ndcg4(score, y, np.array([0, 2, 6, 11]))
    assert count == 3 and total == pytest.approx(1.5)


@pytest.mark.parametrize("stage", ["xgb_ranker", "lgb_ranker"])
def test_lock_step_folds_stop_together_and_new_trees_add_up(ranker_exp, stage):
    """Every group keeps the same number of trees; scores of trees [a, b) and [b, c) add up to
    those of [a, c) up to one constant for every row (the fold loop accumulates held-out margins
    that way; a constant changes no order)."""
    from nextdest.rankers.base import candidate_tables, fit_groups

    cfg, exp = ranker_exp
    oof, test = load_candidates(exp / "candidates", cfg.rankers.max_candidates)
    tables = candidate_tables(oof, test, feature_columns(oof), 3, cfg.seed)
    res = fit_groups(lambda: make_ranker(stage, cfg, "cpu"), tables, 3, log=lambda m: None)
    assert len(set(res.best_iterations)) == 1 and 1 <= res.best_iterations[0] <= res.info["rounds"]
    assert res.info["rounds"] <= getattr(cfg.rankers, stage.split("_")[0]).n_estimators
    data = tables.oof
    model = make_ranker(stage, cfg, "cpu")
    rows = np.arange(len(data.y))[(np.bincount(data.query_index(), weights=data.y) > 0)[data.query_index()]]
    model.start(model.prepare(data, rows), data, rows)
    model.boost(12)
    X = data.X[:200]
    diff = model.predict(X, 0, 5) + model.predict(X, 5, 12) - model.predict(X, 0, 12)
    assert np.ptp(diff) < 1e-5 and np.ptp(model.predict(X, 0, 12)) > 1e-3
    model.finish(7)
    assert model.best_iteration == 7 and np.allclose(model.predict(X), model.predict(X, 0, 7), atol=1e-6)


def test_feature_matrix_gathers_rows_in_chunks_by_hand():
    """Rows picked in a given order, chunk by chunk, nulls as NaN, every value float32."""
    from nextdest.rankers.base import feature_matrix

    df = pl.DataFrame({"a": [1, 2, None, 4, 5], "b": [0.5, None, 2.5, 3.5, 4.5], "skip": ["x"] * 5})
    X = feature_matrix(df, ["b", "a"], np.array([3, 0, 2, 4, 1]), chunk_rows=2)
    nan = np.nan
    assert X.dtype == np.float32 and X.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(X, np.array([[3.5, 4], [0.5, 1], [2.5, nan], [4.5, 5], [nan, 2]], np.float32))
    np.testing.assert_array_equal(feature_matrix(df, ["a"], chunk_rows=3)[:, 0], np.array([1, 2, nan, 4, 5], np.float32))


def test_candidate_tables_order_rows_by_group_trip_and_priority():
    """The OOF rows come out grouped, each group one block of whole trips in priority order, with
    each row's features, label and keys still together; the test rows by trip and priority."""
    from nextdest.rankers.base import candidate_tables

    trips = [3, 3, 1, 1, 1, 2, 2, 5, 4, 4]  # fold parts: trips not globally sorted
    prio = [1, 2, 2, 1, 3, 1, 2, 1, 2, 1]
    oof = pl.DataFrame({"utrip_id": trips, "city_id": [10 * t + p for t, p in zip(trips, prio)], "prio": prio,
                        "label": [int(p == 1) for p in prio], "f": [float(10 * t + p) for t, p in zip(trips, prio)]})
    test = oof.filter(pl.col("utrip_id") < 3).drop("label")
    tables = candidate_tables(oof, test, ["f"], 2, seed=0)
    keys = tables.oof_keys.with_columns(pl.Series("f", tables.oof.X[:, 0]), pl.Series("y", tables.oof.y))
    assert keys["group"].to_list() == sorted(keys["group"].to_list())
    assert keys.equals(keys.sort("group", "utrip_id", "city_id"))  # city 10t+p: priority order within a trip
    assert (keys["f"] == keys["city_id"].cast(pl.Float64)).all() and (keys["y"] == (keys["city_id"] % 10 == 1)).all()
    assert tables.oof.sizes.sum() == oof.height and len(tables.oof.sizes) == 5
    assert tables.test_keys["city_id"].to_list() == [11, 12, 13, 21, 22] and tables.X_test[:, 0].tolist() == [11, 12, 13, 21, 22]


def test_xgboost_fold_matrix_streamed_in_blocks_trains_as_the_copied_rows(ranker_exp):
    """A fold's matrix binned block by block (no copy of its rows) against the shared cuts gives the
    trees that the copied rows give, and the fold matrix handed on as the next fold's reference
    bins with the same cuts as the all-rows matrix it replaces."""
    import xgboost as xgb

    from nextdest.rankers.base import candidate_tables
    from nextdest.rankers.xgb import RowBlocks

    cfg, exp = ranker_exp
    oof, test = load_candidates(exp / "candidates", cfg.rankers.max_candidates)
    data = candidate_tables(oof, test, feature_columns(oof), 3, cfg.seed).oof
    q = data.query_index()
    rows = np.flatnonzero(q % 3 != 0)  # whole queries, increasing
    model = make_ranker("xgb_ranker", cfg, "cpu")
    prepared = model.prepare(data, np.arange(len(data.y)))

    def trained(d):
        booster = xgb.Booster(model._params(), [d])
        for i in range(8):
            booster.update(d, i)
        return booster.inplace_predict(data.X, predict_type="margin")

    copied = model._dmatrix(data.take(rows), ref=prepared)
    handed = model.start(prepared, data, rows)  # default block size: one block here
    assert handed.num_row() == len(rows) and np.array_equal(handed.get_group(), data.sizes_of(rows))
    streamed = xgb.QuantileDMatrix(RowBlocks(data, rows, block=37), ref=handed, max_bin=model.params.max_bin, nthread=1)  # 37 rows a block: queries split
    streamed.set_group(data.sizes_of(rows))
    expected = trained(copied)
    assert np.array_equal(trained(handed), expected) and np.array_equal(trained(streamed), expected)


def test_spilled_matrix_reads_back_equal_and_read_only(tmp_path):
    from nextdest.rankers.base import spill

    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    X[1, 2] = np.nan
    Y = spill(X, tmp_path / "X.npy")
    assert isinstance(Y, np.memmap) and Y.dtype == np.float32 and np.array_equal(Y, X, equal_nan=True)
    with pytest.raises(ValueError):
        Y[0, 0] = 1.0
