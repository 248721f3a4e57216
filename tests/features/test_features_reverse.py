"""Reversed-trip augmentation on the hand-built trips (tests/features/conftest.py)."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from nextdest.features import build_features
from nextdest.folds import target_mask, valid_mask
from nextdest.schema import FEATURES, check


def col(feats: pl.DataFrame, trip: str, name: str) -> list:
    return feats.filter(pl.col("utrip_id") == trip)[name].to_list()


@pytest.fixture
def built(hand, hand_cfg):
    train, test, folds = hand
    return build_features(train, test, folds, dataclasses.replace(hand_cfg, reverse_augment=True))


def test_copies_are_added_and_sorted(built, hand, hand_cfg):
    feats, cities, _ = built
    check(feats, FEATURES, "features")
    # train trips: every row; test trip t3: the known prefix only (2 of 3 rows)
    assert feats.height == 10 + 4 + 3 + 2
    assert feats["utrip_id"].unique(maintain_order=True).to_list() == ["t1", "t1~r", "t2", "t2~r", "t3", "t3~r"]
    assert feats.equals(feats.sort("utrip_id", "pos"))
    assert col(feats, "t1~r", "is_reversed") == [True] * 4 and not feats.filter(pl.col("utrip_id") == "t1")["is_reversed"].any()
    # the original rows and the vocabularies are unchanged by the augmentation
    train, test, folds = hand
    plain, plain_cities, _ = build_features(train, test, folds, hand_cfg)
    assert feats.filter(~pl.col("is_reversed")).equals(plain)
    assert cities.equals(plain_cities)


def test_reversed_sequence_features(built):
    feats, _, _ = built
    t = "t1~r"  # visiting order reversed: 100 (01-07..01-10), 300, 200, 100 (01-01..01-03)
    assert col(feats, t, "city_idx") == [2, 4, 3, 2]
    assert col(feats, t, "pos") == [0, 1, 2, 3] and col(feats, t, "n_trip") == [4] * 4
    assert col(feats, t, "steps_left") == [3, 2, 1, 0]
    assert col(feats, t, "is_last") == [False, False, False, True]
    assert col(feats, t, "city_lag1") == [0, 2, 4, 3]
    assert col(feats, t, "city_lag2") == [0, 0, 2, 4]
    assert col(feats, t, "country_lag1") == [0, 2, 3, 2]
    assert col(feats, t, "first_city") == [0, 2, 2, 2]
    # per-row dates stay the row's own
    assert col(feats, t, "nights") == [3, 1, 1, 2]
    assert col(feats, t, "checkin_weekday") == [3, 2, 6, 4]
    assert col(feats, t, "weekend") == [True, False, False, True]
    # relational times on mirrored time: gap = next stay's checkin - this checkout, ...
    assert col(feats, t, "gap_days") == [0, 0, 2, 0]
    assert col(feats, t, "span_so_far") == [0, 3, 6, 7]
    assert col(feats, t, "span_total") == [9] * 4
    assert col(feats, t, "fold") == [0] * 4 and col(feats, t, "user_id") == [1] * 4


def test_test_trip_copy_skips_the_concealed_row(built):
    feats, _, _ = built
    t = "t3~r"
    assert col(feats, t, "city_idx") == [4, 2]
    assert col(feats, t, "city_lag1") == [0, 4]
    assert col(feats, t, "n_trip") == [2, 2] and col(feats, t, "is_last") == [False, True]
    assert col(feats, t, "is_test") == [True, True] and col(feats, t, "is_concealed") == [False, False]
    assert col(feats, t, "span_so_far") == [0, 2] and col(feats, t, "span_total") == [3, 3]
    assert col(feats, t, "gap_days") == [0, 0]
    assert feats["is_concealed"].sum() == 1  # only the original concealed row


def test_reversed_copies_keep_the_fold_and_never_serve_as_targets_of_their_fold(built):
    feats, _, _ = built
    for fold in (0, 1):
        rows = feats.filter(target_mask(fold))
        # no reversed row of a fold-k trip is a target for fold k
        assert rows.filter(pl.col("is_reversed") & (pl.col("fold") == fold)).height == 0
        # ... and the validation rows are the last rows of fold k's original train trips
        val = feats.filter(valid_mask(fold))
        assert val["utrip_id"].to_list() == (["t1"] if fold == 0 else ["t2"])
        assert val["is_last"].all() and not val["is_reversed"].any()
    # the reversed copy of t1 (fold 0) carries t1's held-out last city (idx 2) as an input ...
    assert col(feats, "t1~r", "city_lag1")[1] == 2
    # ... so it may be a target for fold 1 only
    t1r = feats.filter(pl.col("utrip_id") == "t1~r")
    assert t1r.filter(target_mask(0)).height == 0
    assert t1r.filter(target_mask(1)).height == 3  # positions 1..3
