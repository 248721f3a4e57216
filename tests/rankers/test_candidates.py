"""The candidates stage on the tiny experiment with fake neural models."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest

from nextdest.folds import valid_mask
from nextdest.rankers.candidates import feature_columns
from nextdest.rankers.geo import GEO_FEATURES, GLOBAL_FEATURES
from fakes import enabled_models, fake_experiment
from nextdest.stages import run_stage, stage_function
from nextdest.stats import transitions
from nextdest.artifacts import read_topk


@pytest.fixture(scope="module")
def cand_exp(tiny_upstream, tmp_path_factory):
    """(cfg, experiment folder) after the candidates stage, pool uncapped by the model lists and
    every candidate featurized (candidates.max_pool above any pool size)."""
    import dataclasses

    cfg, exp = tiny_upstream
    cfg = dataclasses.replace(cfg, candidates=dataclasses.replace(cfg.candidates, max_pool=1000))
    root = tmp_path_factory.mktemp("cand_artifacts")
    dst = fake_experiment(exp, root)
    old = os.environ.get("NEXTDEST_ARTIFACTS")
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        run_stage("candidates", cfg, stage_function("candidates"))
        yield cfg, dst
    finally:
        os.environ.pop("NEXTDEST_ARTIFACTS") if old is None else os.environ.__setitem__("NEXTDEST_ARTIFACTS", old)



def rerun_candidates(exp, cfg, root):
    """Run the candidates stage under ``cfg`` on a copy of experiment ``exp`` (its upstream stages)
    in ``root``; returns the new candidates folder."""
    import shutil

    shutil.copytree(exp, root / exp.name, ignore=shutil.ignore_patterns("candidates"))
    old = os.environ["NEXTDEST_ARTIFACTS"]
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        run_stage("candidates", cfg, stage_function("candidates"))
    finally:
        os.environ["NEXTDEST_ARTIFACTS"] = old
    return root / exp.name / "candidates"

def test_pool_holds_true_city_whenever_a_model_ranked_it(cand_exp):
    cfg, exp = cand_exp
    oof = pl.read_parquet(exp / "candidates" / "oof_candidates.parquet")
    feat = pl.read_parquet(exp / "features" / "features.parquet")
    truth = feat.filter(pl.any_horizontal([valid_mask(f) for f in cfg.cv.train_folds])).select("utrip_id", "city_id")
    k = cfg.candidates.per_model_k
    ranked = []
    for stage in ("baselines", *(c.name for c in enabled_models())):
        tk = read_topk(exp / stage, "oof").filter(pl.col("rank") <= k)
        ranked.append(tk.join(truth, on=["utrip_id", "city_id"], how="semi").select("utrip_id", "city_id"))
    ranked = pl.concat(ranked).unique()
    assert ranked.height > 0
    missing = ranked.join(oof.select("utrip_id", "city_id"), on=["utrip_id", "city_id"], how="anti")
    assert missing.height == 0
    # Labels: 1 exactly on the true city.
    lab = oof.join(truth.rename({"city_id": "true"}), on="utrip_id")
    assert (lab["label"] == (lab["city_id"] == lab["true"]).cast(pl.Int8)).all()
    assert oof.group_by("utrip_id").agg(pl.col("label").sum())["label"].max() == 1
    # Every query trip has a pool; priorities are 1..n per trip; no duplicate city.
    assert set(oof["utrip_id"].unique()) == set(truth["utrip_id"])
    per = oof.group_by("utrip_id").agg(pl.col("prio").min().alias("lo"), pl.col("prio").max().alias("hi"), pl.len(), pl.col("city_idx").n_unique().alias("u"))
    assert (per["lo"] == 1).all() and (per["hi"] == per["len"]).all() and (per["u"] == per["len"]).all()


def test_recall_and_features_written(cand_exp):
    _cfg, exp = cand_exp
    rec = json.loads((exp / "candidates" / "recall.json").read_text())
    assert 0.0 < rec["oof"]["recall_all"] <= 1.0 and rec["test"]["recall_all"] > 0.0
    assert rec["oof"]["recall@4"] <= rec["oof"]["recall@20"] <= rec["oof"]["recall_all"]
    assert {"gru", "transformer", "mlp", "prev_city", "popular"} <= set(rec["models"])
    oof = pl.read_parquet(exp / "candidates" / "oof_candidates.parquet")
    test = pl.read_parquet(exp / "candidates" / "test_candidates.parquet")
    feats = feature_columns(oof)
    assert feats == feature_columns(test)
    for col in ("m_gru_score", "m_gru_rank", "t1_share", "t2_share", "pop_month_share", "pop_market_share",
                "cand_same_country_last", "cand_is_first", "cand_visits", "ctx_n_trip", "ctx_device"):
        assert col in feats


def test_statistics_are_out_of_fold(cand_exp):
    """A validation trip of fold k sees transition counts with fold k's targets excluded."""
    cfg, exp = cand_exp
    feat = pl.read_parquet(exp / "features" / "features.parquet")
    oof = pl.read_parquet(exp / "candidates" / "oof_candidates.parquet")
    fold = cfg.cv.train_folds[0]
    q = feat.filter(valid_mask(fold)).select("utrip_id", "city_lag1")
    t = transitions(feat, fold, 1).select(pl.col("prev1").alias("city_lag1"), pl.col("next").alias("city_idx"), pl.col("count").alias("expect"))
    got = oof.filter(pl.col("fold") == fold).join(q, on="utrip_id").join(t, on=["city_lag1", "city_idx"], how="left")
    assert (got["t1_count"].fill_null(0) == got["expect"].fill_null(0)).all()
    # The true city's own last transition is never counted for its trip: with fold=None it would be.
    t_all = transitions(feat, None, 1).select(pl.col("prev1").alias("city_lag1"), pl.col("next").alias("city_idx"), pl.col("count").alias("all"))
    pos = got.filter(pl.col("label") == 1).join(t_all, on=["city_lag1", "city_idx"], how="left")
    assert (pos["t1_count"].fill_null(0) < pos["all"]).all()


def test_pool_capped_at_max_pool_and_recall_reports_the_whole_pool(cand_exp, tmp_path):
    """Features go to the first candidates.max_pool of each pool (the same rows and values as
    without the cap); recall.json still measures the uncapped pool; the key columns follow
    schema.CANDIDATES."""
    import dataclasses

    from nextdest.artifacts import check_candidates

    cfg, exp = cand_exp
    oof = check_candidates(pl.read_parquet(exp / "candidates" / "oof_candidates.parquet"), "oof")
    check_candidates(pl.read_parquet(exp / "candidates" / "test_candidates.parquet"), "test")
    rec = json.loads((exp / "candidates" / "recall.json").read_text())
    assert oof["prio"].max() <= cfg.candidates.max_pool and rec["max_pool"] == cfg.candidates.max_pool
    cap = 6
    small = dataclasses.replace(cfg, candidates=dataclasses.replace(cfg.candidates, max_pool=cap),
                                rankers=dataclasses.replace(cfg.rankers, max_candidates=cap))
    out = rerun_candidates(exp, small, tmp_path / "capped")
    capped = pl.read_parquet(out / "oof_candidates.parquet")
    rec_capped = json.loads((out / "recall.json").read_text())
    assert capped["prio"].max() == cap and capped.height < oof.height
    # The capped rows are exactly the first rows of the full table, features unchanged.
    key = ["utrip_id", "prio"]
    assert capped.sort(key).equals(oof.filter(pl.col("prio") <= cap).sort(key))
    assert rec_capped["oof"] == rec["oof"] and rec_capped["test"] == rec["test"]


def test_backoff_and_embedding_features_switch_on_and_leave_the_rest_unchanged(cand_exp, tmp_path):
    """candidates.backoff, candidates.embed_dim and candidates.geo_epochs add exactly their columns
    (finite where defined: the cosines lie in [-1, 1]) and change no other column."""
    import dataclasses

    cfg, exp = cand_exp

    def build(name: str, backoff: bool, embed_dim: int, geo_epochs: int, geo_k: int = 0) -> pl.DataFrame:
        variant = dataclasses.replace(cfg, candidates=dataclasses.replace(
            cfg.candidates, backoff=backoff, embed_dim=embed_dim, geo_epochs=geo_epochs, geo_k=geo_k))
        return pl.read_parquet(rerun_candidates(exp, variant, tmp_path / name) / "oof_candidates.parquet")

    base = build("off", backoff=False, embed_dim=0, geo_epochs=0)
    full = build("on", backoff=True, embed_dim=4, geo_epochs=2)
    added = {"bo_last", "t1_smooth", "cpop_month_lift", "cpop_market_lift", "emb_cos_lag1", "emb_cos_first", "emb_dir",
             *GEO_FEATURES, *GLOBAL_FEATURES, "t1_country_share", "entry_share", "bo_city"}
    assert set(full.columns) - set(base.columns) == added and set(base.columns) <= set(full.columns)
    key = ["utrip_id", "prio"]
    assert full.select(base.columns).sort(key).equals(base.sort(key))
    for name in ("emb_cos_lag1", "geo_cos_step", "geo_cos_home", "geo_cos_mix", "gx_cos_step", "gx_cos_trip"):
        cos = full[name].drop_nans().drop_nulls()
        assert cos.len() > 0 and cos.min() >= -1.0001 and cos.max() <= 1.0001, name
    assert full["bo_last"].min() >= 0 and full["t1_smooth"].max() <= 1.0001
    # The map as a pool source (uncapped pool): every earlier candidate stays, flagged src_geo where
    # the map proposes it, and the map adds cities no other source proposed.
    pooled = build("geo_k", backoff=False, embed_dim=0, geo_epochs=2, geo_k=3)
    assert pooled["src_geo"].sum() > 0 and "src_geo" not in base.columns
    pair = ["utrip_id", "city_id"]
    assert base.select(pair).join(pooled.select(pair), on=pair, how="anti").height == 0
    new = pooled.join(base.select(pair), on=pair, how="anti")
    assert new.height > 0 and new["src_geo"].min() == 1
