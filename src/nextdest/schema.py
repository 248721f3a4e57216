"""One place for every table that crosses a stage boundary: column names and polars dtypes.

Stages write through :func:`conform` (exact columns, exact dtypes, in this order) and read through
:func:`check`, so a drifted table fails loudly at the boundary instead of deep inside a model.

Index conventions for encoded categoricals (cities, countries, markets, devices, affiliates):
0 = padding / unknown / concealed, 1 = rare bucket (inputs only), real values from 2 on,
sorted by descending frequency (so city index 2 is the most frequent city).
"""

from __future__ import annotations

import polars as pl

PAD = 0
RARE = 1
FIRST_INDEX = 2

# The official CSV columns, in the published order.
OFFICIAL_COLUMNS = [
    "user_id",
    "checkin",
    "checkout",
    "city_id",
    "device_class",
    "affiliate_id",
    "booker_country",
    "hotel_country",
    "utrip_id",
]
TRUTH_COLUMNS = ["utrip_id", "city_id", "hotel_country"]
SUBMISSION_COLUMNS = ["utrip_id", "city_id_1", "city_id_2", "city_id_3", "city_id_4"]

# Reservations after validation (data stage: train.parquet, test.parquet), one row per stay,
# sorted by utrip_id then checkin. ``row`` is the 1-based line number in the source CSV.
RESERVATIONS = {
    "user_id": pl.Int64,
    "checkin": pl.Date,
    "checkout": pl.Date,
    "city_id": pl.Int64,
    "device_class": pl.Utf8,
    "affiliate_id": pl.Int64,
    "booker_country": pl.Utf8,
    "hotel_country": pl.Utf8,
    "utrip_id": pl.Utf8,
    "row": pl.Int64,
}

# Ground truth of the test trips (data stage: truth.parquet, when known).
TRUTH = {"utrip_id": pl.Utf8, "city_id": pl.Int64, "hotel_country": pl.Utf8}

# Fold assignment (folds stage: folds.parquet): GroupKFold by trip over train and test trips.
FOLDS = {"utrip_id": pl.Utf8, "fold": pl.Int8, "is_test": pl.Boolean}

# The synthetic generator's own distribution of each trip's last city, its top 50 (data stage:
# oracle.parquet for the test trips, oracle_train.parquet for the train trips; synthetic data only).
ORACLE = {"utrip_id": pl.Utf8, "city_id": pl.Int64, "prob": pl.Float64, "rank": pl.Int32}

# Every model's top-k (baselines, neural models, rankers, blend): oof_topk.parquet for the
# validation trips of the trained folds, test_topk.parquet for every test trip.
TOPK = {
    "utrip_id": pl.Utf8,
    "city_id": pl.Int64,
    "score": pl.Float64,
    "rank": pl.Int32,  # 1 = best
    "model": pl.Utf8,
}

# The feature table (features stage: features.parquet): one row per reservation of train and test
# trips (plus reversed copies when features.reverse_augment), sorted by utrip_id then pos.
# City columns hold the *target* index (full vocabulary, 0 = pad/concealed); models map inputs
# through vocab.json's input map (rare cities -> 1).
N_LAGS = 5
FEATURES = {
    "utrip_id": pl.Utf8,  # reversed copies: "<utrip_id>~r"
    "user_id": pl.Int64,
    "fold": pl.Int8,
    "is_test": pl.Boolean,  # the trip comes from test_set.csv
    "is_concealed": pl.Boolean,  # the test row whose city we predict
    "is_last": pl.Boolean,  # the trip's last row
    "is_reversed": pl.Boolean,  # augmented reversed copy
    "city_id": pl.Int64,  # raw id; 0 on the concealed row
    "city_idx": pl.Int32,  # target index; 0 on the concealed row
    "country_idx": pl.Int32,  # hotel country index; 0 on the concealed row
    "n_trip": pl.Int16,  # trip length N (concealed row included)
    "pos": pl.Int16,  # 0-based position from the start
    "steps_left": pl.Int16,  # N - 1 - pos
    **{f"city_lag{k}": pl.Int32 for k in range(1, N_LAGS + 1)},
    **{f"country_lag{k}": pl.Int32 for k in range(1, N_LAGS + 1)},
    "first_city": pl.Int32,  # 0 on the first row (it is that row's own city)
    "first_country": pl.Int32,
    "nights": pl.Int16,
    "gap_days": pl.Int16,  # checkin - previous checkout (0 on the first row)
    "checkin_month": pl.Int8,  # 1..12
    "checkin_weekday": pl.Int8,  # 0 = Monday
    "checkout_weekday": pl.Int8,
    "weekend": pl.Boolean,  # the stay covers a Friday or Saturday night
    "season": pl.Int8,  # 0 winter, 1 spring, 2 summer, 3 autumn
    "span_so_far": pl.Int16,  # days from the trip's first checkin to this checkin
    "span_total": pl.Int16,  # days from the trip's first checkin to its last checkout
    "booker_idx": pl.Int8,
    "device_idx": pl.Int8,
    "affiliate_idx": pl.Int32,  # rare affiliates -> 1
}

# Ranker candidates (candidates stage: oof_candidates.parquet, test_candidates.parquet): one row per
# (trip, candidate city), rows of a trip together, sorted by ``prio``; these key columns first, then
# the ranker features (numeric; their names depend on the models pooled: feature_names.json).
# ``label`` (1 = the true city) on test rows only when the test truth is known; ``fold`` = -1 there.
CANDIDATES = {
    "utrip_id": pl.Utf8,
    "fold": pl.Int8,
    "city_idx": pl.Int32,
    "city_id": pl.Int64,
    "label": pl.Int8,
    "prio": pl.Int32,  # 1 = first in the pool (reciprocal-rank fusion of the sources)
}

# Per-city vocabulary (features stage: cities.parquet).
CITIES = {
    "city_idx": pl.Int32,
    "city_id": pl.Int64,
    "count": pl.Int64,  # rows with this city (train + known test rows)
    "input_idx": pl.Int32,  # city_idx, or RARE below features.rare_city_min_count
    "country_idx": pl.Int32,  # the city's (most frequent) hotel country
}


class SchemaError(ValueError):
    """A table does not match its declared schema."""


def check(df: pl.DataFrame, schema: dict, name: str) -> pl.DataFrame:
    """Raise if ``df`` lacks a column of ``schema`` or has it with another dtype."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(f"{name}: missing columns {missing}; has {df.columns}")
    wrong = [f"{c} is {df.schema[c]}, expected {t}" for c, t in schema.items() if df.schema[c] != t]
    if wrong:
        raise SchemaError(f"{name}: wrong dtypes: {'; '.join(wrong)}")
    return df


def conform(df: pl.DataFrame, schema: dict, name: str, extra: bool = False) -> pl.DataFrame:
    """Cast to the schema's dtypes and order; with ``extra`` keep additional columns after them."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(f"{name}: missing columns {missing}")
    cols = [pl.col(c).cast(t, strict=True) for c, t in schema.items()]
    if extra:
        cols += [pl.col(c) for c in df.columns if c not in schema]
    return df.select(cols)
