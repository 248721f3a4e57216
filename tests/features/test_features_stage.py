"""The features stage through the real pipeline (tiny preset), and the pandas cross-check."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from nextdest.features import build_features
from nextdest.schema import CITIES, FEATURES, FOLDS, RESERVATIONS, check

ROOT = Path(__file__).resolve().parents[2]


def _inputs(exp: Path):
    train = check(pl.read_parquet(exp / "data" / "train.parquet"), RESERVATIONS, "train")
    test = check(pl.read_parquet(exp / "data" / "test.parquet"), RESERVATIONS, "test")
    folds = check(pl.read_parquet(exp / "folds" / "folds.parquet"), FOLDS, "folds")
    return train, test, folds


def test_stage_outputs(tiny_upstream):
    cfg, exp = tiny_upstream
    out = exp / "features"
    feats = check(pl.read_parquet(out / "features.parquet"), FEATURES, "features.parquet")
    cities = check(pl.read_parquet(out / "cities.parquet"), CITIES, "cities.parquet")
    vocab = json.loads((out / "vocab.json").read_text())
    report = json.loads((out / "features_report.json").read_text())
    train, test, folds = _inputs(exp)

    assert list(feats.columns) == list(FEATURES)
    assert feats.equals(feats.sort("utrip_id", "pos"))
    assert feats.height == train.height + test.height == report["rows_out"]["total"]
    assert report["rows_in"] == {"train": train.height, "test": test.height}
    assert report["rows_out"]["train"] == train.height and report["rows_out"]["test"] == test.height
    assert report["reversed_rows_added"] == 0
    assert report["concealed_rows"] == test["utrip_id"].n_unique() == feats["is_concealed"].sum()
    assert set(report["seconds"]) >= {"read", "vocab", "features", "write", "total"}
    # every trip has its fold; the concealed row is each test trip's last
    assert feats.join(folds, on="utrip_id", how="anti").height == 0
    assert feats.filter(pl.col("is_concealed")).select((pl.col("is_last") & pl.col("is_test")).all()).item()
    assert (feats.filter(pl.col("is_concealed"))["city_idx"] == 0).all()
    # vocabularies
    assert vocab["n_cities"] == cities["city_idx"].max() + 1 == feats["city_idx"].max() + 1
    assert cities["city_idx"].to_list() == list(range(2, vocab["n_cities"]))
    assert cities["count"].is_sorted(descending=True)
    assert vocab["n_rare_cities"] == (cities["count"] < cfg.features.rare_city_min_count).sum()
    assert len(vocab["countries"]) == vocab["n_countries"] and vocab["countries"][:2] == [None, None]
    assert len(vocab["affiliates"]) == vocab["n_affiliates"]
    assert feats["affiliate_idx"].max() < vocab["n_affiliates"] and feats["booker_idx"].max() < vocab["n_bookers"]
    assert vocab["engine"]["ran"] == "cpu" and "features.engine=cpu" in vocab["engine"]["reason"]
    # the stage writes exactly what build_features returns
    f2, c2, v2 = build_features(train, test, folds, cfg.features)
    assert f2.equals(feats) and c2.equals(cities)
    v2.pop("engine"), vocab.pop("engine")
    assert v2 == vocab


def test_stage_with_reversed_trips(tiny_upstream, tmp_path, monkeypatch):
    from nextdest.features import run_features_stage
    from nextdest.stages import experiment_dir, run_stage

    cfg, exp = tiny_upstream
    cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, reverse_augment=True))
    monkeypatch.setenv("NEXTDEST_ARTIFACTS", str(tmp_path / "artifacts"))
    for dep in ("data", "folds"):
        shutil.copytree(exp / dep, experiment_dir(cfg) / dep)
    out = run_stage("features", cfg, run_features_stage)
    feats = check(pl.read_parquet(out / "features.parquet"), FEATURES, "features.parquet")
    report = json.loads((out / "features_report.json").read_text())
    train, test, _ = _inputs(exp)
    n_test_trips = test["utrip_id"].n_unique()
    assert report["rows_out"]["train_reversed"] == train.height
    assert report["rows_out"]["test_reversed"] == test.height - n_test_trips
    assert feats.height == 2 * (train.height + test.height) - n_test_trips
    assert feats.equals(feats.sort("utrip_id", "pos"))
    rev = feats.filter(pl.col("is_reversed"))
    assert rev["utrip_id"].str.ends_with("~r").all() and not rev["is_concealed"].any()
    # a reversed copy has its trip's fold
    orig = feats.filter(~pl.col("is_reversed")).select("utrip_id", "fold").unique()
    back = rev.select(pl.col("utrip_id").str.strip_suffix("~r"), "fold").unique()
    assert back.join(orig, on=["utrip_id", "fold"], how="anti").height == 0


def test_pandas_reference_matches(tiny_upstream):
    """benchmarks/features_pandas.py (the benchmark's baseline) computes the same table."""
    spec = importlib.util.spec_from_file_location("features_pandas", ROOT / "benchmarks" / "features_pandas.py")
    if spec is None or not Path(spec.origin).exists():
        pytest.skip("benchmarks/features_pandas.py not present")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    cfg, exp = tiny_upstream
    train, test, folds = _inputs(exp)
    fcfg = cfg.features
    for reverse in (False, True):
        feats, cities, _ = build_features(train, test, folds, dataclasses.replace(fcfg, reverse_augment=reverse))
        pdf, voc = ref.build_features_pandas(
            ref.to_pandas(train), ref.to_pandas(test), ref.to_pandas(folds), n_lags=fcfg.n_lags,
            rare_city_min_count=fcfg.rare_city_min_count, rare_affiliate_min_count=fcfg.rare_affiliate_min_count,
            reverse_augment=reverse,
        )
        assert_frame_equal(feats, ref.to_polars(pdf, FEATURES))
        assert_frame_equal(cities, ref.to_polars(voc["cities"], CITIES))
