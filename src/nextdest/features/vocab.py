"""Vocabularies: value -> index tables for cities, hotel countries, booker countries, devices and
affiliates, and the ``vocab.json`` summary.

Index conventions (:mod:`nextdest.schema`): 0 = padding / concealed / unknown, 1 = rare bucket
(input side only), real values from 2 on by descending frequency, ties broken by the value itself
(ascending), so the tables are deterministic.

What is counted where:
* cities and hotel countries: the *known* rows, i.e. every train row and every test row except the
  concealed one (whose city is the thing to predict);
* booker countries, devices and affiliates: every row (they are known on the concealed row too).

The five counts are single-key group-bys over the reservations, collected together. A city's
country needs the encoded rows, so :func:`place_pairs` counts (city, country) index pairs in the
same engine call as the feature table, and :func:`city_table` picks each city's country.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ..schema import CITIES, FIRST_INDEX, PAD, RARE, conform
from .engine import EngineRun


@dataclass
class Vocab:
    """The collected vocabulary tables (each small: one row per distinct value)."""

    cities: pl.DataFrame  # city_id, city_idx, count, input_idx (country_idx: see city_table)
    countries: pl.DataFrame  # hotel_country, country_idx, count
    bookers: pl.DataFrame  # booker_country, booker_idx, count
    devices: pl.DataFrame  # device_class, device_idx, count
    affiliates: pl.DataFrame  # affiliate_id, affiliate_idx, count (frequent affiliates only)
    n_rare_affiliates: int

    def as_json(self, cities: pl.DataFrame, rare_city_min_count: int, rare_affiliate_min_count: int) -> dict:
        """The ``vocab.json`` content (without the engine entry, which the stage adds).

        Value lists are indexed by the encoded index: ``vocab["countries"][country_idx]``; entries
        0 (pad) and 1 (rare) are ``null``. ``city_input_idx[city_idx]`` is the input index of a
        target city (``RARE`` for rare cities), the same map as ``cities.parquet``'s ``input_idx``.
        """

        def by_index(df: pl.DataFrame, value: str, idx: str) -> list:
            out: list = [None] * (FIRST_INDEX + df.height)
            for v, i in df.select(value, idx).iter_rows():
                out[i] = v
            return out

        city_input = [PAD, RARE] + [PAD] * cities.height
        for ci, ii in cities.select("city_idx", "input_idx").iter_rows():
            city_input[ci] = ii
        return {
            "n_cities": FIRST_INDEX + cities.height,
            "n_countries": FIRST_INDEX + self.countries.height,
            "n_bookers": FIRST_INDEX + self.bookers.height,
            "n_devices": FIRST_INDEX + self.devices.height,
            "n_affiliates": FIRST_INDEX + self.affiliates.height,
            "countries": by_index(self.countries, "hotel_country", "country_idx"),
            "bookers": by_index(self.bookers, "booker_country", "booker_idx"),
            "devices": by_index(self.devices, "device_class", "device_idx"),
            "affiliates": by_index(self.affiliates, "affiliate_id", "affiliate_idx"),
            "city_input_idx": city_input,
            "rare_city_min_count": rare_city_min_count,
            "n_rare_cities": int((cities["input_idx"] == RARE).sum()),
            "rare_affiliate_min_count": rare_affiliate_min_count,
            "n_rare_affiliates": self.n_rare_affiliates,
        }


def counted(rows: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """(``key``, ``count``) over ``rows``."""
    return rows.group_by(key).agg(pl.len().cast(pl.Int64).alias("count"))


def ranked(counts: pl.DataFrame, key: str, idx: str) -> pl.DataFrame:
    """Index the keys of a (``key``, ``count``) table: Int32 from FIRST_INDEX, most frequent first,
    ties by ``key`` ascending. (A tiny table: sorted eagerly.)"""
    return (
        counts.sort(["count", key], descending=[True, False])
        .with_row_index(idx, offset=FIRST_INDEX)
        .select(key, pl.col(idx).cast(pl.Int32), "count")
    )


def build_vocab(rows: pl.LazyFrame, rare_city_min_count: int, rare_affiliate_min_count: int, run: EngineRun) -> Vocab:
    """Count and index every categorical of ``rows`` (train + test reservations)."""
    known = rows.filter(pl.col("city_id") != 0)  # the concealed test rows carry city_id 0
    city_n, country_n, booker_n, device_n, aff_n = run.collect_all(
        [
            counted(known, "city_id"),
            counted(known, "hotel_country"),
            counted(rows, "booker_country"),
            counted(rows, "device_class"),
            counted(rows, "affiliate_id"),
        ],
        "vocab:counts",
    )
    cities = ranked(city_n, "city_id", "city_idx").with_columns(
        pl.when(pl.col("count") < rare_city_min_count).then(pl.lit(RARE)).otherwise(pl.col("city_idx"))
        .cast(pl.Int32).alias("input_idx")
    )
    aff_all = ranked(aff_n, "affiliate_id", "affiliate_idx")
    # Sorted by descending count, so the frequent affiliates are exactly the first indices.
    affiliates = aff_all.filter(pl.col("count") >= rare_affiliate_min_count)
    return Vocab(
        cities=cities,
        countries=ranked(country_n, "hotel_country", "country_idx"),
        bookers=ranked(booker_n, "booker_country", "booker_idx"),
        devices=ranked(device_n, "device_class", "device_idx"),
        affiliates=affiliates,
        n_rare_affiliates=aff_all.height - affiliates.height,
    )


def place_pairs(rows: pl.LazyFrame, vocab: Vocab) -> pl.LazyFrame:
    """(city_idx, country_idx, n) over the known encoded rows: how often each city is in each
    country. Grouped on one Int64 key (city_idx * n_countries + country_idx): cheaper than two."""
    n = FIRST_INDEX + vocab.countries.height
    key = pl.col("city_idx").cast(pl.Int64) * n + pl.col("country_idx")
    return (
        rows.filter(pl.col("city_idx") > PAD)
        .group_by(key.alias("_pair"))
        .agg(pl.len().alias("n"))
        .select(
            (pl.col("_pair") // n).cast(pl.Int32).alias("city_idx"),
            (pl.col("_pair") % n).cast(pl.Int32).alias("country_idx"),
            "n",
        )
    )


def city_table(vocab: Vocab, pairs: pl.DataFrame) -> pl.DataFrame:
    """The CITIES table: ``vocab.cities`` plus each city's most frequent hotel country (from
    :func:`place_pairs`); a tie goes to the country that is more frequent overall (the smaller
    ``country_idx``). Small tables only: computed eagerly."""
    best = (
        pairs.filter(pl.col("n") == pl.col("n").max().over("city_idx"))
        .group_by("city_idx")
        .agg(pl.col("country_idx").min())
    )
    out = (
        vocab.cities.join(best, on="city_idx", how="left")
        .with_columns(pl.col("country_idx").fill_null(PAD))
        .sort("city_idx")
    )
    return conform(out, CITIES, "cities")
