"""The feature table: polars LazyFrame plans over the reservations, finished on the configured engine.

Steps (every expression is one the cuDF engine implements, see README.md):

1. Vocabularies (:mod:`.vocab`): five single-key counts, indexed by descending frequency.
2. Encoding: train and test stacked (``is_test``), then single-key joins against the vocabulary
   tables (city, hotel country, affiliate -> index; the tiny booker and device vocabularies by a
   when/then chain); the concealed row's city and country become 0, rare affiliates 1. Calendar
   features are per-row expressions.
3. Visiting order: one join against the trip table (:func:`trip_keys`: fold and an integer rank of
   ``utrip_id``; only the one-per-trip ids are sorted as strings), then a sort on one Int64 key
   (trip rank, then the row's position in the stacked input, which is in visiting order: the data
   stage writes it so; checked, and sorted first when not). This frame is materialized once.
4. Sequence features: every trip is a contiguous block, so ``pos`` is the row index minus the
   trip's first (found by a running max over key changes), lag ``k`` is a plain global ``shift(k)``
   masked with ``pos >= k`` (no ``shift().over()``, which the GPU engine lacks), and first/last-row
   values are ``gather``-ed at the trip's first/last row index.
5. Reversed copies (``reverse_augment``): the known rows re-sorted by (reversed trip rank, row
   index descending), ``utrip_id + "~r"``; the same sequence features are computed on them and
   the two parts are sorted together by trip rank and position.

Time features of a reversed copy: calendar features (month, weekdays, weekend, season, nights) stay
the row's own; the relational ones run on mirrored time (the sequence walks backwards, so a stay
"starts" at its checkout): ``gap_days`` = next-in-time stay's check-in minus this checkout,
``span_so_far`` = the copy's first row's checkout minus this checkout, ``span_total`` = the same
calendar span as the trip's known rows. All three stay non-negative, as in the original direction.
"""

from __future__ import annotations

import time

import polars as pl

from ..config import FeaturesConfig
from ..schema import FEATURES, N_LAGS, PAD, RARE, conform
from .engine import EngineRun
from .vocab import Vocab, build_vocab, city_table, place_pairs

TRIP = "utrip_id"
REVERSED_SUFFIX = "~r"
VISIT_ORDER = [TRIP, "checkin", "row"]  # how the reservations of a trip are ordered

# Columns the sequence step needs (everything else of the reservations is spent by then).
ROW_COLUMNS = [
    TRIP, "user_id", "fold", "is_test", "is_concealed", "city_id", "city_idx", "country_idx",
    "checkin", "checkout", "nights", "checkin_month", "checkin_weekday", "checkout_weekday",
    "weekend", "season", "booker_idx", "device_idx", "affiliate_idx",
]


def in_visiting_order(df: pl.DataFrame) -> bool:
    """Whether ``df`` is sorted by trip, check-in and source line (the data stage's contract)."""
    if df.height < 2:
        return True
    cur = [pl.col(c) for c in VISIT_ORDER]
    prev = [pl.col(c).shift(1) for c in VISIT_ORDER]
    # Lexicographic "row < previous row" over the three keys.
    back = (cur[0] < prev[0]) | ((cur[0] == prev[0]) & ((cur[1] < prev[1]) | ((cur[1] == prev[1]) & (cur[2] < prev[2]))))
    return not df.lazy().select(back.fill_null(False).any()).collect().item()


def stack_reservations(train: pl.DataFrame, test: pl.DataFrame, ordered: bool = False) -> pl.LazyFrame:
    """Train and test reservations in one LazyFrame, with ``is_test``.

    With ``ordered``, each part is first put in visiting order (a no-op for the data stage's files,
    which are already in that order: checked, not assumed) and ``_ord`` numbers the stacked rows.
    """
    parts = []
    for df, flag in ((train, False), (test, True)):
        lf = df.lazy() if not ordered or in_visiting_order(df) else df.lazy().sort(VISIT_ORDER)
        parts.append(lf.with_columns(pl.lit(flag).alias("is_test")))
    out = pl.concat(parts, how="vertical")
    return out.with_row_index("_ord") if ordered else out


def check_folds(folds: pl.DataFrame, feats: pl.DataFrame, expected_rows: int, rows_out: int) -> None:
    """Every trip has exactly one fold, checked cheaply on the result: a trip listed twice in
    ``folds`` duplicates its rows (``rows_out`` > ``expected_rows``), a trip missing from it has a
    null ``fold``. Only on failure is ``folds`` searched for the culprit."""
    if rows_out != expected_rows:
        dup = folds.filter(pl.col(TRIP).is_duplicated())
        if dup.height:
            raise ValueError(f"folds: trip {dup[TRIP][0]!r} has more than one fold ({dup[TRIP].n_unique()} such trips)")
        raise RuntimeError(f"features: {rows_out} original rows out for {expected_rows} reservations in")  # pragma: no cover
    if feats["fold"].null_count():
        missing = feats.filter(pl.col("fold").is_null() & ~pl.col("is_reversed"))[TRIP].unique().sort()
        raise ValueError(f"folds: trip {missing[0]!r} has no fold ({missing.len()} trips without one)")


SMALL_VOCAB = 16  # vocabularies up to this size are looked up by a when/then chain, not a join


def lookup(rows: pl.LazyFrame, table: pl.DataFrame, key: str, idx: str, default: int) -> pl.LazyFrame:
    """Add ``idx`` = the index of ``key`` in ``table`` (``default`` when absent or null).

    Large vocabularies are a left join; a small one (booker countries, devices) is a chain of
    equality tests against constants, which is several times cheaper than a join for a handful of
    values and stays within the GPU engine's expressions (ternaries).
    """
    if table.height <= SMALL_VOCAB:
        expr = pl.lit(default, pl.Int32)
        for value, index in table.select(key, idx).iter_rows():
            expr = pl.when(pl.col(key) == value).then(pl.lit(index, pl.Int32)).otherwise(expr)
        return rows.with_columns(expr.alias(idx))
    return rows.join(table.lazy().select(key, idx), on=key, how="left").with_columns(pl.col(idx).fill_null(default))


def encode(rows: pl.LazyFrame, vocab: Vocab) -> pl.LazyFrame:
    """Categorical -> index against the vocabulary tables (:func:`lookup`): the concealed row's city
    and country -> 0, rare (or unseen) affiliates -> 1."""
    for table, key, idx, default in (
        (vocab.cities, "city_id", "city_idx", PAD),
        (vocab.countries, "hotel_country", "country_idx", PAD),
        (vocab.bookers, "booker_country", "booker_idx", PAD),
        (vocab.devices, "device_class", "device_idx", PAD),
        (vocab.affiliates, "affiliate_id", "affiliate_idx", RARE),
    ):
        rows = lookup(rows, table, key, idx, default)
    return rows.with_columns((pl.col("is_test") & (pl.col("city_id") == 0)).alias("is_concealed"))


def trip_keys(folds: pl.DataFrame, reverse: bool) -> pl.LazyFrame:
    """One row per trip of ``folds``: ``fold`` and integer ranks that follow the string order of
    the output's ``utrip_id``: ``_tid`` for the trip and, with ``reverse``, ``_rtid`` for its
    reversed copy ``utrip_id + "~r"`` (ranks over the ids of both directions).

    Only the trip ids (one per trip) are sorted as strings; the reservations are then sorted and
    windowed on integers.
    """
    ids = folds.lazy().select(TRIP, "fold")
    if not reverse:
        return ids.sort(TRIP).with_row_index("_tid").with_columns(pl.col("_tid").cast(pl.Int64))
    both = pl.concat([
        ids.select(pl.col(TRIP).alias("_key"), pl.col(TRIP).alias("_id"), pl.lit(False).alias("_rev")),
        ids.select(pl.col(TRIP).alias("_key"), pl.concat_str([pl.col(TRIP), pl.lit(REVERSED_SUFFIX)]).alias("_id"),
                   pl.lit(True).alias("_rev")),
    ]).sort("_id").with_row_index("_rank").with_columns(pl.col("_rank").cast(pl.Int64))
    fwd = both.filter(~pl.col("_rev")).select(pl.col("_key").alias(TRIP), pl.col("_rank").alias("_tid"))
    rev = both.filter(pl.col("_rev")).select(pl.col("_key").alias(TRIP), pl.col("_rank").alias("_rtid"))
    return ids.join(fwd, on=TRIP).join(rev, on=TRIP)


def visiting_order(rows: pl.LazyFrame, folds: pl.DataFrame, n_rows: int, reverse: bool) -> pl.LazyFrame:
    """The encoded rows with their trip's fold and ranks (:func:`trip_keys`), each trip a
    contiguous block in visiting order, trips in ``utrip_id`` order.

    The order is one Int64 sort key, ``_tid * n_rows + _ord``: within a trip ``_ord`` (the stack
    position of an input already in visiting order) is the visiting order. Only
    :data:`ROW_COLUMNS` are kept, in their output dtypes, so the sort moves as little as possible.
    A trip missing from ``folds`` gets a null fold (reported by :func:`check_folds`).
    """
    ranks = ["_tid", "_rtid"] if reverse else ["_tid"]
    return (
        rows.join(trip_keys(folds, reverse), on=TRIP, how="left")
        .sort(pl.col("_tid") * n_rows + pl.col("_ord"))
        .select(*ranks, *[pl.col(c).cast(FEATURES[c]) if c in FEATURES else pl.col(c) for c in ROW_COLUMNS])
    )


def _days(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """Whole days from date ``b`` to date ``a``."""
    return (a - b).dt.total_days()


def sequence_features(seq: pl.LazyFrame, n_lags: int) -> pl.LazyFrame:
    """Position, lag, first-of-trip and time-span features of rows in sequence order.

    ``seq`` must hold each trip (integer key ``_tid``) as one contiguous block of rows in visiting
    order (forward or reversed); ``is_reversed`` says which, for the direction of the time spans.
    Per-trip values come from scans (the trip's first and last row index) and gathers there.
    """
    tid = pl.col("_tid")
    rid = pl.col("_rid").cast(pl.Int64)
    seq = seq.with_row_index("_rid").with_columns(
        # first / last row index of the row's trip, by scans (no hashing): the trip starts where
        # the key changes; rows are in order, so a running max carries the start forward.
        pl.when(tid != tid.shift(1)).then(rid).otherwise(pl.lit(0, pl.Int64)).cum_max().alias("_start"),
        pl.when(tid != tid.shift(-1)).then(rid).otherwise(pl.lit(None, pl.Int64)).fill_null(strategy="backward")
        .fill_null(rid.max()).alias("_end"),
    ).with_columns(
        (pl.col("_rid") - pl.col("_start")).cast(pl.Int32).alias("pos"),
        (pl.col("_end") - pl.col("_start") + 1).cast(pl.Int32).alias("n_trip"),
    )
    rev = pl.col("is_reversed")
    seq_in = pl.when(rev).then(pl.col("checkout")).otherwise(pl.col("checkin"))  # when a stay starts
    seq_out = pl.when(rev).then(pl.col("checkin")).otherwise(pl.col("checkout"))  # ... and ends
    sign = pl.when(rev).then(pl.lit(-1)).otherwise(pl.lit(1))
    pos = pl.col("pos")
    first = pos == 0
    lags = []
    for k in range(1, max(n_lags, N_LAGS) + 1):
        for src, name in (("city_idx", "city_lag"), ("country_idx", "country_lag")):
            lag = pl.when(pos >= k).then(pl.col(src).shift(k)).otherwise(pl.lit(PAD)) if k <= n_lags else pl.lit(PAD)
            lags.append(lag.cast(pl.Int32).alias(f"{name}{k}"))
    trip_in = seq_in.gather(pl.col("_start"))  # the trip's first stay starts
    trip_out = seq_out.gather(pl.col("_end"))  # the trip's last stay ends
    return seq.with_columns(
        *lags,
        (pl.col("n_trip") - 1 - pos).alias("steps_left"),
        (pos == pl.col("n_trip") - 1).alias("is_last"),
        pl.when(first).then(pl.lit(PAD)).otherwise(pl.col("city_idx").gather(pl.col("_start"))).alias("first_city"),
        pl.when(first).then(pl.lit(PAD)).otherwise(pl.col("country_idx").gather(pl.col("_start"))).alias("first_country"),
        pl.when(first).then(pl.lit(0)).otherwise(sign * _days(seq_in, seq_out.shift(1))).alias("gap_days"),
        (sign * _days(seq_in, trip_in)).alias("span_so_far"),
        (sign * _days(trip_out, trip_in)).alias("span_total"),
    )


def calendar_features() -> list[pl.Expr]:
    """Per-row calendar features (always the row's own dates, also on reversed copies)."""
    wd = pl.col("checkin").dt.weekday() - 1  # 0 = Monday
    nights = _days(pl.col("checkout"), pl.col("checkin"))
    month = pl.col("checkin").dt.month()
    # Nights are the dates checkin <= d < checkout; a Friday (4) or Saturday (5) night is covered
    # when the first such date after check-in comes before checkout. (+7: stay non-negative.)
    to_fri = (4 + 7 - wd) % 7
    to_sat = (5 + 7 - wd) % 7
    return [
        nights.alias("nights"),
        month.alias("checkin_month"),
        wd.alias("checkin_weekday"),
        (pl.col("checkout").dt.weekday() - 1).alias("checkout_weekday"),
        ((to_fri < nights) | (to_sat < nights)).alias("weekend"),
        ((month % 12) // 3).alias("season"),  # Dec-Feb 0, Mar-May 1, Jun-Aug 2, Sep-Nov 3
    ]


def _output_columns(n_lags: int) -> list[str]:
    extra = [f"{n}{k}" for k in range(N_LAGS + 1, n_lags + 1) for n in ("city_lag", "country_lag")]
    return list(FEATURES) + extra


def encoded_rows(train: pl.DataFrame, test: pl.DataFrame, vocab: Vocab) -> pl.LazyFrame:
    """Train + test reservations with every index and calendar feature (unordered)."""
    return encode(stack_reservations(train, test, ordered=True), vocab).with_columns(calendar_features())


def feature_plan(fwd: pl.LazyFrame, n_rows: int, fcfg: FeaturesConfig) -> pl.LazyFrame:
    """The feature table over the ``n_rows`` rows in visiting order (:func:`visiting_order`,
    materialized). Sorts use single Int64 keys (rank * (n_rows + 1) + position)."""
    reverse = fcfg.reverse_augment
    fwd = fwd.with_columns(pl.lit(False).alias("is_reversed"))
    parts = [sequence_features(fwd, fcfg.n_lags)]
    if reverse:
        # Known rows, each trip's block in reverse visiting order, under the reversed trip's rank.
        n = n_rows + 1
        rev = (
            fwd.with_row_index("_fwd")
            .filter(~pl.col("is_concealed"))
            .sort(pl.col("_rtid") * n + (n_rows - pl.col("_fwd").cast(pl.Int64)))
            .with_columns(
                pl.col("_rtid").alias("_tid"),
                pl.concat_str([pl.col(TRIP), pl.lit(REVERSED_SUFFIX)]).alias(TRIP),
                pl.lit(True).alias("is_reversed"),
            )
        )
        parts.append(sequence_features(rev, fcfg.n_lags))
    cols = _output_columns(fcfg.n_lags)
    dtypes = {**FEATURES, **{c: pl.Int32 for c in cols if c not in FEATURES}}
    out = pl.concat([p.select("_tid", *[pl.col(c).cast(dtypes[c]) for c in cols]) for p in parts], how="vertical")
    if reverse:
        out = out.sort(pl.col("_tid") * n + pl.col("pos"))
    return out.drop("_tid")


def build_features_report(
    train: pl.DataFrame,
    test: pl.DataFrame,
    folds: pl.DataFrame,
    fcfg: FeaturesConfig,
    run: EngineRun,
) -> tuple[pl.DataFrame, pl.DataFrame, dict, dict]:
    """:func:`nextdest.features.build_features` plus a report (row counts, timings).

    Four engine calls: the vocabulary counts; the encoded reservations in visiting order
    (materialized, so the forward and reversed sequences read it once); the feature table; the
    (city, country) pair counts over the encoded rows (for each city's country).
    """
    if fcfg.n_lags < 0:
        raise ValueError(f"features.n_lags = {fcfg.n_lags}: must be >= 0")
    t0 = time.perf_counter()
    vocab = build_vocab(stack_reservations(train, test), fcfg.rare_city_min_count, fcfg.rare_affiliate_min_count, run)
    t1 = time.perf_counter()
    n_rows = train.height + test.height
    fwd = run.collect(visiting_order(encoded_rows(train, test, vocab), folds, n_rows, fcfg.reverse_augment), "rows")
    feats = run.collect(feature_plan(fwd.lazy(), n_rows, fcfg), "features")
    feats = conform(feats, FEATURES, "features", extra=fcfg.n_lags > N_LAGS)
    pairs = run.collect(place_pairs(fwd.lazy(), vocab), "city countries")
    cities = city_table(vocab, pairs)
    t2 = time.perf_counter()
    counts = feats.group_by("is_test", "is_reversed").agg(pl.len(), (pl.col("pos") == 0).sum().alias("trips"))

    def n_out(is_test: bool, is_rev: bool, what: str = "len") -> int:
        hit = counts.filter((pl.col("is_test") == is_test) & (pl.col("is_reversed") == is_rev))[what]
        return int(hit.sum())

    check_folds(folds, feats, expected_rows=n_rows, rows_out=n_out(False, False) + n_out(True, False))
    vocab_json = vocab.as_json(cities, fcfg.rare_city_min_count, fcfg.rare_affiliate_min_count)
    report = {
        "rows_in": {"train": train.height, "test": test.height},
        "trips_in": {"train": n_out(False, False, "trips"), "test": n_out(True, False, "trips")},
        "rows_out": {
            "train": n_out(False, False),
            "test": n_out(True, False),
            "train_reversed": n_out(False, True),
            "test_reversed": n_out(True, True),
            "total": feats.height,
        },
        "reversed_rows_added": n_out(False, True) + n_out(True, True),
        "concealed_rows": int(feats["is_concealed"].sum()),
        "vocab_sizes": {k: vocab_json[k] for k in ("n_cities", "n_countries", "n_bookers", "n_devices", "n_affiliates")},
        "n_rare_cities": vocab_json["n_rare_cities"],
        "n_rare_affiliates": vocab_json["n_rare_affiliates"],
        "seconds": {"vocab": round(t1 - t0, 3), "features": round(t2 - t1, 3)},
    }
    return feats, cities, vocab_json, report
