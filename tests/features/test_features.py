"""Feature families on the hand-built trips (tests/features/conftest.py), values computed by hand."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from nextdest.features import build_features
from nextdest.schema import CITIES, FEATURES, check


def col(feats: pl.DataFrame, trip: str, name: str) -> list:
    return feats.filter(pl.col("utrip_id") == trip)[name].to_list()


@pytest.fixture
def built(hand, hand_cfg):
    train, test, folds = hand
    return build_features(train, test, folds, hand_cfg)


def test_schema_rows_and_order(built):
    feats, cities, _ = built
    check(feats, FEATURES, "features")
    check(cities, CITIES, "cities")
    assert list(feats.columns) == list(FEATURES)
    assert feats.height == 10
    assert feats["utrip_id"].to_list() == ["t1"] * 4 + ["t2"] * 3 + ["t3"] * 3
    assert feats.equals(feats.sort("utrip_id", "pos"))


def test_position_length_and_flags(built):
    feats, _, _ = built
    assert col(feats, "t1", "pos") == [0, 1, 2, 3]
    assert col(feats, "t1", "n_trip") == [4, 4, 4, 4]
    assert col(feats, "t1", "steps_left") == [3, 2, 1, 0]
    assert col(feats, "t1", "is_last") == [False, False, False, True]
    assert col(feats, "t3", "n_trip") == [3, 3, 3]  # the concealed row counts
    assert col(feats, "t3", "steps_left") == [2, 1, 0]
    assert col(feats, "t3", "is_last") == [False, False, True]
    assert col(feats, "t3", "is_concealed") == [False, False, True]
    assert col(feats, "t3", "is_test") == [True] * 3
    assert col(feats, "t1", "is_test") == [False] * 4
    assert not feats["is_reversed"].any()
    assert col(feats, "t1", "fold") == [0] * 4 and col(feats, "t2", "fold") == [1] * 3 and col(feats, "t3", "fold") == [0] * 3
    assert col(feats, "t2", "user_id") == [2, 2, 2]


def test_city_and_country_encoding(built):
    feats, _, vocab = built
    # cities 100, 200 (3 rows each; tie -> smaller id first), 300 (2), 400 (1) -> 2, 3, 4, 5
    assert col(feats, "t1", "city_idx") == [2, 3, 4, 2]
    assert col(feats, "t2", "city_idx") == [3, 5, 3]
    assert col(feats, "t1", "country_idx") == [2, 2, 3, 2]  # A: 6 rows, B: 2, C: 1
    assert col(feats, "t2", "country_idx") == [2, 4, 2]
    # the concealed row: raw city 0, indices 0
    assert col(feats, "t3", "city_id") == [100, 300, 0]
    assert col(feats, "t3", "city_idx") == [2, 4, 0]
    assert col(feats, "t3", "country_idx") == [2, 3, 0]
    assert vocab["countries"] == [None, None, "A", "B", "C"]
    assert vocab["n_cities"] == 6 and vocab["n_countries"] == 5


def test_lags_pad_before_the_trip_start(built):
    feats, _, _ = built
    assert col(feats, "t1", "city_lag1") == [0, 2, 3, 4]
    assert col(feats, "t1", "city_lag2") == [0, 0, 2, 3]
    assert col(feats, "t1", "city_lag3") == [0, 0, 0, 2]
    assert col(feats, "t1", "city_lag4") == [0, 0, 0, 0]
    assert col(feats, "t1", "city_lag5") == [0, 0, 0, 0]
    assert col(feats, "t1", "country_lag1") == [0, 2, 2, 3]
    assert col(feats, "t1", "country_lag2") == [0, 0, 2, 2]
    # no lag leaks across trips: t2 starts with padding although t1 precedes it in the table
    assert col(feats, "t2", "city_lag1") == [0, 3, 5]
    assert col(feats, "t2", "city_lag2") == [0, 0, 3]
    # the concealed row sees the known prefix
    assert col(feats, "t3", "city_lag1") == [0, 2, 4]
    assert col(feats, "t3", "city_lag2") == [0, 0, 2]
    assert col(feats, "t3", "country_lag1") == [0, 2, 3]


def test_first_city(built):
    feats, _, _ = built
    assert col(feats, "t1", "first_city") == [0, 2, 2, 2]
    assert col(feats, "t1", "first_country") == [0, 2, 2, 2]
    assert col(feats, "t2", "first_city") == [0, 3, 3]
    assert col(feats, "t3", "first_city") == [0, 2, 2]


def test_nights_gaps_and_spans(built):
    feats, _, _ = built
    assert col(feats, "t1", "nights") == [2, 1, 1, 3]
    assert col(feats, "t1", "gap_days") == [0, 0, 2, 0]
    assert col(feats, "t1", "span_so_far") == [0, 2, 5, 6]
    assert col(feats, "t1", "span_total") == [9] * 4
    assert col(feats, "t2", "span_so_far") == [0, 1, 2]
    assert col(feats, "t2", "span_total") == [4] * 3
    # the concealed row's dates are features: they count in nights and the trip span
    assert col(feats, "t3", "nights") == [1, 2, 2]
    assert col(feats, "t3", "span_so_far") == [0, 1, 3]
    assert col(feats, "t3", "span_total") == [5] * 3


def test_calendar(built):
    feats, _, _ = built
    assert col(feats, "t1", "checkin_month") == [1] * 4
    assert col(feats, "t1", "checkin_weekday") == [4, 6, 2, 3]  # Fri, Sun, Wed, Thu
    assert col(feats, "t1", "checkout_weekday") == [6, 0, 3, 6]  # Sun, Mon, Thu, Sun
    # Fri+Sat nights; Sun night; Wed night; Thu+Fri+Sat nights
    assert col(feats, "t1", "weekend") == [True, False, False, True]
    assert col(feats, "t2", "weekend") == [True, True, False]  # Fri; Sat; Sun+Mon
    assert col(feats, "t3", "weekend") == [False, False, True]  # Mon; Tue+Wed; Thu+Fri (concealed row)
    assert col(feats, "t1", "season") == [0] * 4  # January: winter
    assert col(feats, "t2", "season") == [2] * 3  # June: summer
    assert col(feats, "t3", "season") == [0] * 3  # December: winter
    assert col(feats, "t3", "checkin_weekday") == [0, 1, 3]


@pytest.mark.parametrize(
    ("month", "season"), [(1, 0), (2, 0), (3, 1), (5, 1), (6, 2), (8, 2), (9, 3), (11, 3), (12, 0)]
)
def test_season_of_every_boundary_month(month, season):
    import datetime as dt

    from nextdest.features.build import calendar_features

    day = pl.DataFrame({"checkin": [dt.date(2017, month, 15)], "checkout": [dt.date(2017, month, 16)]})
    assert day.select(calendar_features())["season"][0] == season


def test_context_encodings_and_rare_affiliates(built):
    feats, _, vocab = built
    assert col(feats, "t1", "booker_idx") == [2] * 4 and col(feats, "t2", "booker_idx") == [3] * 3
    assert col(feats, "t1", "device_idx") == [2] * 4 and col(feats, "t2", "device_idx") == [3] * 3
    # affiliate 7 (7 rows) is frequent, affiliate 9 (3 rows < 5) is rare -> 1
    assert col(feats, "t1", "affiliate_idx") == [2] * 4
    assert col(feats, "t2", "affiliate_idx") == [1] * 3
    assert col(feats, "t3", "affiliate_idx") == [2] * 3  # the concealed row's context is known
    assert col(feats, "t3", "booker_idx") == [2] * 3
    assert vocab["affiliates"] == [None, None, 7]
    assert vocab["n_affiliates"] == 3 and vocab["n_rare_affiliates"] == 1
    assert vocab["bookers"] == [None, None, "X", "Y"] and vocab["devices"] == [None, None, "desktop", "mobile"]
    assert vocab["n_bookers"] == 4 and vocab["n_devices"] == 4


def test_cities_table_and_rare_cities(built):
    _, cities, vocab = built
    assert cities["city_idx"].to_list() == [2, 3, 4, 5]
    assert cities["city_id"].to_list() == [100, 200, 300, 400]
    assert cities["count"].to_list() == [3, 3, 2, 1]  # train rows + known test rows
    assert cities["input_idx"].to_list() == [2, 3, 1, 1]  # below rare_city_min_count = 3 -> 1
    assert cities["country_idx"].to_list() == [2, 2, 3, 4]
    assert vocab["n_rare_cities"] == 2 and vocab["rare_city_min_count"] == 3
    assert vocab["city_input_idx"] == [0, 1, 2, 3, 1, 1]


def test_city_country_is_the_most_frequent_then_the_more_common_country(hand, hand_cfg, make_reservations):
    import datetime as dt

    D = dt.date
    train, test, folds = hand
    extra = make_reservations([
        ("t1", 1, D(2016, 1, 10), D(2016, 1, 11), 500, "C", "X", "desktop", 7),  # 500 in C once
        ("t1", 1, D(2016, 1, 11), D(2016, 1, 12), 500, "B", "X", "desktop", 7),  # ... and in B once
    ])
    train = pl.concat([train, extra.with_columns(pl.col("row") + 100)])
    _, cities, _ = build_features(train, test, folds, hand_cfg)
    # tie 1-1 between B (idx 3) and C (idx 4): the overall more frequent country B wins
    assert cities.filter(pl.col("city_id") == 500)["country_idx"].item() == 3


def test_n_lags_below_five_pads_the_rest(hand, hand_cfg):
    train, test, folds = hand
    feats, _, _ = build_features(train, test, folds, dataclasses.replace(hand_cfg, n_lags=2))
    assert col(feats, "t1", "city_lag2") == [0, 0, 2, 3]
    assert col(feats, "t1", "city_lag3") == [0, 0, 0, 0]


def test_input_order_does_not_matter(hand, hand_cfg):
    train, test, folds = hand
    a, ca, va = build_features(train, test, folds, hand_cfg)
    b, cb, vb = build_features(train.reverse(), test.sample(fraction=1.0, shuffle=True, seed=3), folds.reverse(), hand_cfg)
    assert a.equals(b) and ca.equals(cb)
    va.pop("engine"), vb.pop("engine")
    assert va == vb


def test_trip_without_fold_is_an_error(hand, hand_cfg):
    train, test, folds = hand
    with pytest.raises(ValueError, match="'t2' has no fold"):
        build_features(train, test, folds.filter(pl.col("utrip_id") != "t2"), hand_cfg)
    with pytest.raises(ValueError, match="more than one fold"):
        build_features(train, test, pl.concat([folds, folds.head(1)]), hand_cfg)


def test_engine_is_recorded(built):
    _, _, vocab = built
    assert vocab["engine"]["ran"] == "cpu" and vocab["engine"]["fallbacks"] == []
