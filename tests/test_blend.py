"""The blend stage: weights from OOF only, reproducible with a fixed seed, scored like any model."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import polars as pl
import pytest

from nextdest.blend import TRANSFORMS, accuracy4, build_matrix, coordinate_ascent, combine, fitting_view, rerank
from nextdest.metrics import topk_metrics
from fakes import fake_experiment
from nextdest.stages import run_stage, stage_function


@pytest.fixture(scope="module")
def blend_exp(tiny_upstream, tmp_path_factory):
    """Fake neural stages + candidates + LightGBM ranker + blend (XGBoost off to keep it short)."""
    import dataclasses

    cfg, exp = tiny_upstream

    cfg = dataclasses.replace(cfg, rankers=dataclasses.replace(cfg.rankers, xgb=dataclasses.replace(cfg.rankers.xgb, enabled=False)))
    root = tmp_path_factory.mktemp("blend_artifacts")
    dst = fake_experiment(exp, root)
    old = os.environ.get("NEXTDEST_ARTIFACTS")
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        for stage in ("candidates", "lgb_ranker", "blend"):
            run_stage(stage, cfg, stage_function(stage))
        yield cfg, dst
    finally:
        os.environ.pop("NEXTDEST_ARTIFACTS") if old is None else os.environ.__setitem__("NEXTDEST_ARTIFACTS", old)


def test_blend_outputs_and_weights(blend_exp):
    _cfg, exp = blend_exp
    w = json.loads((exp / "blend" / "weights.json").read_text())
    assert {"popular", "prev_city", "gru", "transformer", "mlp", "lgb_ranker"} == set(w["components"])
    total = sum(v["weight"] for v in w["weights"].values())
    assert abs(total - 1.0) < 1e-9
    assert all(v["transform"] in TRANSFORMS for v in w["weights"].values() if v["weight"])
    # Starting from the best single model, the in-sample blend never loses to it.
    assert w["oof_acc4_in_sample"] >= max(w["oof_acc4_single"].values()) - 1e-12
    m = json.loads((exp / "blend" / "metrics.json").read_text())["models"]["blend"]
    assert m["cv_acc4"] == pytest.approx(w["oof_acc4_crossfit"])


def test_blend_weights_reproduce(blend_exp, tmp_path):
    """Rerunning the stage with the same seed gives the same weights.json."""
    cfg, exp = blend_exp
    first = (exp / "blend" / "weights.json").read_text()
    root = tmp_path / "again"
    shutil.copytree(exp, root / exp.name, ignore=shutil.ignore_patterns("blend"))
    old = os.environ["NEXTDEST_ARTIFACTS"]
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        run_stage("blend", cfg, stage_function("blend"), force=True)
    finally:
        os.environ["NEXTDEST_ARTIFACTS"] = old
    assert (root / exp.name / "blend" / "weights.json").read_text() == first


def _toy_tables():
    rng = np.random.default_rng(0)
    trips = [f"{i}_1" for i in range(60)]
    rows = []
    for name in ("a", "b"):
        for t in trips:
            cities = rng.choice(np.arange(2, 30), 10, replace=False)
            rows.append(pl.DataFrame({"utrip_id": [t] * 10, "city_id": cities.astype(np.int64),
                                      "score": np.sort(rng.random(10))[::-1].copy(), "model": [name] * 10}))
    tab = pl.concat(rows)
    tables = {n: rerank(tab.filter(pl.col("model") == n), n, 10) for n in ("a", "b")}
    truth = pl.DataFrame({"utrip_id": trips, "city_id": rng.integers(2, 30, len(trips)).astype(np.int64)})
    return tables, truth


def test_accuracy4_matches_topk_metrics():
    tables, truth = _toy_tables()
    mx = build_matrix(tables, {"a": True, "b": True}, truth)
    w, c = np.array([0.6, 0.4]), np.array([0, 2])
    s = combine(mx, w, c)
    top = rerank(mx.keys.with_columns(pl.Series("score", s)).filter(pl.col("score") > 0), "x", 10)
    assert accuracy4(mx, s) == pytest.approx(topk_metrics(top, truth)["acc4"])
    view = fitting_view(mx)
    assert accuracy4(view, combine(view, w, c)) == pytest.approx(accuracy4(mx, s))
    w1, c1, _ = coordinate_ascent(mx, 2, seed=3)
    w2, c2, _ = coordinate_ascent(mx, 2, seed=3)
    assert np.array_equal(w1, w2) and np.array_equal(c1, c2)


def _sequential_coordinate_ascent(mx, n_rounds, seed):
    """The search one move at a time (the batched coordinate_ascent must pick the same moves)."""
    from nextdest.blend import WEIGHT_GRID

    M = mx.X.shape[1]
    singles = [accuracy4(mx, mx.X[:, m, 0].astype(np.float64)) for m in range(M)]
    weights, choice = np.zeros(M), np.zeros(M, dtype=np.int64)
    weights[int(np.argmax(singles))] = 1.0
    best = accuracy4(mx, combine(mx, weights, choice))
    rng = np.random.default_rng(seed)
    for _r in range(n_rounds):
        improved = False
        for m in rng.permutation(M):
            base = combine(mx, np.where(np.arange(M) == m, 0.0, weights), choice)
            start_w = weights[m]
            for t in range(len(TRANSFORMS)):
                for w in WEIGHT_GRID:
                    if w == weights[m] and (t == choice[m] or w == 0.0):
                        continue
                    if w == 0.0 and (start_w == 0.0 or (np.count_nonzero(weights) == 1 and weights[m] != 0.0)):
                        continue
                    acc = accuracy4(mx, base + w * mx.X[:, m, t].astype(np.float64))
                    if acc > best + 1e-12:
                        best, weights[m], choice[m], improved = acc, w, (t if w else choice[m]), True
        if not improved:
            break
    return weights, choice, best


def _toy_three():
    rng = np.random.default_rng(5)
    trips = [f"{i}_1" for i in range(150)]
    tables = {}
    for name in ("a", "b", "c"):
        rows = []
        for t in trips:
            cities = rng.choice(np.arange(2, 40), 12, replace=False)
            rows.append(pl.DataFrame({"utrip_id": [t] * 12, "city_id": cities.astype(np.int64),
                                      "score": np.sort(rng.random(12))[::-1].copy(), "model": [name] * 12}))
        tables[name] = rerank(pl.concat(rows), name, 12)
    truth = pl.DataFrame({"utrip_id": trips, "city_id": rng.integers(2, 40, len(trips)).astype(np.int64)})
    return build_matrix(tables, {n: True for n in tables}, truth)


def test_accuracy4_many_matches_one_at_a_time_in_any_chunking():
    from nextdest.blend import accuracy4_many

    mx = _toy_three()
    rng = np.random.default_rng(1)
    S = rng.random((len(mx.trip), 5))
    S[:, 4] = np.round(S[:, 4], 1)  # many ties: broken by city id
    one = [accuracy4(mx, S[:, j]) for j in range(5)]
    assert accuracy4_many(mx, S).tolist() == pytest.approx(one)
    assert accuracy4_many(mx, S, chunk_cells=7).tolist() == pytest.approx(one)  # a few trips per chunk
    # By hand: a trip hits when fewer than 4 rows score above its true city.
    t = mx.tpos >= 0
    hand = 0
    for trip in np.unique(mx.trip):
        rows = np.flatnonzero(mx.trip == trip)
        tr = rows[mx.tpos[rows] == rows]
        if len(tr):
            s, c = S[rows, 0], mx.city[rows]
            hand += int(((s > S[tr[0], 0]) | ((s == S[tr[0], 0]) & (c < mx.city[tr[0]]))).sum() < 4)
    assert t.any() and one[0] == pytest.approx(hand / mx.n_trips)


def test_batched_coordinate_ascent_picks_the_sequential_moves():
    mx = fitting_view(_toy_three())
    w, c, trace = coordinate_ascent(mx, 3, seed=2)
    w_ref, c_ref, best_ref = _sequential_coordinate_ascent(mx, 3, seed=2)
    assert np.array_equal(w, w_ref) and np.array_equal(c[w != 0], c_ref[w_ref != 0])
    assert trace[-1]["acc4"] == pytest.approx(best_ref)


def test_fit_weights_caps_the_trips_it_fits_on():
    from nextdest.blend import fit_weights

    mx = _toy_three()
    w_all, _, trace_all = fit_weights(mx, "coordinate", 2, seed=0)
    w_cap, _, trace_cap = fit_weights(mx, "coordinate", 2, seed=0, max_trips=60)
    w_again, _, _ = fit_weights(mx, "coordinate", 2, seed=0, max_trips=60)
    assert np.array_equal(w_cap, w_again)  # the sample is seeded
    assert fit_weights(mx, "coordinate", 2, seed=0, max_trips=1000)[0].tolist() == w_all.tolist()  # cap above the size: all
    assert w_cap.any() and trace_cap[0]["acc4"] != trace_all[0]["acc4"]  # fitted on another (smaller) set of trips
