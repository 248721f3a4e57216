"""Ranker fold loop and stages (XGBoost, LightGBM, the neural listwise ranker) on the tiny experiment with fake
neural models."""

from __future__ import annotations

import dataclasses
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
    cfg = dataclasses.replace(cfg, rankers=dataclasses.replace(cfg.rankers, nn=dataclasses.replace(cfg.rankers.nn, enabled=True)))
    root = tmp_path_factory.mktemp("ranker_artifacts")
    dst = fake_experiment(exp, root)
    old = os.environ.get("NEXTDEST_ARTIFACTS")
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        for stage in ("candidates", "xgb_ranker", "lgb_ranker", "nn_ranker"):
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


@pytest.mark.parametrize("stage", ["xgb_ranker", "lgb_ranker", "nn_ranker"])
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


@pytest.mark.parametrize("stage", ["xgb_ranker", "lgb_ranker", "nn_ranker"])
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


def test_nn_ranker_inputs_and_slots_by_hand():
    """Signed log, standardised over the finite values, missing -> 0 plus a flag (only for features
    with missing values); trips as padded rows of slots."""
    from nextdest.rankers.nn import Inputs, slot_index

    X = np.array([[0.0, 1.0], [np.e - 1, np.nan], [-(np.e - 1), 3.0]], dtype=np.float32)
    inp = Inputs.fit(X)
    # Feature 0: signed logs 0, 1, -1 (mean 0, std sqrt(2/3)); feature 1: log 2, log 4 over two rows.
    assert inp.mean[0] == pytest.approx(0.0, abs=1e-7) and inp.std[0] == pytest.approx(np.sqrt(2 / 3))
    assert inp.mean[1] == pytest.approx(1.5 * np.log(2)) and inp.std[1] == pytest.approx(0.5 * np.log(2))
    assert inp.flagged.tolist() == [1] and inp.width == 3
    z = inp(X)
    np.testing.assert_allclose(z[:, 0], [0.0, 1 / np.sqrt(2 / 3), -1 / np.sqrt(2 / 3)], rtol=1e-5)
    np.testing.assert_allclose(z[:, 1], [-1.0, 0.0, 1.0], rtol=1e-5, atol=1e-6)
    assert z[:, 2].tolist() == [0.0, 1.0, 0.0]
    slots, mask = slot_index(np.array([2, 3, 1]), np.array([10, 11, 20, 21, 22, 30]))
    assert slots.tolist() == [[10, 11, 10], [20, 21, 22], [30, 10, 10]]
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]


def test_nn_ranker_one_hot_context_by_hand():
    """Trip-context features with few integer values also enter one-hot; others do not."""
    from nextdest.rankers.nn import Inputs

    X = np.array([[1.0, 2.0, 0.5], [3.0, 2.0, 1.5], [4.0, np.nan, 2.5], [7.0, 5.0, 3.5]], dtype=np.float32)
    names = ["ctx_market", "ctx_device", "ctx_share"]  # ctx_share is not integer-valued
    inp = Inputs.fit(X, names, one_hot_max=3)
    assert [(j, v.tolist()) for j, v in inp.one_hot] == [(1, [2.0, 5.0])]  # ctx_market has 4 values > 3
    assert inp.width == 3 + 1 + 2  # features, one missing flag (ctx_device), two one-hot columns
    assert inp(X)[:, 4:].tolist() == [[1, 0], [1, 0], [0, 0], [0, 1]]
    assert Inputs.fit(X, names, one_hot_max=0).one_hot == []


def test_nn_ranker_seeds_average_independent_networks():
    """With dropout off, n_seeds networks train independently: the 2-seed model's scores are the
    mean of the models of seeds s and s + 1."""
    from nextdest.rankers.base import RankData
    from nextdest.rankers.nn import NNRanker, NNRankerConfig

    rng = np.random.default_rng(0)
    sizes = np.full(200, 5)
    X = rng.normal(size=(1000, 4)).astype(np.float32)
    y = np.zeros(1000, dtype=np.float32)
    y[np.arange(200) * 5 + np.argmax(X[:, 0].reshape(200, 5), axis=1)] = 1  # the true city: the largest feature 0
    data = RankData(X, y, sizes, ["a", "b", "c", "d"])
    rows = np.arange(1000)

    def scores(seed: int, n_seeds: int) -> np.ndarray:
        cfg = NNRankerConfig(enabled=True, n_estimators=10, early_stopping_rounds=2, learning_rate=3e-2, weight_decay=0.0,
                             hidden=8, dropout=0.0, batch_trips=16, one_hot_max=0, n_seeds=n_seeds, context=False)
        model = NNRanker(cfg, seed, "cpu", 1)
        model.start(model.prepare(data, rows), data, rows)
        model.boost(6)
        return model.predict(X, 0, 6)

    two = scores(7, 2)
    np.testing.assert_allclose(two, (scores(7, 1) + scores(8, 1)) / 2, rtol=1e-6, atol=1e-9)
    assert np.ptp(two) > 1e-3 and not np.allclose(scores(7, 1), scores(8, 1))
    # It learned the rule: the largest feature 0 scores best in most trips.
    top = np.argmax(two.reshape(200, 5), axis=1) == np.argmax(X[:, 0].reshape(200, 5), axis=1)
    assert top.mean() > 0.8


def test_nn_ranker_context_sees_the_trip_and_only_the_trip():
    """With ``context`` a candidate is scored beside its trip's others: a rule that depends on the
    trip (the true city is the one nearest the trip's mean of feature 0) is learned far better than
    without; scores depend on the row's own trip only, and predict needs the rows per trip."""
    from nextdest.rankers.base import RankData
    from nextdest.rankers.nn import NNRanker, NNRankerConfig

    rng = np.random.default_rng(1)
    n_trips, size = 400, 5
    sizes = np.full(n_trips, size)
    X = (rng.normal(size=(n_trips * size, 3)) + rng.normal(scale=3.0, size=(n_trips, 1)).repeat(size, 0)).astype(np.float32)
    f0 = X[:, 0].reshape(n_trips, size)
    truth = np.argmin(np.abs(f0 - f0.mean(axis=1, keepdims=True)), axis=1)
    y = np.zeros(len(X), dtype=np.float32)
    y[np.arange(n_trips) * size + truth] = 1
    data = RankData(X, y, sizes, ["a", "b", "c"])
    rows = np.arange(len(X))

    def model(context: bool) -> NNRanker:
        cfg = NNRankerConfig(enabled=True, n_estimators=30, early_stopping_rounds=2, learning_rate=1e-2, weight_decay=0.0,
                             hidden=32, dropout=0.0, batch_trips=32, one_hot_max=0, n_seeds=1, context=context)
        m = NNRanker(cfg, 0, "cpu", 1)
        m.start(m.prepare(data, rows), data, rows)
        m.boost(20)
        m.finish(20)
        return m

    hits = {}
    for context in (False, True):
        m = model(context)
        s = m.predict(X, sizes=sizes)
        hits[context] = float((np.argmax(s.reshape(n_trips, size), axis=1) == truth).mean())
    assert hits[True] > hits[False] + 0.2, hits
    # The first ten trips alone get the same scores as within all of them.
    np.testing.assert_allclose(m.predict(X[:10 * size], sizes=sizes[:10]), s[:10 * size], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sizes"):
        m.predict(X)


def test_softmax_gradients_by_hand():
    """Listwise softmax cross-entropy: gradient p - y and Hessian p (1 - p), per query."""
    from nextdest.rankers.listwise import softmax_gradients

    # Query A: margins 0 and log 3 -> p = 1/4, 3/4, the second true. Query B: three equal margins, the first true.
    margin = np.array([0.0, np.log(3.0), 1.0, 1.0, 1.0])
    y = np.array([0, 1, 1, 0, 0], dtype=np.float32)
    grad, hess = softmax_gradients(margin, y, np.array([0, 2]))
    np.testing.assert_allclose(grad, [0.25, -0.25, -2 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(hess, [3 / 16, 3 / 16, 2 / 9, 2 / 9, 2 / 9])
    # A shift of one query's margins changes nothing (the softmax is per query).
    np.testing.assert_allclose(softmax_gradients(margin + np.r_[0, 0, 50, 50, 50], y, np.array([0, 2]))[0], grad)


def _choice_data(n_trips: int, size: int, seed: int):
    """Trips whose true city is drawn from softmax(2 x0) over its candidates (x1 is noise)."""
    from nextdest.rankers.base import RankData

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_trips * size, 2)).astype(np.float32)
    logit = 2.0 * X[:, 0].reshape(n_trips, size)
    p = np.exp(logit) / np.exp(logit).sum(axis=1, keepdims=True)
    truth = (rng.random((n_trips, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    y = np.zeros(len(X), dtype=np.float32)
    y[np.arange(n_trips) * size + truth] = 1
    return RankData(X, y, np.full(n_trips, size), ["x0", "x1"]), p


@pytest.mark.parametrize("stage", ["xgb_ranker", "lgb_ranker"])
def test_tree_rankers_softmax_objective_fits_the_choice_probabilities(stage):
    """objective: softmax trains on the listwise softmax gradients: the softmax of a trip's margins
    estimates its choice probabilities (a pointwise or squared-error fit would give scores in [0, 1],
    whose softmax is nearly flat), and trees of consecutive rounds add up as for any objective."""
    from tiny import tiny_config

    key = stage.split("_")[0]
    cfg = tiny_config(f"rankers.{key}.objective=softmax", f"rankers.{key}.learning_rate=0.1")
    train, _ = _choice_data(3000, 5, 0)
    held, p_true = _choice_data(1000, 5, 1)
    model = make_ranker(stage, cfg, "cpu")
    rows = np.arange(len(train.y))
    model.start(model.prepare(train, rows), train, rows)
    model.boost(60)
    z = model.predict(held.X, 0, 60).reshape(1000, 5)
    q = np.exp(z - z.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    assert np.abs(q - p_true).mean() < 0.05, np.abs(q - p_true).mean()
    diff = model.predict(held.X, 0, 20) + model.predict(held.X, 20, 60) - model.predict(held.X, 0, 60)
    assert np.ptp(diff) < 1e-5

