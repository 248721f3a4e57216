"""The official data contract: readers and validators for ``train_set.csv``, ``test_set.csv`` and
``ground_truth.csv`` exactly as published (Booking.com WSDM WebTour 2021 / ml-dataset-mdt).

Every problem is a :class:`DataError` naming the file, the line (1-based, header = line 1) and the
column, with the offending value; when many rows share a problem the first few are listed and the
rest counted. A file the fast CSV reader cannot parse (bad UTF-8, a row with more fields than the
header, an unterminated quote) is scanned line by line to name the offending line. Nothing is
dropped silently: the only row-removing policy (``data.duplicates: drop``) counts what it removes
and reports it in ``data_report.json``.

The challenge-era ``test_set.csv`` (the original WSDM WebTour 2021 download) carries two more
columns, ``row_num`` and ``total_rows``: they are accepted, checked for consistency (each trip
numbered 1..total_rows, total_rows its row count, the concealed row numbered last) and dropped, with
a note in the report. :data:`PUBLIC_MD5` holds the published checksums of the public release.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ..schema import OFFICIAL_COLUMNS, RESERVATIONS, TRUTH, TRUTH_COLUMNS, conform

MAX_LISTED = 5
INT_COLUMNS = ("user_id", "city_id", "affiliate_id")
DATE_COLUMNS = ("checkin", "checkout")


# The challenge-era test_set.csv's two more columns (user_id, checkin, checkout, device_class,
# affiliate_id, booker_country, utrip_id, row_num, total_rows, city_id, hotel_country).
CHALLENGE_TEST_COLUMNS = ("row_num", "total_rows")
# MD5 of the files of the public release (bookingcom/ml-dataset-mdt). Train and test as published;
# ground truth computed from the copy in ../shared/booking-mdt (taken from that repository).
PUBLIC_MD5 = {
    "train_set.csv": "4f343b12d76b28ec0f1899e4083a72a8",
    "test_set.csv": "2d068bea795cc4b798422ad1d80bd0c4",
    "ground_truth.csv": "0a57159879573b4c7c4f2cbec24b6691",
}


class DataError(ValueError):
    """Bad input data; the message names file, line and column."""


@dataclass
class LoadReport:
    """What a load did: rows read, rows removed by a policy (with why), columns ignored."""

    rows_read: dict[str, int] = field(default_factory=dict)
    rows_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"rows_read": self.rows_read, "rows_dropped": self.rows_dropped, "notes": self.notes}


def official_paths(cfg) -> dict[str, Path]:
    """Where the official files are expected for ``data.source: official``."""
    from ..config import ROOT

    base = Path(cfg.data.official_dir)
    base = base if base.is_absolute() else ROOT / base
    return {
        "train": base / "train_set.csv",
        "test": base / "test_set.csv",
        "truth": base / "ground_truth.csv",
    }


def _lines(df: pl.DataFrame, mask: pl.Expr, column: str, what: str, fname: str) -> None:
    """Raise a DataError listing the rows of ``df`` where ``mask`` holds."""
    bad = df.filter(mask)
    if bad.height == 0:
        return
    shown = ", ".join(
        f"line {r['_line']} ({column}={r[column]!r})" if column in bad.columns else f"line {r['_line']}"
        for r in bad.head(MAX_LISTED).iter_rows(named=True)
    )
    more = f" and {bad.height - MAX_LISTED} more rows" if bad.height > MAX_LISTED else ""
    raise DataError(f"{fname}: column '{column}': {what}: {shown}{more}")


def locate_csv_problem(path: Path) -> str | None:
    """Scan ``path`` line by line (streaming) for the first thing a CSV reader cannot take: bytes
    that are not UTF-8, a record with more fields than the header, an unterminated quote. Returns
    "line N[, column 'c']: what" or None when every line is readable."""
    import csv

    header: list[str] = []

    def lines():
        with open(path, "rb") as fh:
            for no, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    field = raw[: exc.start].count(b",")
                    col = f", column '{header[field]}'" if field < len(header) else ""
                    raise _Located(f"line {no}{col}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at position "
                                   f"{exc.start + 1} of the line); save the file as UTF-8") from None
                yield text.removeprefix("\ufeff") if no == 1 else text

    reader = csv.reader(lines(), strict=True)
    try:
        start = 1
        for record in reader:
            if not header:
                header = record
            elif len(record) > len(header):
                return (f"line {start}: {len(record)} fields, but the header has {len(header)} (first extra value "
                        f"{record[len(header)]!r} after column '{header[-1]}')")
            start = reader.line_num + 1
    except _Located as exc:
        return str(exc)
    except csv.Error as exc:
        return f"line {start}: {exc} (a quote opened here is not closed)"
    return None


class _Located(Exception):
    pass


def read_csv_text(path: Path, error: type[Exception] = DataError) -> pl.DataFrame:
    """Read a CSV with every column as text (a byte-order mark is accepted). Any failure is an
    ``error`` naming the file and, when the file cannot be parsed, the line (and column)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        return pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:
        raise error(f"{path.name}: file is empty") from None
    except pl.exceptions.PolarsError as exc:
        where = locate_csv_problem(path)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"{path.name}: {where}" if where else f"{path.name}: cannot be parsed as CSV: {first}") from None


def check_header(cols: list[str], expected: list[str], fname: str, optional: tuple[str, ...] = ()) -> None:
    """The header must hold every ``expected`` column (any order), nothing else but ``optional``."""
    missing = [c for c in expected if c not in cols]
    extra = [c for c in cols if c not in expected and c not in optional]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise DataError(f"{fname}: line 1 (header): {'; '.join(parts)}; expected {','.join(expected)}")


def _read_raw(path: Path, expected: list[str], report: LoadReport, optional: tuple[str, ...] = ()) -> pl.DataFrame:
    """Read a CSV as strings, with header checks and a ``_line`` column (file line numbers). Columns
    in ``optional`` are kept when present."""
    fname = path.name
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{fname}: file is empty (expected header {','.join(expected)})")
    df = read_csv_text(path)
    cols = list(df.columns)
    # A pandas-written copy carries an unnamed index column first; it is not data.
    if cols and cols[0] in ("", "Unnamed: 0") and all(c in cols[1:] for c in expected):
        df = df.drop(cols[0])
        report.notes.append(f"{fname}: ignored the unnamed leading index column")
        cols = cols[1:]
    check_header(cols, expected, fname, optional)
    if df.height == 0:
        raise DataError(f"{fname}: file has a header but no data rows")
    report.rows_read[fname] = df.height
    keep = expected + [c for c in optional if c in cols]
    return df.select(keep).with_row_index("_line", offset=2).with_columns(pl.col("_line").cast(pl.Int64))


def _typed_reservations(df: pl.DataFrame, fname: str, concealed_ok: bool) -> pl.DataFrame:
    """Parse and check types of a reservations table read as strings."""
    for c in OFFICIAL_COLUMNS:
        if c == "hotel_country" and concealed_ok:
            continue
        _lines(df, pl.col(c).is_null() | (pl.col(c).str.strip_chars() == ""), c, "empty value", fname)
    for c in INT_COLUMNS:
        # Accept "123" and "123.0" (pandas float export); anything else is an error.
        parsed = pl.col(c).str.strip_chars().str.replace(r"\.0+$", "").cast(pl.Int64, strict=False)
        df = df.with_columns(parsed.alias(f"_{c}"))
        _lines(df, pl.col(f"_{c}").is_null(), c, "not an integer", fname)
        _lines(df, pl.col(f"_{c}") < 0, c, "negative id", fname)
    for c in DATE_COLUMNS:
        parsed = pl.col(c).str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
        df = df.with_columns(parsed.alias(f"_{c}"))
        _lines(df, pl.col(f"_{c}").is_null(), c, "not a date YYYY-MM-DD", fname)
    _lines(df, pl.col("_checkout") < pl.col("_checkin"), "checkout", "checkout before checkin", fname)
    out = df.select(
        pl.col("_user_id").alias("user_id"),
        pl.col("_checkin").alias("checkin"),
        pl.col("_checkout").alias("checkout"),
        pl.col("_city_id").alias("city_id"),
        pl.col("device_class").str.strip_chars(),
        pl.col("_affiliate_id").alias("affiliate_id"),
        pl.col("booker_country").str.strip_chars(),
        pl.col("hotel_country").str.strip_chars().replace("", None),
        pl.col("utrip_id").str.strip_chars(),
        pl.col("_line").alias("row"),
    )
    # One trip, one user.
    users = out.group_by("utrip_id").agg(pl.col("user_id").n_unique().alias("n"), pl.col("row").min())
    multi = users.filter(pl.col("n") > 1).sort("row")
    if multi.height:
        r = multi.row(0, named=True)
        raise DataError(
            f"{fname}: column 'user_id': trip {r['utrip_id']!r} (first at line {r['row']}) has rows of "
            f"{r['n']} different users ({multi.height} such trips)"
        )
    return out


def _challenge_columns(raw: pl.DataFrame, typed: pl.DataFrame, fname: str, report: LoadReport) -> None:
    """Check the challenge-era ``row_num`` / ``total_rows`` of a test file against its trips (each
    trip numbered 1..total_rows, total_rows = its row count, the concealed row numbered last); the
    caller drops them. Raises a DataError naming line and column; notes what it did."""
    have = [c for c in CHALLENGE_TEST_COLUMNS if c in raw.columns]
    if len(have) != len(CHALLENGE_TEST_COLUMNS):
        lacks = [c for c in CHALLENGE_TEST_COLUMNS if c not in have]
        raise DataError(f"{fname}: line 1 (header): column {have[0]!r} without {lacks[0]!r}; the challenge-era "
                        f"test_set.csv has both (or leave both out)")
    df = raw.select("_line", *CHALLENGE_TEST_COLUMNS)
    for c in CHALLENGE_TEST_COLUMNS:
        df = df.with_columns(pl.col(c).str.strip_chars().cast(pl.Int64, strict=False).alias(f"_{c}"))
        _lines(df, pl.col(f"_{c}").is_null(), c, "not an integer", fname)
        _lines(df, pl.col(f"_{c}") < 1, c, "must be >= 1", fname)
    d = typed.select("utrip_id", "city_id", "checkin", pl.col("row").alias("_line")).join(
        df.select("_line", "row_num", "total_rows", "_row_num", "_total_rows"), on="_line").sort("_line")
    d = d.with_columns(pl.len().over("utrip_id").alias("_n"))
    _lines(d, pl.col("_total_rows") != pl.col("_n"), "total_rows", "not the number of rows of its trip", fname)
    _lines(d, pl.col("_row_num") > pl.col("_total_rows"), "row_num", "larger than total_rows", fname)
    _lines(d, pl.col("_row_num").is_duplicated().over("utrip_id"), "row_num", "repeated within its trip", fname)
    _lines(d, (pl.col("city_id") == 0) & (pl.col("_row_num") != pl.col("_total_rows")), "row_num",
           "the concealed row (city_id 0) must be numbered last (row_num = total_rows)", fname)
    # The pipeline orders stays by checkin; say so where row_num orders a trip differently.
    by_num = d.sort("utrip_id", "_row_num").with_columns(
        (pl.col("checkin") < pl.col("checkin").shift(1).over("utrip_id")).fill_null(False).alias("_back"))
    n_back = by_num.filter(pl.col("_back"))["utrip_id"].n_unique()
    report.notes.append(
        f"{fname}: the challenge-era columns row_num and total_rows were checked (each trip numbered "
        f"1..total_rows, the concealed row last) and dropped"
        + (f"; in {n_back} trips row_num orders the stays differently from checkin (checkin is used)" if n_back else "")
    )


def _duplicates(df: pl.DataFrame, fname: str, policy: str, report: LoadReport) -> pl.DataFrame:
    keys = [c for c in df.columns if c != "row"]
    dup = df.filter(pl.struct(keys).is_duplicated())
    if dup.height == 0:
        return df
    firsts = dup.group_by(keys, maintain_order=True).agg(pl.col("row").sort())
    if policy == "error":
        shown = "; ".join(
            f"lines {', '.join(map(str, r['row'][:4]))}" for r in firsts.head(MAX_LISTED).iter_rows(named=True)
        )
        raise DataError(
            f"{fname}: column '*' (whole row): {dup.height} rows are exact duplicates of another row: {shown}"
            f" (set data.duplicates: drop to keep the first of each, counted)"
        )
    keep = df.filter(~pl.struct(keys).is_duplicated() | pl.struct(keys).is_first_distinct())
    n = df.height - keep.height
    report.rows_dropped.setdefault(fname, {})["exact duplicate row"] = n
    report.notes.append(f"{fname}: dropped {n} exact duplicate rows (data.duplicates: drop)")
    return keep


def read_reservations(path: Path | str, kind: str, duplicates: str = "error", report: LoadReport | None = None) -> pl.DataFrame:
    """Read and validate ``train_set.csv`` (kind="train") or ``test_set.csv`` (kind="test").

    Returns the RESERVATIONS schema, sorted by trip and checkin.
    """
    path = Path(path)
    report = report if report is not None else LoadReport()
    fname = path.name
    raw = _read_raw(path, OFFICIAL_COLUMNS, report, CHALLENGE_TEST_COLUMNS if kind == "test" else ())
    df = _typed_reservations(raw, fname, concealed_ok=(kind == "test"))
    if any(c in raw.columns for c in CHALLENGE_TEST_COLUMNS):
        _challenge_columns(raw, df, fname, report)
    df = _duplicates(df, fname, duplicates, report)
    df = df.sort(["utrip_id", "checkin", "row"])
    if kind == "train":
        _lines(df.rename({"row": "_line"}), pl.col("city_id") == 0, "city_id", "city_id 0 (the concealed marker) in the train set", fname)
    else:
        d = df.rename({"row": "_line"})
        _lines(d, (pl.col("city_id") == 0) & pl.col("hotel_country").is_not_null(), "hotel_country",
               "the concealed row (city_id 0) must have an empty hotel_country", fname)
        _lines(d, (pl.col("city_id") != 0) & pl.col("hotel_country").is_null(), "hotel_country", "empty value", fname)
        per = d.group_by("utrip_id", maintain_order=True).agg(
            (pl.col("city_id") == 0).sum().alias("n_hidden"),
            pl.col("_line").min().alias("first_line"),
            pl.col("_line").filter(pl.col("city_id") == 0).first().alias("hidden_line"),
            pl.col("checkin").filter(pl.col("city_id") == 0).first().alias("hidden_checkin"),
            pl.col("checkin").max().alias("max_checkin"),
            (pl.col("checkin") == pl.col("checkin").max()).sum().alias("n_at_max"),
        )
        none = per.filter(pl.col("n_hidden") == 0)
        if none.height:
            r = none.sort("first_line").row(0, named=True)
            raise DataError(
                f"{fname}: column 'city_id': test trip {r['utrip_id']!r} (from line {r['first_line']}) has no "
                f"concealed row (city_id 0); {none.height} such trips"
            )
        two = per.filter(pl.col("n_hidden") > 1)
        if two.height:
            r = two.sort("first_line").row(0, named=True)
            raise DataError(
                f"{fname}: column 'city_id': test trip {r['utrip_id']!r} (from line {r['first_line']}) has "
                f"{r['n_hidden']} concealed rows (city_id 0), expected exactly one; {two.height} such trips"
            )
        notlast = per.filter((pl.col("hidden_checkin") < pl.col("max_checkin")) | (pl.col("n_at_max") > 1))
        if notlast.height:
            r = notlast.sort("hidden_line").row(0, named=True)
            raise DataError(
                f"{fname}: column 'checkin': line {r['hidden_line']}: the concealed row of trip {r['utrip_id']!r} "
                f"is not the trip's last by checkin ({notlast.height} such trips)"
            )
    counts = df.group_by("utrip_id").len()
    if counts.filter(pl.col("len") < 2).height:
        short = counts.filter(pl.col("len") < 2).sort("utrip_id")
        first = df.filter(pl.col("utrip_id") == short["utrip_id"][0])["row"][0]
        raise DataError(
            f"{fname}: column 'utrip_id': trip {short['utrip_id'][0]!r} (line {first}) has a single row; "
            f"a trip needs at least 2 ({short.height} such trips)"
        )
    return conform(df, RESERVATIONS, fname)


def read_truth(path: Path | str, report: LoadReport | None = None) -> pl.DataFrame:
    """Read and validate ``ground_truth.csv`` (one row per test trip)."""
    path = Path(path)
    report = report if report is not None else LoadReport()
    fname = path.name
    raw = _read_raw(path, TRUTH_COLUMNS, report)
    _lines(raw, pl.col("utrip_id").is_null() | (pl.col("utrip_id") == ""), "utrip_id", "empty value", fname)
    df = raw.with_columns(pl.col("city_id").str.strip_chars().cast(pl.Int64, strict=False).alias("_city"))
    _lines(df, pl.col("_city").is_null() | (pl.col("_city") <= 0), "city_id", "not a positive integer", fname)
    dup = df.filter(pl.col("utrip_id").is_duplicated())
    _lines(dup, pl.lit(True), "utrip_id", "trip listed more than once", fname)
    out = df.select("utrip_id", pl.col("_city").alias("city_id"), pl.col("hotel_country").str.strip_chars())
    return conform(out, TRUTH, fname)


def check_consistency(train: pl.DataFrame, test: pl.DataFrame, truth: pl.DataFrame | None,
                      names: tuple[str, str, str] = ("train_set.csv", "test_set.csv", "ground_truth.csv")) -> None:
    """Cross-file rules: no trip in both train and test; truth covers exactly the test trips."""
    both = test.join(train.select("utrip_id").unique(), on="utrip_id", how="semi").sort("row")
    if both.height:
        r = both.row(0, named=True)
        n = both["utrip_id"].n_unique()
        raise DataError(
            f"{names[1]}: column 'utrip_id': line {r['row']}: trip {r['utrip_id']!r} is also in {names[0]} "
            f"({n} trips in both files)"
        )
    if truth is None:
        return
    test_trips = test.select("utrip_id").unique()
    unknown = truth.join(test_trips, on="utrip_id", how="anti")
    if unknown.height:
        raise DataError(
            f"{names[2]}: column 'utrip_id': trip {unknown['utrip_id'][0]!r} is not a test trip "
            f"({unknown.height} unknown trips)"
        )
    missing = test_trips.join(truth, on="utrip_id", how="anti").sort("utrip_id")
    if missing.height:
        raise DataError(
            f"{names[2]}: column 'utrip_id': test trip {missing['utrip_id'][0]!r} has no ground-truth row "
            f"({missing.height} test trips missing)"
        )


def md5_file(path: Path) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def public_release_check(paths: list[Path], report: LoadReport) -> dict[str, dict]:
    """MD5 of each file against :data:`PUBLIC_MD5`; a note for every file the release has."""
    out = {}
    for path in paths:
        md5 = md5_file(path)
        known = PUBLIC_MD5.get(path.name)
        out[path.name] = {"md5": md5, "public_release": md5 == known if known else None}
        if known and md5 == known:
            report.notes.append(f"{path.name}: MD5 {md5} matches the public release (bookingcom/ml-dataset-mdt)")
        elif known:
            report.notes.append(f"{path.name}: MD5 {md5} differs from the public release's ({known}): a modified "
                                f"or another copy")
    return out


def load_official(train_path: Path, test_path: Path, truth_path: Path | None, duplicates: str = "error"):
    """Read, validate and cross-check the three files. Returns (train, test, truth or None, report)."""
    report = LoadReport()
    train = read_reservations(train_path, "train", duplicates, report)
    test = read_reservations(test_path, "test", duplicates, report)
    truth = read_truth(truth_path, report) if truth_path is not None and Path(truth_path).exists() else None
    check_consistency(train, test, truth, (Path(train_path).name, Path(test_path).name,
                                           Path(truth_path).name if truth_path else "ground_truth.csv"))
    return train, test, truth, report
