"""Leaderboard submission: writer and validator.

Format (the official one): header exactly ``utrip_id,city_id_1,city_id_2,city_id_3,city_id_4``;
every test trip exactly once, no other trip; four distinct positive integer city ids per row.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl

from .schema import SUBMISSION_COLUMNS

MAX_LISTED = 5


class SubmissionError(ValueError):
    """The submission breaks the official format; the message names the file, line and column."""


def _listing(df: pl.DataFrame, what: str, col: str) -> str:
    shown = ", ".join(f"line {r['_line']} ({col}={r[col]!r})" for r in df.head(MAX_LISTED).iter_rows(named=True))
    more = f" and {df.height - MAX_LISTED} more" if df.height > MAX_LISTED else ""
    return f"{what}: {shown}{more}"


def test_trip_ids(test: Path | str | pl.DataFrame) -> pl.Series:
    """The test trips, from test_set.csv, a test parquet, or a frame with utrip_id."""
    if isinstance(test, pl.DataFrame):
        return test["utrip_id"].unique().sort()
    path = Path(test)
    if not path.exists():
        raise SubmissionError(f"{path}: test file not found")
    if path.suffix == ".parquet":
        return pl.read_parquet(path, columns=["utrip_id"])["utrip_id"].unique().sort()
    from .data.official import read_csv_text

    df = read_csv_text(path, SubmissionError)
    if "utrip_id" not in df.columns:
        raise SubmissionError(f"{path.name}: line 1 (header): no column 'utrip_id'")
    return df["utrip_id"].unique().sort()


def validate_submission(path: Path | str, test: Path | str | pl.DataFrame) -> pl.DataFrame:
    """Check a submission file; return it typed. Raises SubmissionError with every problem found."""
    path = Path(path)
    name = path.name
    if not path.exists():
        raise SubmissionError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SubmissionError(f"{name}: file is empty")
    from .data.official import read_csv_text

    raw = read_csv_text(path, SubmissionError)  # a byte-order mark is accepted, as the data reader does
    if raw.columns != SUBMISSION_COLUMNS:
        header = ",".join(raw.columns)
        raise SubmissionError(f"{name}: line 1 (header) is {header!r}; it must be exactly {','.join(SUBMISSION_COLUMNS)}")
    raw = raw.with_row_index("_line", offset=2)
    problems = []
    cities = SUBMISSION_COLUMNS[1:]
    typed = raw.with_columns(
        [pl.col(c).str.strip_chars().cast(pl.Int64, strict=False).alias(f"_{c}") for c in cities]
    )
    for c in cities:
        bad = typed.filter(pl.col(f"_{c}").is_null() | (pl.col(f"_{c}") <= 0))
        if bad.height:
            problems.append(f"column '{c}': " + _listing(bad, "not a positive integer city id", c))
    if not problems:
        dup = typed.filter(pl.concat_list([f"_{c}" for c in cities]).list.n_unique() < 4)
        if dup.height:
            problems.append("columns city_id_1..4: " + _listing(dup, "the four cities are not distinct", "utrip_id"))
    twice = raw.filter(pl.col("utrip_id").is_duplicated())
    if twice.height:
        problems.append("column 'utrip_id': " + _listing(twice, "trip listed more than once", "utrip_id"))
    trips = test_trip_ids(test)
    unknown = raw.filter(~pl.col("utrip_id").is_in(trips.implode()))
    if unknown.height:
        problems.append("column 'utrip_id': " + _listing(unknown, "not a test trip", "utrip_id"))
    missing = trips.filter(~trips.is_in(raw["utrip_id"].implode()))
    if missing.len():
        shown = ", ".join(map(repr, missing.head(MAX_LISTED).to_list()))
        problems.append(f"column 'utrip_id': {missing.len()} test trips have no row (e.g. {shown})")
    if problems:
        raise SubmissionError(f"{name}: " + "; ".join(problems))
    return typed.select("utrip_id", *[pl.col(f"_{c}").alias(c) for c in cities])


def build_submission(topk: pl.DataFrame, trips: pl.Series, fallback: list[int]) -> pl.DataFrame:
    """Top-4 per test trip from a top-k table (by rank), filled from ``fallback`` (popular cities,
    best first) where a trip has fewer than four distinct candidates (or none)."""
    if len(set(fallback)) < 4:
        raise ValueError("the popularity fallback needs at least four distinct cities")
    base = pl.DataFrame({"utrip_id": trips.cast(pl.Utf8)})
    cand = topk.select("utrip_id", "city_id", pl.col("rank").cast(pl.Float64))
    fill = base.join(
        pl.DataFrame({"city_id": fallback, "rank": [1e9 + i for i in range(len(fallback))]},
                     schema={"city_id": pl.Int64, "rank": pl.Float64}), how="cross")
    allc = (
        pl.concat([cand.join(base, on="utrip_id", how="semi"), fill])
        .filter(pl.col("city_id") > 0)
        .sort(["utrip_id", "rank"])
        .unique(["utrip_id", "city_id"], keep="first", maintain_order=True)
        .with_columns(pl.int_range(1, pl.len() + 1).over("utrip_id").alias("r"))
        .filter(pl.col("r") <= 4)
    )
    wide = allc.group_by("utrip_id", maintain_order=True).agg(pl.col("city_id"))
    out = wide.select("utrip_id", *[pl.col("city_id").list.get(i).alias(f"city_id_{i + 1}") for i in range(4)])
    return base.join(out, on="utrip_id", how="left").sort("utrip_id")


def write_submission(df: pl.DataFrame, path: Path | str, test: Path | str | pl.DataFrame) -> Path:
    """Write atomically (temp file, rename) and validate before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".csv")
    os.close(fd)
    try:
        df.select(SUBMISSION_COLUMNS).write_csv(tmp)
        validate_submission(tmp, test)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
