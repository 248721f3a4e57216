"""Candidate features that share strength across cities: back-offs from the city to its country.

A rarely seen city has noisy statistics of its own (a handful of target rows, most transition
counts zero), but its country is seen often. These features let the ranker fall back on the
country where the city's own counts say little (all out of fold, from the same target rows as the
other candidate statistics, :func:`nextdest.stats.targets`):

  * ``bo_last``: ``P(country(cand) | last country) * P(cand | country(cand))``, the back-off
    probability of the candidate after the last stay (country-to-country transition share times the
    candidate's share of its country's targets);
  * ``t1_smooth``: the last city -> candidate transition share shrunk toward ``bo_last``:
    ``(t1_count + a * bo_last) / (out-degree of the last city + a)`` with ``a`` =
    ``candidates.backoff_prior``, so a last city seen twice says little and one seen a thousand
    times says much (missing when the last city has no transitions and ``a`` = 0);
  * ``cpop_month_lift``, ``cpop_market_lift``: the candidate's *country* popularity in the check-in
    month and for the booker market over its overall popularity (seasonality and market taste are
    properties of countries in this domain; the city-level lifts are noise for rare cities).
"""

from __future__ import annotations

import polars as pl

from ..stats import targets


def country_lifts(feat, fold: int | None, by: str) -> pl.DataFrame:
    """(``by``, country_idx, lift): the country's share of the targets with that value of ``by``
    over its share of all targets (out of fold ``fold``). A (value, country) pair without targets
    has no row (the caller reads it as lift 0 when the country has targets at all)."""
    t = targets(feat, fold)
    tot = t.select(pl.len().alias("n")).collect().item()
    overall = t.group_by("country_idx").agg((pl.len() / max(tot, 1)).alias("_p"))
    return (
        t.group_by(by, "country_idx").agg(pl.len().alias("_c"))
        .with_columns((pl.col("_c") / pl.col("_c").sum().over(by)).alias("_pb"))
        .join(overall, on="country_idx")
        .select(by, "country_idx", (pl.col("_pb") / pl.col("_p")).cast(pl.Float32).alias("lift"))
        .collect()
    )


def backoff_features(df: pl.DataFrame, feat, fold: int | None, prior: float) -> pl.DataFrame:
    """Adds ``bo_last``, ``t1_smooth``, ``cpop_month_lift`` and ``cpop_market_lift`` (module
    docstring). ``df`` needs ``city_idx``, ``cand_country``, ``ctx_month``, ``ctx_market``,
    ``t1_count``, ``ctx_last_outdeg`` (null: no transition / unseen last city), ``tc_share`` and
    ``pop_in_country_share`` (null when unknown)."""
    df = df.with_columns(
        (pl.col("tc_share").fill_null(0.0) * pl.col("pop_in_country_share").fill_null(0.0)).cast(pl.Float32).alias("bo_last")
    )
    den = pl.col("ctx_last_outdeg").fill_null(0.0) + prior
    df = df.with_columns(
        pl.when(den > 0).then((pl.col("t1_count").fill_null(0.0) + prior * pl.col("bo_last")) / den)
        .cast(pl.Float32).alias("t1_smooth")
    )
    seen = targets(feat, fold).select(pl.col("country_idx").unique()).collect()["country_idx"].to_list()
    for by, alias, name in (("checkin_month", "ctx_month", "cpop_month_lift"), ("booker_idx", "ctx_market", "cpop_market_lift")):
        lift = country_lifts(feat, fold, by).select(pl.col(by).alias(alias), pl.col("country_idx").alias("cand_country"), pl.col("lift").alias(name))
        df = df.join(lift, on=[alias, "cand_country"], how="left").with_columns(
            pl.when(pl.col("cand_country").is_in(seen)).then(pl.col(name).fill_null(0.0))
            .otherwise(pl.col(name)).alias(name)
        )
    return df
