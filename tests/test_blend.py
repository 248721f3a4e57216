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
from nextdest.rankers.fakes import fake_experiment
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
