"""Out-of-fold target statistics (nextdest.stats) and the fold rule they follow (nextdest.folds).

The feature table comes from the real builder over random trips, with reversed copies, so the
leak tests cover what the models actually see.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from nextdest.config import FeaturesConfig
from nextdest.features import build_features
from nextdest.folds import all_valid_mask, assign_folds, target_mask, valid_mask
from nextdest.folds import test_mask as concealed_mask  # (not named test_*: pytest would collect it)
from nextdest.schema import RESERVATIONS, conform
from nextdest.stats import popularity, row_popularity, targets, transitions

N_FOLDS = 5


def random_trips(n_trips: int, seed: int, concealed: bool, prefix: str) -> pl.DataFrame:
    """Trips of 2-6 stays over 12 cities in 3 countries; with ``concealed`` the last row of each
    trip is hidden as in test_set.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    line = 2
    for t in range(n_trips):
        n = int(rng.integers(2, 7))
        day = dt.date(2016, 1, 1) + dt.timedelta(days=int(rng.integers(0, 300)))
        for i in range(n):
            city = int(rng.integers(1, 13)) * 10
            nights = int(rng.integers(1, 4))
            hidden = concealed and i == n - 1
            rows.append({
                "user_id": 1000 + t, "checkin": day, "checkout": day + dt.timedelta(days=nights),
                "city_id": 0 if hidden else city, "device_class": "mobile" if t % 3 else "desktop",
                "affiliate_id": int(rng.integers(1, 4)), "booker_country": "X" if t % 2 else "Y",
                "hotel_country": None if hidden else f"C{city // 40}", "utrip_id": f"{prefix}{t:03d}", "row": line,
            })
            day += dt.timedelta(days=nights)
            line += 1
    return conform(pl.DataFrame(rows, schema_overrides={"hotel_country": pl.Utf8}), RESERVATIONS, prefix)


@pytest.fixture(scope="module")
def table():
    train = random_trips(80, 1, False, "a")
    test = random_trips(20, 2, True, "b")
    folds = assign_folds(train["utrip_id"], test["utrip_id"], N_FOLDS, seed=7)
    cfg = FeaturesConfig(engine="cpu", n_lags=5, rare_city_min_count=1, rare_affiliate_min_count=1, reverse_augment=True)
    feats, _, _ = build_features(train, test, folds, cfg)
    return feats, folds


# ----------------------------------------------------------------------------- folds
def test_assign_folds_covers_each_trip_once_balanced_and_deterministic():
    train = pl.Series([f"a{i}" for i in range(23)] * 2)  # repeated ids (one per row) are fine
    test = pl.Series([f"b{i}" for i in range(7)])
    f = assign_folds(train, test, N_FOLDS, seed=3)
    assert f.height == 30 and f["utrip_id"].is_unique().all()
    assert f["utrip_id"].to_list() == sorted(f["utrip_id"].to_list())
    for is_test, n in ((False, 23), (True, 7)):
        sizes = f.filter(pl.col("is_test") == is_test).group_by("fold").len()["len"]
        assert sizes.sum() == n and sizes.max() - sizes.min() <= 1
    assert f.equals(assign_folds(train.reverse(), test.reverse(), N_FOLDS, seed=3))  # input order irrelevant
    assert not f.equals(assign_folds(train, test, N_FOLDS, seed=4))


def test_masks_select_the_rule_rows(table):
    feats, _ = table
    for k in range(N_FOLDS):
        val = feats.filter(valid_mask(k))
        # one validation row per train trip of fold k: its last row
        trips = feats.filter(~pl.col("is_test") & ~pl.col("is_reversed") & (pl.col("fold") == k))["utrip_id"].n_unique()
        assert val.height == trips
        assert val["is_last"].all() and not val["is_test"].any() and not val["is_reversed"].any()
        tgt = feats.filter(target_mask(k))
        assert (tgt["pos"] >= 1).all() and not tgt["is_concealed"].any()
        assert tgt.join(val, on=["utrip_id", "pos"], how="semi").height == 0
        assert tgt.filter(pl.col("is_reversed") & (pl.col("fold") == k)).height == 0
        # known prefixes of test trips do train every fold
        assert tgt.filter(pl.col("is_test") & ~pl.col("is_reversed")).height > 0
    # all_valid_mask is the union of the folds' validation rows
    assert feats.filter(all_valid_mask()).height == sum(feats.filter(valid_mask(k)).height for k in range(N_FOLDS))
    assert feats.filter(concealed_mask())["utrip_id"].n_unique() == 20
    assert feats.filter(target_mask(None)).height == feats.filter((pl.col("pos") >= 1) & ~pl.col("is_concealed")).height


# ----------------------------------------------------------------------------- statistics
def _without_fold_targets(feats: pl.DataFrame, k: int) -> pl.DataFrame:
    """The table with everything fold k may not learn from removed: its validation rows and every
    reversed copy of its trips (which carry the held-out last city as an input)."""
    return feats.filter(~valid_mask(k) & ~(pl.col("is_reversed") & (pl.col("fold") == k)))


def _scrambled(feats: pl.DataFrame, k: int) -> pl.DataFrame:
    """The table with fold k's held-out targets replaced by a city that exists nowhere else."""
    return feats.with_columns(
        pl.when(valid_mask(k)).then(pl.lit(99_999)).otherwise(pl.col("city_idx")).cast(pl.Int32).alias("city_idx")
    )


STATS = {
    "transitions1": lambda f, k: transitions(f, k, order=1),
    "transitions2": lambda f, k: transitions(f, k, order=2),
    "popularity": lambda f, k: popularity(f, k),
    "popularity_by_booker": lambda f, k: popularity(f, k, by="booker_idx"),
    "row_popularity": lambda f, k: row_popularity(f, k),
}


@pytest.mark.parametrize("name", list(STATS))
def test_held_out_fold_never_sees_its_targets(table, name):
    feats, _ = table
    stat = STATS[name]
    for k in range(N_FOLDS):
        got = stat(feats, k)
        assert got.equals(stat(_without_fold_targets(feats, k), k)), f"{name}: fold {k} depends on its own targets"
        assert got.equals(stat(_scrambled(feats, k), k)), f"{name}: fold {k} reads its held-out cities"
        assert not (got["next" if "next" in got.columns else "city_idx"] == 99_999).any()


def test_transitions_count_the_allowed_pairs_exactly(table):
    feats, _ = table
    for k in (0, 3, None):
        allowed = feats.filter(target_mask(k) & ~pl.col("is_reversed") & (pl.col("city_lag1") > 0))
        expect = allowed.group_by(pl.col("city_lag1").alias("prev1"), pl.col("city_idx").alias("next")).len()
        got = transitions(feats, k, order=1)
        joined = got.join(expect, on=["prev1", "next"], how="full", coalesce=True)
        assert joined.height == got.height == expect.height
        assert (joined["count"] == joined["len"]).all()
        # sorted by previous city, then most frequent next city first
        assert got.equals(got.sort(["prev1", "count", "next"], descending=[False, True, False]))


def test_a_validation_transition_only_feeds_the_other_folds(table):
    feats, _ = table
    val = feats.filter(valid_mask(0) & (pl.col("city_lag1") > 0)).row(0, named=True)
    pair = (val["city_lag1"], val["city_idx"])
    # how often the pair occurs as a target outside fold 0's validation rows
    others = feats.filter(target_mask(0) & ~pl.col("is_reversed") & (pl.col("city_lag1") == pair[0]) & (pl.col("city_idx") == pair[1])).height

    def count(fold):
        t = transitions(feats, fold).filter((pl.col("prev1") == pair[0]) & (pl.col("next") == pair[1]))
        return t["count"].sum()

    assert count(0) == others
    assert count(None) >= others + 1  # the test predictions may use every known target
    assert count(val["fold"] + 1) >= 1


def test_targets_exclude_reversed_and_concealed_rows(table):
    feats, _ = table
    for k in (None, 1):
        t = targets(feats, k).collect()
        assert not t["is_reversed"].any() and not t["is_concealed"].any() and (t["pos"] >= 1).all()


def test_row_popularity_counts_train_and_known_test_rows(table):
    feats, _ = table
    full = row_popularity(feats, None)
    known = feats.filter(~pl.col("is_reversed") & ~pl.col("is_concealed"))
    assert full["count"].sum() == known.height
    k = 2
    assert row_popularity(feats, k)["count"].sum() == known.height - feats.filter(valid_mask(k)).height
