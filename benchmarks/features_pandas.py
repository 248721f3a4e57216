"""A plain pandas implementation of the feature table, for the benchmark and as a cross-check.

It computes exactly what :func:`nextdest.features.build_features` computes (same vocabularies, same
columns, same row order), the way one would in idiomatic pandas: ``value_counts`` for the
vocabularies, ``merge`` / ``map`` for the encodings, ``groupby().shift()`` / ``cumcount`` /
``transform`` for the per-trip sequence features. It is not the project's implementation: the
stage only runs the polars plan.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PAD, RARE, FIRST = 0, 1, 2
N_LAGS = 5


def ranked(values: pd.Series, name: str) -> pd.DataFrame:
    """value -> index (from 2) by descending count, ties by value; columns: value, ``name``, count."""
    counts = values.value_counts().rename("count").rename_axis("value").reset_index()
    counts = counts.sort_values(["count", "value"], ascending=[False, True], kind="stable").reset_index(drop=True)
    counts[name] = np.arange(FIRST, FIRST + len(counts), dtype=np.int32)
    return counts


def build_vocab(rows: pd.DataFrame, rare_city_min_count: int, rare_affiliate_min_count: int) -> dict[str, pd.DataFrame]:
    """The vocabulary tables (cities with input_idx / country_idx, countries, bookers, devices, affiliates)."""
    known = rows[rows["city_id"] != 0]
    countries = ranked(known["hotel_country"], "country_idx")
    cities = ranked(known["city_id"], "city_idx").rename(columns={"value": "city_id"})
    pairs = (
        known[["city_id", "hotel_country"]]
        .merge(countries[["value", "country_idx"]], left_on="hotel_country", right_on="value")
        .groupby(["city_id", "country_idx"]).size().rename("n").reset_index()
    )
    # Most frequent country per city; ties -> the overall more frequent country (smaller index).
    pairs = pairs.sort_values(["city_id", "n", "country_idx"], ascending=[True, False, True])
    best = pairs.drop_duplicates("city_id")[["city_id", "country_idx"]]
    cities = cities.merge(best, on="city_id", how="left")
    cities["input_idx"] = np.where(cities["count"] < rare_city_min_count, RARE, cities["city_idx"]).astype(np.int32)
    affiliates = ranked(rows["affiliate_id"], "affiliate_idx")
    return {
        "cities": cities[["city_idx", "city_id", "count", "input_idx", "country_idx"]],
        "countries": countries,
        "bookers": ranked(rows["booker_country"], "booker_idx"),
        "devices": ranked(rows["device_class"], "device_idx"),
        "affiliates": affiliates[affiliates["count"] >= rare_affiliate_min_count],
    }


def _sequence(df: pd.DataFrame, n_lags: int, reversed_: bool) -> pd.DataFrame:
    """Per-trip sequence features of ``df`` (rows of a trip contiguous, in visiting order)."""
    g = df.groupby("utrip_id", sort=False)
    df["pos"] = g.cumcount()
    df["n_trip"] = g["utrip_id"].transform("size")
    df["steps_left"] = df["n_trip"] - 1 - df["pos"]
    df["is_last"] = df["steps_left"] == 0
    for k in range(1, N_LAGS + 1):
        for src, name in (("city_idx", "city_lag"), ("country_idx", "country_lag")):
            df[f"{name}{k}"] = g[src].shift(k, fill_value=PAD) if k <= n_lags else PAD
    first = df["pos"] == 0
    df["first_city"] = g["city_idx"].transform("first").where(~first, PAD)
    df["first_country"] = g["country_idx"].transform("first").where(~first, PAD)
    # Time runs backwards on a reversed copy: a stay "starts" at its checkout.
    seq_in, seq_out = ("checkout", "checkin") if reversed_ else ("checkin", "checkout")
    sign = -1 if reversed_ else 1
    prev_out = g[seq_out].shift(1)
    df["gap_days"] = (sign * (df[seq_in] - prev_out).dt.days).fillna(0)
    first_in = g[seq_in].transform("first")
    df["span_so_far"] = sign * (df[seq_in] - first_in).dt.days
    df["span_total"] = sign * (g[seq_out].transform("last") - first_in).dt.days
    df["is_reversed"] = reversed_
    return df


def build_features_pandas(train: pd.DataFrame, test: pd.DataFrame, folds: pd.DataFrame, n_lags: int = 5,
                          rare_city_min_count: int = 5, rare_affiliate_min_count: int = 5,
                          reverse_augment: bool = False) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The feature table (columns of nextdest.schema.FEATURES, unconverted dtypes) and the vocab tables.

    ``train``/``test``: reservations with datetime64 ``checkin``/``checkout``; ``folds``: utrip_id, fold.
    """
    rows = pd.concat([train.assign(is_test=False), test.assign(is_test=True)], ignore_index=True)
    rows = rows.merge(folds[["utrip_id", "fold"]], on="utrip_id", how="left")
    voc = build_vocab(rows, rare_city_min_count, rare_affiliate_min_count)

    def lookup(table: pd.DataFrame, key: str, idx: str, fill: int, col: str | None = None) -> pd.Series:
        mapping = pd.Series(table[idx].to_numpy(), index=table[key].to_numpy())
        return rows[col or key].map(mapping).fillna(fill).astype(np.int32)

    rows["city_idx"] = lookup(voc["cities"], "city_id", "city_idx", PAD)
    rows["country_idx"] = lookup(voc["countries"], "value", "country_idx", PAD, "hotel_country")
    rows["booker_idx"] = lookup(voc["bookers"], "value", "booker_idx", PAD, "booker_country")
    rows["device_idx"] = lookup(voc["devices"], "value", "device_idx", PAD, "device_class")
    rows["affiliate_idx"] = lookup(voc["affiliates"], "value", "affiliate_idx", RARE, "affiliate_id")
    rows["is_concealed"] = rows["is_test"] & (rows["city_id"] == 0)

    wd = rows["checkin"].dt.day_of_week
    rows["nights"] = (rows["checkout"] - rows["checkin"]).dt.days
    rows["checkin_month"] = rows["checkin"].dt.month
    rows["checkin_weekday"] = wd
    rows["checkout_weekday"] = rows["checkout"].dt.day_of_week
    rows["weekend"] = ((11 - wd) % 7 < rows["nights"]) | ((12 - wd) % 7 < rows["nights"])
    rows["season"] = (rows["checkin_month"] % 12) // 3

    rows = rows.sort_values(["utrip_id", "checkin", "row"], kind="stable").reset_index(drop=True)
    parts = [_sequence(rows.copy(), n_lags, False)]
    if reverse_augment:
        rev = rows[~rows["is_concealed"]].iloc[::-1].copy()
        rev["utrip_id"] = rev["utrip_id"] + "~r"
        parts.append(_sequence(rev, n_lags, True))
    out = pd.concat(parts, ignore_index=True)
    if reverse_augment:
        out = out.sort_values(["utrip_id", "pos"], kind="stable").reset_index(drop=True)
    return out, voc


def to_pandas(df) -> pd.DataFrame:
    """A polars DataFrame as pandas without pyarrow (dates become datetime64)."""
    return pd.DataFrame({c: df[c].to_numpy() for c in df.columns})


def to_polars(df: pd.DataFrame, schema: dict):
    """The ``schema`` columns of a pandas frame as a polars DataFrame with the schema's dtypes."""
    import polars as pl

    return pl.DataFrame({c: pl.Series(c, df[c].to_numpy()).cast(t) for c, t in schema.items()})
