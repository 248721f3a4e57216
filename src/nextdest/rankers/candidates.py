"""The candidates stage: one pool of candidate cities per trip, and the ranker features of every
(trip, candidate) pair.

Pool (per query trip: the validation trips of the trained folds, and every test trip)
  * every available model's top ``candidates.per_model_k`` (the baselines and every model stage:
    the stage's top-k inputs);
  * the previous city's most frequent next cities, and those of the last two cities
    (``transition_k`` each, out of fold);
  * the trip's first city (trips often end where they started);
  * the most popular cities of each country the trip has visited (``country_k`` each, out of fold);
  * with the learned city map (``candidates.geo_epochs``), its ``geo_k`` best cities after the last
    stay (:func:`.geo.geo_top`: rarely seen cities near it, ahead in the trip's direction).

Each candidate gets a priority from reciprocal-rank fusion over its sources
(``sum_s 1 / (PRIO_C + rank_s)``), so a city several sources agree on comes first, and ``prio``
= its 1-based position in the trip. The ranker stages keep ``prio <= rankers.max_candidates``
(the cap lives there, so changing it re-runs exactly the stages it affects); ``recall.json``
reports pool recall at several cut-offs, the cap included.

Features (all target statistics out of fold: a validation trip of fold k sees statistics with
fold k's targets excluded, test trips see every known target, see :mod:`nextdest.stats`)
  * per model: score, rank, gap to the model's best score in the trip (null outside its top-k);
    how many models rank the candidate, their best rank and summed reciprocal rank;
  * transitions: last city -> candidate (count, share), last two cities -> candidate, second last
    city -> candidate (skip), first city -> candidate, candidate -> last city (reverse), last
    country -> candidate's country (share); with the learned map (below), also last city ->
    candidate's country (share), the candidate's share of the crossings from the last country into
    its own (other countries only), and their product with the candidate's share in its country as
    a city-level back-off (:func:`_crossing_features`);
  * popularity: overall, in the check-in month, for the booker market (shares and lifts);
  * candidate vs trip: same country as the last stay / the first stay, visits to its country so
    far, equals the first city, already visited, equals the last / second last city;
  * trip context: length, nights, gap, month, weekday, market, device, span, distinct cities and
    countries so far, out-degree of the last city;
  * final steps only: last city -> final city, first city -> final city, final-city popularity
    (a trip's last step drifts back toward where it began);
  * closeness to the trip's earlier stays on the city graph, one and two hops (third last, first,
    most / total over all stays; two-hop ``P @ P`` also for the last two), which places rarely seen
    candidates relative to the trip's direction;
  * the same user's other trips: stays in the candidate city and its country, number of trips;
  * back-offs from the candidate to its country (:mod:`.backoff`, ``candidates.backoff``), which carry information to
    rarely seen cities: the country-level probability after the last country, the last city's
    transition share shrunk toward it, the country's lifts in the check-in month and market;
  * a spectral embedding of the city graph (:mod:`.embedding`, ``candidates.embed_dim``; 0 = off):
    the candidate's cosine with the last and the first stay, and with the trip's last step;
  * a learned 2-D map of the cities (:mod:`.geo`, ``candidates.geo_epochs``; 0 = off): the map's
    own score of the step and its log-probability within the country, distances to the last and the
    first stay, the step's cosine with the trip's last step, its overall direction, both together
    and the way home, how straight the trip travels; and the same on one map of all countries, so
    that border crossings get them too (``gx_*``).

Outputs: ``oof_candidates.parquet`` (with ``label`` = 1 for the true city, and the trip's CV
``fold``), ``test_candidates.parquet`` (``label`` only when the test truth exists, for reporting;
rankers never train on it), ``recall.json``, ``feature_names.json``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from .. import artifacts
from ..artifacts import check_candidates
from ..baselines import BASELINES
from ..folds import test_mask, valid_mask
from ..schema import CANDIDATES, FIRST_INDEX, SchemaError, conform
from ..stats import known_rows, popularity, targets, transitions
from .backoff import backoff_features
from .embedding import city_embedding, embedding_features
from .geo import fit_layout, geo_features, geo_top

PRIO_C = 5.0  # reciprocal-rank-fusion constant of the pool priority
RECALL_CUTOFFS = (4, 10, 20, 30, 50, 75, 100, 150, 200)
ID_COLUMNS = ("utrip_id", "fold", "city_idx", "city_id", "label", "prio")

# Trip context copied from the query row (the row whose city is predicted).
CONTEXT = {
    "n_trip": "ctx_n_trip",
    "nights": "ctx_nights",
    "gap_days": "ctx_gap_days",
    "checkin_month": "ctx_month",
    "checkin_weekday": "ctx_weekday",
    "weekend": "ctx_weekend",
    "booker_idx": "ctx_market",
    "device_idx": "ctx_device",
    "span_so_far": "ctx_span_so_far",
    "span_total": "ctx_span_total",
}


# --------------------------------------------------------------------------- inputs
def _to_idx(topk: pl.DataFrame, cities: pl.DataFrame) -> pl.DataFrame:
    """Top-k table with raw ids -> (utrip_id, city_idx, score, rank, gap), gap = score - the
    model's best score in the trip."""
    return (
        topk.join(cities.select("city_id", "city_idx"), on="city_id", how="inner")
        .select(
            "utrip_id", "city_idx", "rank",
            pl.col("score").cast(pl.Float32),
            (pl.col("score") - pl.col("score").max().over("utrip_id")).cast(pl.Float32).alias("gap"),
        )
    )


# --------------------------------------------------------------------------- the pool
def _top_per(df: pl.DataFrame, by: list[str], k: int) -> pl.DataFrame:
    """The first ``k`` rows per ``by`` group of a table sorted by descending count within it,
    with their 1-based ``rank``."""
    return df.with_columns(pl.int_range(1, pl.len() + 1).over(by).alias("rank")).filter(pl.col("rank") <= k)


def candidate_sources(
    q: pl.DataFrame,
    prefix: pl.DataFrame,
    models: dict[str, pl.DataFrame],
    trans1: pl.DataFrame,
    trans2: pl.DataFrame,
    country_pop: pl.DataFrame,
    cfg,
    geo: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every (utrip_id, city_idx, source, rank) a source proposes for the query trips ``q``
    (``geo``: the learned map's top cities, :func:`.geo.geo_top`, when given)."""
    cc = cfg.candidates
    parts = []
    for name, tab in models.items():
        parts.append(tab.filter(pl.col("rank") <= cc.per_model_k).select("utrip_id", "city_idx", pl.lit(name).alias("source"), "rank"))
    t1 = _top_per(trans1, ["prev1"], cc.transition_k)
    parts.append(
        q.select("utrip_id", pl.col("city_lag1").alias("prev1"))
        .join(t1, on="prev1").select("utrip_id", pl.col("next").alias("city_idx"), pl.lit("trans1").alias("source"), "rank")
    )
    t2 = _top_per(trans2, ["prev1", "prev2"], cc.transition_k)
    parts.append(
        q.select("utrip_id", pl.col("city_lag1").alias("prev1"), pl.col("city_lag2").alias("prev2"))
        .join(t2, on=["prev1", "prev2"]).select("utrip_id", pl.col("next").alias("city_idx"), pl.lit("trans2").alias("source"), "rank")
    )
    parts.append(q.select("utrip_id", pl.col("first_city").alias("city_idx"), pl.lit("first").alias("source"), pl.lit(1).alias("rank")))
    cp = _top_per(country_pop, ["country_idx"], cc.country_k)
    visited_countries = prefix.select("utrip_id", "country_idx").unique()
    parts.append(
        visited_countries.join(cp, on="country_idx")
        .select("utrip_id", "city_idx", pl.lit("country").alias("source"), "rank")
    )
    if geo is not None:
        parts.append(geo.select("utrip_id", "city_idx", pl.lit("geo").alias("source"), "rank"))
    src = pl.concat([p.with_columns(pl.col("city_idx").cast(pl.Int32), pl.col("rank").cast(pl.Int32)) for p in parts])
    return src.filter(pl.col("city_idx") >= FIRST_INDEX)


def pool_from_sources(src: pl.DataFrame) -> pl.DataFrame:
    """Union of the sources per trip with the priority ``prio`` (1 = first) by reciprocal-rank
    fusion; ties broken by the best single rank, then city index (deterministic). Flags
    ``src_<source>`` for the fixed sources (and ``src_geo`` when that source is there)."""
    optional = [(pl.col("source") == "geo").any().alias("src_geo")] if (src["source"] == "geo").any() else []
    return (
        src.group_by("utrip_id", "city_idx")
        .agg(
            (1.0 / (PRIO_C + pl.col("rank"))).sum().alias("_rrf"),
            pl.col("rank").min().alias("_best"),
            (pl.col("source") == "trans1").any().alias("src_trans1"),
            (pl.col("source") == "trans2").any().alias("src_trans2"),
            (pl.col("source") == "first").any().alias("src_first"),
            (pl.col("source") == "country").any().alias("src_country"),
            *optional,
            pl.col("source").n_unique().alias("src_n"),
        )
        .sort(["utrip_id", "_rrf", "_best", "city_idx"], descending=[False, True, False, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("utrip_id").cast(pl.Int32).alias("prio"))
        .drop("_rrf", "_best")
    )


# --------------------------------------------------------------------------- features
def _share(count: str, total: str) -> pl.Expr:
    return (pl.col(count) / pl.col(total)).cast(pl.Float32)


def pool_features(
    feat: pl.DataFrame,
    q: pl.DataFrame,
    fold: int | None,
    models: dict[str, pl.DataFrame],
    cities: pl.DataFrame,
    cfg,
    whole_pool: list | None = None,
    layout=None,
) -> pl.DataFrame:
    """Candidates and features for query rows ``q`` (one per trip), with statistics out of fold
    ``fold`` (None: every known target). ``models`` maps model name -> its top-k for these trips
    in index space (see :func:`_to_idx`). Only the first ``candidates.max_pool`` candidates of a
    trip get features; ``whole_pool`` (a list), when given, receives the uncapped pool's
    (utrip_id, city_idx, prio) for recall reporting; ``layout`` (:class:`.geo.Layout`), when
    given, adds the geo_* features."""
    trips = q.select("utrip_id")
    prefix = (
        feat.filter(~pl.col("is_reversed") & ~pl.col("is_last"))
        .join(trips, on="utrip_id", how="semi")
        .select("utrip_id", "city_idx", "country_idx")
    )
    trans1 = transitions(feat, fold, order=1)
    trans2 = transitions(feat, fold, order=2)
    pop = popularity(feat, fold)
    country_pop = (
        pop.join(cities.select("city_idx", "country_idx"), on="city_idx")
        .sort(["country_idx", "count", "city_idx"], descending=[False, True, False])
    )
    geo = geo_top(q, layout, cfg.candidates.geo_k) if layout is not None and cfg.candidates.geo_k > 0 else None
    pool = pool_from_sources(candidate_sources(q, prefix, models, trans1, trans2, country_pop, cfg, geo))
    if whole_pool is not None:
        whole_pool.append(pool.select("utrip_id", "city_idx", "prio"))
    pool = pool.filter(pl.col("prio") <= cfg.candidates.max_pool)

    # Query context and candidate attributes.
    qctx = q.select(
        "utrip_id", "city_lag1", "city_lag2", "city_lag3", "first_city", "country_lag1", "first_country",
        *[pl.col(c).alias(a) for c, a in CONTEXT.items()],
    )
    df = pool.join(qctx, on="utrip_id", how="left").join(
        cities.select("city_idx", "city_id", pl.col("country_idx").alias("cand_country")), on="city_idx", how="left"
    )

    # Model scores.
    for name, tab in models.items():
        df = df.join(
            tab.select("utrip_id", "city_idx", pl.col("score").alias(f"m_{name}_score"),
                       pl.col("rank").cast(pl.Float32).alias(f"m_{name}_rank"), pl.col("gap").alias(f"m_{name}_gap")),
            on=["utrip_id", "city_idx"], how="left",
        )
    scored = [n for n in models if n not in BASELINES] or list(models)
    ranks = [pl.col(f"m_{n}_rank") for n in scored]
    df = df.with_columns(
        pl.sum_horizontal([r.is_not_null() for r in ranks]).cast(pl.Int8).alias("m_n_ranked"),
        pl.min_horizontal(ranks).alias("m_best_rank"),
        pl.sum_horizontal([(1.0 / r.cast(pl.Float64)).fill_null(0.0) for r in ranks]).cast(pl.Float32).alias("m_rr_sum"),
    )

    # Transition statistics.
    out1 = trans1.group_by("prev1").agg(pl.col("count").sum().alias("tot"))
    t1 = trans1.join(out1, on="prev1").with_columns(_share("count", "tot").alias("share"))
    df = (
        df.join(t1.select(pl.col("prev1").alias("city_lag1"), pl.col("next").alias("city_idx"),
                          pl.col("count").cast(pl.Float32).alias("t1_count"), pl.col("share").alias("t1_share")),
                on=["city_lag1", "city_idx"], how="left")
        .join(out1.select(pl.col("prev1").alias("city_lag1"), pl.col("tot").cast(pl.Float32).alias("ctx_last_outdeg")),
              on="city_lag1", how="left")
        .join(t1.select(pl.col("prev1").alias("city_lag2"), pl.col("next").alias("city_idx"),
                        pl.col("count").cast(pl.Float32).alias("tskip_count"), pl.col("share").alias("tskip_share")),
              on=["city_lag2", "city_idx"], how="left")
        .join(t1.select(pl.col("prev1").alias("first_city"), pl.col("next").alias("city_idx"),
                        pl.col("share").alias("tfirst_share")),
              on=["first_city", "city_idx"], how="left")
        .join(t1.select(pl.col("prev1").alias("city_idx"), pl.col("next").alias("city_lag1"),
                        pl.col("count").cast(pl.Float32).alias("trev_count"), pl.col("share").alias("trev_share")),
              on=["city_idx", "city_lag1"], how="left")
    )
    out2 = trans2.group_by("prev1", "prev2").agg(pl.col("count").sum().alias("tot"))
    t2 = trans2.join(out2, on=["prev1", "prev2"]).with_columns(_share("count", "tot").alias("share"))
    df = df.join(
        t2.select(pl.col("prev1").alias("city_lag1"), pl.col("prev2").alias("city_lag2"), pl.col("next").alias("city_idx"),
                  pl.col("count").cast(pl.Float32).alias("t2_count"), pl.col("share").alias("t2_share")),
        on=["city_lag1", "city_lag2", "city_idx"], how="left",
    ).join(
        out2.select(pl.col("prev1").alias("city_lag1"), pl.col("prev2").alias("city_lag2"), pl.col("tot").cast(pl.Float32).alias("ctx_last2_outdeg")),
        on=["city_lag1", "city_lag2"], how="left",
    )
    ctr = (
        targets(feat, fold).filter(pl.col("country_lag1") > 0)
        .group_by("country_lag1", "country_idx").agg(pl.len().alias("count")).collect()
    )
    ctr = ctr.with_columns((pl.col("count") / pl.col("count").sum().over("country_lag1")).cast(pl.Float32).alias("tc_share"))
    df = df.join(ctr.select("country_lag1", pl.col("country_idx").alias("cand_country"), "tc_share"),
                 on=["country_lag1", "cand_country"], how="left")

    # Popularity: overall, by month, by market (shares of all targets in that slice) and lifts.
    total = max(int(pop["count"].sum()), 1)
    df = df.join(pop.select("city_idx", (pl.col("count") / total).cast(pl.Float32).alias("pop_share")), on="city_idx", how="left")
    for by, alias, name in (("checkin_month", "ctx_month", "month"), ("booker_idx", "ctx_market", "market")):
        pb = popularity(feat, fold, by=by)
        pb = pb.with_columns((pl.col("count") / pl.col("count").sum().over(by)).cast(pl.Float32).alias(f"pop_{name}_share"))
        df = df.join(pb.select(pl.col(by).alias(alias), "city_idx", f"pop_{name}_share"), on=[alias, "city_idx"], how="left")
        df = df.with_columns(pl.col(f"pop_{name}_share").fill_null(0.0))
        df = df.with_columns((pl.col(f"pop_{name}_share") / pl.col("pop_share")).cast(pl.Float32).alias(f"pop_{name}_lift"))
    cpop = pop.join(cities.select("city_idx", "country_idx"), on="city_idx").group_by("country_idx").agg(pl.col("count").sum().alias("c"))
    df = df.join(cpop.select(pl.col("country_idx").alias("cand_country"), (pl.col("c") / total).cast(pl.Float32).alias("pop_country_share")),
                 on="cand_country", how="left")
    df = df.with_columns((pl.col("pop_share") / pl.col("pop_country_share")).cast(pl.Float32).alias("pop_in_country_share"))
    if layout is not None:  # with the map, as measured (medium: CV +0.0014 and +0.0021 together with the global map;
        # alone on small: CV -0.0055, oracle-expected -0.0002 +- 0.0011; BENCHMARKS.md, geo-medium-global)
        df = _crossing_features(df, feat, fold, t1, cities)

    # Candidate vs the trip so far.
    visits = prefix.group_by("utrip_id", "city_idx").agg(pl.len().cast(pl.Int8).alias("cand_visits"))
    cvisits = prefix.group_by("utrip_id", pl.col("country_idx").alias("cand_country")).agg(pl.len().cast(pl.Int8).alias("cand_country_visits"))
    distinct = prefix.group_by("utrip_id").agg(
        pl.col("city_idx").n_unique().cast(pl.Int16).alias("ctx_distinct_cities"),
        pl.col("country_idx").n_unique().cast(pl.Int16).alias("ctx_distinct_countries"),
    )
    df = (
        df.join(visits, on=["utrip_id", "city_idx"], how="left")
        .join(cvisits, on=["utrip_id", "cand_country"], how="left")
        .join(distinct, on="utrip_id", how="left")
        .with_columns(
            pl.col("cand_visits").fill_null(0),
            pl.col("cand_country_visits").fill_null(0),
            (pl.col("city_idx") == pl.col("first_city")).alias("cand_is_first"),
            (pl.col("city_idx") == pl.col("city_lag1")).alias("cand_is_last"),
            (pl.col("city_idx") == pl.col("city_lag2")).alias("cand_is_last2"),
            (pl.col("cand_country") == pl.col("country_lag1")).alias("cand_same_country_last"),
            (pl.col("cand_country") == pl.col("first_country")).alias("cand_same_country_first"),
        )
    )
    if cfg.candidates.backoff:
        df = backoff_features(df, feat, fold, cfg.candidates.backoff_prior)
    df = _final_step_features(df, feat, fold)
    df = _proximity_features(df, prefix, t1)
    df = _user_features(df, feat, q, fold, cities)
    df = _graph_features(df, trans1, cities.height + FIRST_INDEX)
    if cfg.candidates.embed_dim > 0:
        df = embedding_features(df, city_embedding(trans1, cities.height + FIRST_INDEX, cfg.candidates.embed_dim))
    if layout is not None:
        df = geo_features(df, layout)
    df = df.drop("city_lag1", "city_lag2", "city_lag3", "first_city", "country_lag1", "first_country", "cand_country")
    bools = [c for c, t in df.schema.items() if t == pl.Boolean]
    return df.with_columns(pl.col(bools).cast(pl.Int8)).sort("utrip_id", "prio")


def _crossing_features(df: pl.DataFrame, feat: pl.DataFrame, fold: int | None, t1: pl.DataFrame,
                       cities: pl.DataFrame) -> pl.DataFrame:
    """Where the last city's trips go next, by country, and where a border crossing lands:

    * ``t1_country_share``: the share of the last city's next stays that lie in the candidate's
      country (a city near a border sends many trips across; the country-to-country ``tc_share``
      cannot tell it from one in the middle);
    * ``entry_share``: for a candidate in another country than the last stay, its share of the
      targets that entered its country from the last stay's country (which cities a crossing from
      that side lands in: the gateways near the border and the hubs), null otherwise;
    * ``bo_city``: ``t1_country_share`` times the candidate's share within its country (``entry_share``
      across the border, ``pop_in_country_share`` within it): a city-level back-off for rare pairs.
    All out of fold, from the same targets as the other statistics (``t1``: last city -> next
    shares)."""
    cc = cities.select(pl.col("city_idx").alias("next"), pl.col("country_idx").alias("cand_country"))
    tcc = (
        t1.join(cc, on="next").group_by("prev1", "cand_country").agg(pl.col("share").sum().cast(pl.Float32).alias("t1_country_share"))
        .rename({"prev1": "city_lag1"})
    )
    cross = (
        targets(feat, fold).filter((pl.col("country_lag1") > 0) & (pl.col("country_lag1") != pl.col("country_idx")))
        .group_by("country_lag1", "country_idx", "city_idx").agg(pl.len().alias("_n")).collect()
        .with_columns((pl.col("_n") / pl.col("_n").sum().over("country_lag1", "country_idx")).cast(pl.Float32).alias("entry_share"))
        .select("country_lag1", pl.col("country_idx").alias("cand_country"), "city_idx", "entry_share")
    )
    seen_out = t1.select(pl.col("prev1").unique().alias("city_lag1"))
    crossing = pl.col("cand_country") != pl.col("country_lag1")
    return (
        df.join(tcc, on=["city_lag1", "cand_country"], how="left")
        .join(cross, on=["country_lag1", "cand_country", "city_idx"], how="left")
        .with_columns(
            pl.when(pl.col("city_lag1").is_in(seen_out["city_lag1"].implode())).then(pl.col("t1_country_share").fill_null(0.0))
            .alias("t1_country_share"),
            pl.when(crossing).then(pl.col("entry_share").fill_null(0.0)).alias("entry_share"),
        )
        .with_columns(
            (pl.col("t1_country_share") * pl.when(crossing).then(pl.col("entry_share"))
             .otherwise(pl.col("pop_in_country_share").fill_null(0.0))).cast(pl.Float32).alias("bo_city")
        )
    )


def _final_step_features(df: pl.DataFrame, feat: pl.DataFrame, fold: int | None) -> pl.DataFrame:
    """Statistics of trips' *last* steps only (out of fold): the last step of a trip is not an
    ordinary step (trips drift back toward where they started and often end there), so the share
    of the candidate among final cities after the previous city (``fin_t1_*``), after the first
    city (``fin_first_*``: first city -> final city) and in the same month (``fin_pop_*``)."""
    fin = targets(feat, fold).filter(pl.col("is_last") & (pl.col("city_lag1") > 0))
    for key, name in (("city_lag1", "fin_t1"), ("first_city", "fin_first")):
        st = (
            fin.group_by(key, "city_idx").agg(pl.len().alias("c"))
            .with_columns(pl.col("c").sum().over(key).alias("tot")).collect()
        )
        df = df.join(
            st.select(key, "city_idx", pl.col("c").cast(pl.Float32).alias(f"{name}_count"),
                      (pl.col("c") / pl.col("tot")).cast(pl.Float32).alias(f"{name}_share")),
            on=[key, "city_idx"], how="left",
        ).join(
            st.group_by(key).agg(pl.col("tot").first().cast(pl.Float32).alias(f"ctx_{name}_n")), on=key, how="left",
        ).with_columns(pl.col(f"{name}_count").fill_null(0.0), pl.col(f"ctx_{name}_n").fill_null(0.0))
    pop = fin.group_by("city_idx").agg(pl.len().alias("c")).collect()
    total = max(int(pop["c"].sum()), 1)
    df = df.join(pop.select("city_idx", (pl.col("c") / total).cast(pl.Float32).alias("fin_pop_share")), on="city_idx", how="left")
    return df.with_columns(
        pl.col("fin_pop_share").fill_null(0.0),
        (pl.col("fin_pop_share") / pl.col("pop_share")).cast(pl.Float32).alias("fin_pop_lift"),
    )


def _proximity_features(df: pl.DataFrame, prefix: pl.DataFrame, t1: pl.DataFrame) -> pl.DataFrame:
    """How close the candidate is to each earlier stay, closeness being the symmetric transition
    share ``(share(a -> b) + share(b -> a)) / 2``: to the third last stay (``prox_lag3``), to the
    first stay (``prox_first``) and the most / in total over every stay so far (``prox_max``,
    ``prox_sum``). With the last two stays' transitions these give the ranker the trip's direction:
    trips move away from where they were and drift back toward where they began."""
    sym = (
        pl.concat([
            t1.select("prev1", "next", "share"),
            t1.select(pl.col("next").alias("prev1"), pl.col("prev1").alias("next"), "share"),
        ])
        .group_by("prev1", "next").agg((pl.col("share").sum() / 2).cast(pl.Float32).alias("prox"))
    )
    for key, name in (("city_lag3", "prox_lag3"), ("first_city", "prox_first")):
        df = df.join(sym.select(pl.col("prev1").alias(key), pl.col("next").alias("city_idx"), pl.col("prox").alias(name)),
                     on=[key, "city_idx"], how="left").with_columns(pl.col(name).fill_null(0.0))
    visited = prefix.select("utrip_id", pl.col("city_idx").alias("prev1")).unique()
    cand = df.select("utrip_id", "city_idx")
    agg = (
        cand.join(visited, on="utrip_id")
        .join(sym.rename({"next": "city_idx"}), on=["prev1", "city_idx"], how="inner")
        .group_by("utrip_id", "city_idx")
        # Summed in a fixed order: a float sum in the group's arrival order differs in the last
        # bit from run to run, and the rankers' splits follow such differences.
        .agg(pl.col("prox").max().alias("prox_max"), pl.col("prox").sort().sum().alias("prox_sum"))
    )
    return df.join(agg, on=["utrip_id", "city_idx"], how="left").with_columns(
        pl.col("prox_max").fill_null(0.0), pl.col("prox_sum").fill_null(0.0)
    )


def _graph_features(df: pl.DataFrame, trans1: pl.DataFrame, n_index: int) -> pl.DataFrame:
    """Closeness on the city graph, one and two hops: ``P`` is the row-normalised symmetric
    transition-count matrix (out of fold), ``P2 = P @ P``. For the last, second last, third last
    and first stay ``s``: ``g1_* = P[s, cand]`` and ``g2_* = P2[s, cand]``. Two hops reach cities
    that share neighbours with ``s``, which places rarely seen candidates relative to the trip
    (near the last stay, away from the ones before it: the trip's direction)."""
    a = trans1["prev1"].to_numpy().astype(np.int64)
    b = trans1["next"].to_numpy().astype(np.int64)
    w = trans1["count"].to_numpy().astype(np.float64)
    c = sp.coo_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(n_index, n_index)).tocsr()
    deg = np.asarray(c.sum(axis=1)).ravel()
    p = sp.diags(np.where(deg > 0, 1.0 / np.maximum(deg, 1e-12), 0.0)) @ c
    cand = df["city_idx"].to_numpy().astype(np.int64)
    names = (("city_lag1", "lag1"), ("city_lag2", "lag2"), ("city_lag3", "lag3"), ("first_city", "first"))
    srcs = [df[key].fill_null(0).to_numpy().astype(np.int64) for key, _ in names]
    oks = [(src > 0) & (src < n_index) & (cand < n_index) for src in srcs]
    # Every (stay, candidate) pair of the four stays in one query, looked up in P and in P2.
    rows = np.concatenate([src[ok] for src, ok in zip(srcs, oks)])
    cols_q = np.concatenate([cand[ok] for ok in oks])
    found = {"g1": csr_values(p.tocsr(), rows, cols_q), "g2": csr_values((p @ p).tocsr(), rows, cols_q)}
    cols, start = {}, 0
    for (_key, name), ok in zip(names, oks):
        end = start + int(ok.sum())
        for pre in ("g1", "g2"):  # g1_lag1, g2_lag1, g1_lag2, ...: the rankers' feature order
            v = np.full(len(cand), np.nan, dtype=np.float32)
            v[ok] = found[pre][start:end]
            cols[f"{pre}_{name}"] = v
        start = end
    return df.with_columns([pl.Series(k, v) for k, v in cols.items()])


def csr_values(mat: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``mat[rows, cols]`` (0 where nothing is stored; ``mat`` is made canonical in place), by one
    search of the sorted query keys ``row * n_cols + col`` in the matrix's sorted keys. scipy's own
    pair indexing scans the whole row for each pair whenever the pairs number fewer than a tenth of
    the stored entries: its cost is pairs x row length, and both grow with the data (two-hop rows
    most). BENCHMARKS.md, candidates-profile."""
    if len(rows) == 0 or mat.nnz == 0:
        return np.zeros(len(rows))
    mat.sum_duplicates()  # canonical: sorted column indices, no duplicates -> keys strictly increasing
    n_cols = mat.shape[1]
    keys = np.repeat(np.arange(mat.shape[0], dtype=np.int64), np.diff(mat.indptr)) * n_cols + mat.indices
    q = rows.astype(np.int64) * n_cols + cols
    order = np.argsort(q, kind="stable")
    qs = q[order]
    pos = np.minimum(np.searchsorted(keys, qs), len(keys) - 1)  # sorted queries walk the keys in order
    out = np.zeros(len(q))
    out[order] = np.where(keys[pos] == qs, mat.data[pos], 0.0)
    return out


def _user_features(df: pl.DataFrame, feat: pl.DataFrame, q: pl.DataFrame, fold: int | None, cities: pl.DataFrame) -> pl.DataFrame:
    """The same user's *other* trips: stays known when this trip is predicted (every row but the
    concealed ones and, out of fold, the held-out fold's last cities). How often the user stayed
    in the candidate city (``user_city_stays``) and its country (``user_country_stays``, and
    ``user_country_share`` of their stays), and how many other trips they have (``ctx_user_trips``)."""
    known = known_rows(feat, fold)
    qu = q.select("utrip_id", pl.col("user_id").alias("_user")).lazy()
    other = (
        known.select(pl.col("utrip_id").alias("_other"), pl.col("user_id").alias("_user"), "city_idx", "country_idx")
        .join(qu, on="_user").filter(pl.col("_other") != pl.col("utrip_id"))
    )
    trips = other.group_by("utrip_id").agg(
        pl.col("_other").n_unique().cast(pl.Float32).alias("ctx_user_trips"), pl.len().alias("_stays")
    ).collect()
    by_city = other.group_by("utrip_id", "city_idx").agg(pl.len().cast(pl.Float32).alias("user_city_stays")).collect()
    by_country = (
        other.group_by("utrip_id", pl.col("country_idx").alias("_cc")).agg(pl.len().cast(pl.Float32).alias("user_country_stays")).collect()
    )
    cc = cities.select("city_idx", pl.col("country_idx").alias("_cc"))
    return (
        df.join(cc, on="city_idx", how="left")
        .join(trips, on="utrip_id", how="left")
        .join(by_city, on=["utrip_id", "city_idx"], how="left")
        .join(by_country, on=["utrip_id", "_cc"], how="left")
        .with_columns(
            pl.col("ctx_user_trips").fill_null(0.0),
            pl.col("user_city_stays").fill_null(0.0),
            pl.col("user_country_stays").fill_null(0.0),
        )
        .with_columns((pl.col("user_country_stays") / pl.col("_stays")).cast(pl.Float32).alias("user_country_share"))
        .drop("_cc", "_stays")
    )


# --------------------------------------------------------------------------- recall
def truth_prio(pool: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """(utrip_id, prio) of every truth trip (utrip_id, city_idx): the true city's position in the
    trip's pool, null when the pool misses it."""
    return truth.join(pool.select("utrip_id", "city_idx", "prio"), on=["utrip_id", "city_idx"], how="left").select("utrip_id", "prio")


def recall_from_prio(hit: pl.DataFrame, pool_rows: int, cutoffs=RECALL_CUTOFFS) -> dict:
    """Recall at each cut-off and of the whole pool from :func:`truth_prio`'s table, plus the mean
    pool size (``pool_rows`` candidate rows over the truth trips)."""
    n = hit.height
    if n == 0:
        return {}
    prio = hit["prio"]
    out = {f"recall@{c}": float((prio <= c).sum()) / n for c in cutoffs}
    out["recall_all"] = float(prio.is_not_null().sum()) / n
    out["mean_pool_size"] = float(pool_rows / n)
    out["trips"] = n
    return out


def recall_at(cands: pl.DataFrame, truth: pl.DataFrame, cutoffs=RECALL_CUTOFFS) -> dict:
    """Share of truth trips (utrip_id, city_idx) whose city is in the pool within ``prio <= n``,
    for each cut-off and for the whole pool; plus the mean pool size."""
    if truth.height == 0:
        return {}
    out = recall_from_prio(truth_prio(cands, truth), cands.height, cutoffs)
    out["mean_pool_size"] = float(cands.height / max(cands["utrip_id"].n_unique(), 1))
    return out


def feature_columns(df: pl.DataFrame) -> list[str]:
    """The ranker features of a candidate table: every column but the ids and the label."""
    return [c for c in df.columns if c not in ID_COLUMNS]


def conform_candidates(df: pl.DataFrame, name: str) -> pl.DataFrame:
    """The key columns of :data:`~nextdest.schema.CANDIDATES` first with their dtypes (``label``
    only when present), then the features, which must be numeric."""
    schema = {c: t for c, t in CANDIDATES.items() if c != "label" or "label" in df.columns}
    df = conform(df, schema, name, extra=True)
    bad = [f"{c} ({t})" for c, t in df.schema.items() if c not in schema and not t.is_numeric()]
    if bad:
        raise SchemaError(f"{name}: non-numeric feature columns {bad}")
    return df


# --------------------------------------------------------------------------- stage
def run_candidates_stage(ctx) -> None:
    """Pool and features of every OOF validation trip (fold by fold, statistics out of that fold)
    and every test trip. Each part is written to disk as soon as it is built and the parts are
    streamed into the two output files, so memory holds one part, not the whole table."""
    cfg = ctx.cfg
    t0 = time.perf_counter()
    feat_dir = ctx.input("features")
    feat = artifacts.read_features(feat_dir)
    cities = artifacts.read_cities(feat_dir)
    tables = artifacts.read_model_tables(ctx.topk_inputs(), ctx.log)
    if not tables:
        raise RuntimeError("candidates: no model top-k tables found (baselines must have run)")
    ctx.log(f"models pooled: {', '.join(tables)}; features for the first {cfg.candidates.max_pool} of each pool")
    layout = None
    if cfg.candidates.geo_epochs > 0:
        layout = fit_layout(feat, cities, cities.height + FIRST_INDEX, cfg.candidates.geo_epochs, cfg.seed, log=ctx.log)
    oof_idx = {n: _to_idx(o, cities) for n, (o, _t) in tables.items()}
    test_idx = {n: _to_idx(t, cities) for n, (_o, t) in tables.items()}
    parts_dir = ctx.out / "_parts"
    parts_dir.mkdir()
    cols: list[str] | None = None

    def write_part(df: pl.DataFrame, name: str) -> Path:
        nonlocal cols
        if cols is None:
            cols = [c for c in ID_COLUMNS if c in df.columns or c != "label"] + feature_columns(df)
        df = conform_candidates(df.select([c for c in cols if c in df.columns]), f"candidates {name}").sort("utrip_id", "prio")
        path = parts_dir / f"{name}.parquet"
        df.write_parquet(path)
        return path

    oof_parts, oof_hits, oof_pool_rows = [], [], 0
    for fold in cfg.cv.train_folds:
        q = feat.filter(valid_mask(fold))
        trips = q.select("utrip_id")
        models = {n: t.join(trips, on="utrip_id", how="semi") for n, t in oof_idx.items()}
        whole: list = []
        part = pool_features(feat, q, fold, models, cities, cfg, whole, layout)
        label = q.select("utrip_id", pl.col("city_idx").alias("_true"))
        part = (
            part.join(label, on="utrip_id", how="left")
            .with_columns((pl.col("city_idx") == pl.col("_true")).cast(pl.Int8).alias("label"), pl.lit(fold, pl.Int8).alias("fold"))
            .drop("_true")
        )
        oof_hits.append(truth_prio(whole[0], q.select("utrip_id", "city_idx")))
        oof_pool_rows += whole[0].height
        oof_parts.append(write_part(part, f"oof_{fold}"))
        del part, whole, models

    q = feat.filter(test_mask())
    whole = []
    test = pool_features(feat, q, None, test_idx, cities, cfg, whole, layout).with_columns(pl.lit(-1, pl.Int8).alias("fold"))
    truth = artifacts.read_truth(ctx.input("data"))
    test_hits = None
    if truth is not None:
        test_truth = (
            truth.select("utrip_id", "city_id")
            .join(cities.select("city_id", "city_idx"), on="city_id", how="left")
            .select("utrip_id", pl.col("city_idx").fill_null(0))
        )
        test = test.join(test_truth.rename({"city_idx": "_true"}), on="utrip_id", how="left").with_columns(
            (pl.col("city_idx") == pl.col("_true")).fill_null(False).cast(pl.Int8).alias("label")
        ).drop("_true")
        test_hits = truth_prio(whole[0], test_truth)
    test_pool_rows = whole[0].height
    test_part = write_part(test, "test")
    n_oof_rows, n_test_rows = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in oof_parts), test.height
    del test, whole

    artifacts.write_candidate_parts(ctx.out, "oof", oof_parts)  # the folds, in cfg.cv.train_folds order
    artifacts.write_candidate_parts(ctx.out, "test", [test_part])
    shutil.rmtree(parts_dir)
    recall = {
        "oof": recall_from_prio(pl.concat(oof_hits), oof_pool_rows),
        "test": recall_from_prio(test_hits, test_pool_rows) if test_hits is not None else None,
        "max_pool": cfg.candidates.max_pool,
        "models": list(tables),
        "prio_c": PRIO_C,
        "geo_layout": layout.info if layout is not None else None,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    artifacts.write_candidates_info(ctx.out, recall, [c for c in cols if c not in ID_COLUMNS])
    for part, r in (("OOF", recall["oof"]), ("test", recall["test"])):
        if r:
            ctx.log(
                f"{part} pool: {r['trips']:,} trips, mean size {r['mean_pool_size']:.1f}, recall "
                + ", ".join(f"@{c} {r[f'recall@{c}']:.3f}" for c in (10, 20, 50, 100)) + f", all {r['recall_all']:.3f}"
            )
    ctx.log(f"{n_oof_rows:,} OOF / {n_test_rows:,} test candidate rows (first {cfg.candidates.max_pool} per trip), "
            f"{len(cols) - len([c for c in cols if c in ID_COLUMNS])} features")
