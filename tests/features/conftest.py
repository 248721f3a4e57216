"""A hand-built set of three trips (two train, one test), typed as the data stage writes them.

Every expected value in the feature tests is computed by hand from this table:

trip t1 (train, fold 0, user 1, booker X, desktop, affiliate 7)
  2016-01-01 Fri -> 01-03  city 100 A
  2016-01-03 Sun -> 01-04  city 200 A
  2016-01-06 Wed -> 01-07  city 300 B     (2-day gap before)
  2016-01-07 Thu -> 01-10  city 100 A
trip t2 (train, fold 1, user 2, booker Y, mobile, affiliate 9)
  2016-06-10 Fri -> 06-11  city 200 A
  2016-06-11 Sat -> 06-12  city 400 C
  2016-06-12 Sun -> 06-14  city 200 A
trip t3 (test, fold 0, user 3, booker X, desktop, affiliate 7)
  2016-12-05 Mon -> 12-06  city 100 A
  2016-12-06 Tue -> 12-08  city 300 B
  2016-12-08 Thu -> 12-10  concealed (city 0, no country)

Known-row counts: cities 100: 3, 200: 3, 300: 2, 400: 1 -> city_idx 2, 3, 4, 5;
countries A: 6, B: 2, C: 1 -> 2, 3, 4; bookers X: 7, Y: 3; devices desktop: 7, mobile: 3;
affiliates 7: 7 rows, 9: 3 rows.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from nextdest.config import FeaturesConfig
from nextdest.schema import FOLDS, RESERVATIONS, conform

D = dt.date


def reservations(rows: list[tuple]) -> pl.DataFrame:
    """(utrip_id, user_id, checkin, checkout, city_id, hotel_country, booker, device, affiliate)
    tuples -> a RESERVATIONS table with 1-based ``row`` numbers in the given order."""
    cols = ["utrip_id", "user_id", "checkin", "checkout", "city_id", "hotel_country", "booker_country",
            "device_class", "affiliate_id"]
    df = pl.DataFrame([dict(zip(cols, r)) for r in rows], schema_overrides={"hotel_country": pl.Utf8})
    df = df.with_columns(pl.int_range(2, df.height + 2).alias("row"))
    return conform(df, RESERVATIONS, "reservations")


def folds_table(assign: dict[str, tuple[int, bool]]) -> pl.DataFrame:
    df = pl.DataFrame(
        {"utrip_id": list(assign), "fold": [f for f, _ in assign.values()], "is_test": [t for _, t in assign.values()]}
    )
    return conform(df, FOLDS, "folds")


TRAIN_ROWS = [
    ("t1", 1, D(2016, 1, 1), D(2016, 1, 3), 100, "A", "X", "desktop", 7),
    ("t1", 1, D(2016, 1, 3), D(2016, 1, 4), 200, "A", "X", "desktop", 7),
    ("t1", 1, D(2016, 1, 6), D(2016, 1, 7), 300, "B", "X", "desktop", 7),
    ("t1", 1, D(2016, 1, 7), D(2016, 1, 10), 100, "A", "X", "desktop", 7),
    ("t2", 2, D(2016, 6, 10), D(2016, 6, 11), 200, "A", "Y", "mobile", 9),
    ("t2", 2, D(2016, 6, 11), D(2016, 6, 12), 400, "C", "Y", "mobile", 9),
    ("t2", 2, D(2016, 6, 12), D(2016, 6, 14), 200, "A", "Y", "mobile", 9),
]
TEST_ROWS = [
    ("t3", 3, D(2016, 12, 5), D(2016, 12, 6), 100, "A", "X", "desktop", 7),
    ("t3", 3, D(2016, 12, 6), D(2016, 12, 8), 300, "B", "X", "desktop", 7),
    ("t3", 3, D(2016, 12, 8), D(2016, 12, 10), 0, None, "X", "desktop", 7),
]
FOLDS_ASSIGN = {"t1": (0, False), "t2": (1, False), "t3": (0, True)}


@pytest.fixture
def hand():
    """(train, test, folds) of the three hand-built trips."""
    return reservations(TRAIN_ROWS), reservations(TEST_ROWS), folds_table(FOLDS_ASSIGN)


@pytest.fixture
def make_reservations():
    """The :func:`reservations` helper, for tests that build their own trips."""
    return reservations


@pytest.fixture
def hand_cfg():
    """Thresholds that make cities 300, 400 and affiliate 9 rare in the hand-built data."""
    return FeaturesConfig(engine="cpu", n_lags=5, rare_city_min_count=3, rare_affiliate_min_count=5, reverse_augment=False)
