"""Calibration report: the statistics of a dataset in the official format against the real ones.

:func:`calibration_table` computes every statistic from the three official CSVs alone
(``train_set.csv``, ``test_set.csv``, ``ground_truth.csv``), never from generator internals, so
it runs unchanged on the real files; only the ceiling rows read ``oracle.parquet`` (and say
``n/a`` when it is absent). The targets are the real data's figures (full scale).

Definitions
  * "rows" and "trips" of train/test count the CSV rows / distinct ``utrip_id``. Trip-structure
    statistics (lengths, nights, spans, gaps, months, countries per trip) use train + test rows,
    with each test trip's concealed row completed from the ground truth where a city or country
    is needed (dates of the concealed row are in test_set.csv anyway).
  * nights = checkout - checkin; trip span = last checkout - first checkin (days); a trip is
    "fully consecutive" when every check-in equals the previous checkout.
  * final-city statistics are over the ground truth (one row per test trip).
  * popular-4 baseline: the 4 most frequent cities over all train rows (ties: smaller city_id),
    predicted for every test trip. Previous-city baseline: for each test trip, the 4 most frequent
    next cities after its last known city, counted over consecutive pairs of train trips and of
    the known rows of test trips (ties: smaller city_id), backfilled by the popular-4 list.
    "Last two cities" baseline: the same keyed on the last two known cities, then backed off to
    the previous-city list. accuracy@4 = share of test trips whose true city is among the 4.
  * ceiling (expected) = mean over test trips of the oracle's top-4 probability mass; realized =
    share of test trips whose true city is in the oracle's top 4.

Scale: count-like rows (rows, trips, distinct cities/countries/affiliates/final cities, maxima,
and the absolute-rank top-100/top-1000 final-city shares) depend on the data size and are only
checked at ``scale="full"``; at other scales they are shown with tolerance ``n/a (scale ...)``
and pass. Every other row (shares, means, baselines, ceilings) is checked at every scale.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import polars as pl

__all__ = ["calibration_table", "run_calibration", "format_table", "row_margin", "TARGETS"]

_COLUMNS = {
    "user_id": pl.Int64, "checkin": pl.Utf8, "checkout": pl.Utf8, "city_id": pl.Int64,
    "device_class": pl.Utf8, "affiliate_id": pl.Int64, "booker_country": pl.Utf8,
    "hotel_country": pl.Utf8, "utrip_id": pl.Utf8,
}

# Real-data figures (full scale).
TARGETS = {
    "train_rows": 1_166_835, "train_trips": 217_686, "test_trips": 70_662,
    "distinct_cities": 39_901, "hotel_countries": 195,
    "market_shares": (45.9, 24.5, 20.2, 6.9, 2.5),
    "device_shares": {"desktop": 64.6, "mobile": 28.4, "tablet": 7.0},
    "affiliates": 3_254, "affiliate_top5": 57.0,
    "length_shares": {"4": 45.1, "5": 22.9, "6": 12.6, "7-8": 11.7, "9+": 7.4},
    "length_mean": 5.36, "length_max": (30, 48),
    "nights_mean": 1.74, "nights_median": 1, "nights_max": 30,
    "span_mean": 9.32, "span_mode": (6, 8),
    "consecutive": 96.0,
    "months": {"Jul": (7, 14.5), "Aug": (8, 19.6), "Sep": (9, 12.2)},
    "one_country": 72.2, "countries_per_trip": 1.41,
    "final_top": {1: (1.8, 0.5), 4: (5.7, 1.0), 100: (39.0, 4.0), 1000: (73.0, 4.0)},
    "final_distinct": 10_391,
    "final_country_top": {1: (10.7, 2.0), 10: (60.2, 5.0)},
    "user_overlap": 14.0,
    "popular4": 0.0527, "prev_city": 0.4363,
    "ceiling_gap": 0.18, "ceiling_range": (0.62, 0.75), "last_two_gap": 0.02,
}


def _read(path: Path) -> pl.DataFrame:
    df = pl.read_csv(path, schema_overrides=_COLUMNS, columns=list(_COLUMNS))
    return df.with_columns(pl.col("checkin").str.to_date(), pl.col("checkout").str.to_date())


def _load(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    train = _read(data_dir / "train_set.csv").sort(["utrip_id", "checkin"])
    test = _read(data_dir / "test_set.csv").sort(["utrip_id", "checkin"])
    truth = pl.read_csv(data_dir / "ground_truth.csv",
                        schema_overrides={"utrip_id": pl.Utf8, "city_id": pl.Int64,
                                          "hotel_country": pl.Utf8})
    return train, test, truth


def _fill(first: list[int], *fallbacks: list[int]) -> list[int]:
    out: list[int] = []
    for lst in (first, *fallbacks):
        for c in lst:
            if c not in out:
                out.append(c)
                if len(out) == 4:
                    return out
    return out


def baselines(train: pl.DataFrame, test: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float]:
    """accuracy@4 of the popular-4, previous-city and last-two-cities baselines on test."""
    pop = train.group_by("city_id").len().sort(["len", "city_id"], descending=[True, False])
    pop4 = pop["city_id"].head(4).to_list()
    known = test.filter(pl.col("city_id") != 0)
    seq = pl.concat([train.select("utrip_id", "checkin", "city_id"),
                     known.select("utrip_id", "checkin", "city_id")]).sort(["utrip_id", "checkin"])
    seq = seq.with_columns(
        pl.col("city_id").shift(-1).over("utrip_id").alias("nxt"),
        pl.col("city_id").shift(1).over("utrip_id").alias("p2"),
    ).filter(pl.col("nxt").is_not_null())

    def table(keys: list[str]) -> dict:
        cnt = (seq.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
               .group_by([*keys, "nxt"]).len()
               .sort([*keys, "len", "nxt"], descending=[*([False] * len(keys)), True, False])
               .group_by(keys, maintain_order=True).head(4)
               .group_by(keys, maintain_order=True).agg(pl.col("nxt")))
        ks = list(zip(*(cnt[k].to_list() for k in keys)))
        return dict(zip(ks, cnt["nxt"].to_list()))

    nxt1, nxt2 = table(["city_id"]), table(["p2", "city_id"])
    last = (known.group_by("utrip_id", maintain_order=True)
            .agg(pl.col("city_id").last().alias("c1"), pl.col("city_id").slice(-2, 1).first()
                 .alias("c2"), pl.len().alias("n"))
            .join(truth.select("utrip_id", pl.col("city_id").alias("t")), on="utrip_id"))
    hits = {"popular4": 0, "prev_city": 0, "last_two": 0}
    for c1, c2, n, t in last.select("c1", "c2", "n", "t").iter_rows():
        prev = _fill(nxt1.get((c1,), []), pop4)
        two = _fill(nxt2.get((c2, c1), []) if n >= 2 else [], prev)
        hits["popular4"] += t in pop4
        hits["prev_city"] += t in prev
        hits["last_two"] += t in two
    n = max(truth.height, 1)
    return {k: v / n for k, v in hits.items()}


def _row(stat: str, value, target, tol: str, ok: bool) -> dict:
    if isinstance(value, np.generic):  # plain Python numbers (JSON-friendly)
        value = value.item()
    return {"statistic": stat, "value": value, "target": target, "tolerance": tol, "pass": bool(ok)}


def calibration_table(data_dir: Path | str, scale: str = "full") -> list[dict]:
    """Rows {"statistic", "value", "target", "tolerance", "pass"} for the dataset in ``data_dir``.

    ``scale`` names the preset the data was generated at ("full" for real-size data); count-like
    rows are only checked at full scale (see the module docstring).
    """
    data_dir = Path(data_dir)
    train, test, truth = _load(data_dir)
    T = TARGETS
    full = scale == "full"
    rows: list[dict] = []

    def near(stat, value, target, tol, unit=""):
        value = float(value)
        rows.append(_row(stat, round(value, 4), target, f"±{tol}{unit}", abs(value - target) <= tol))

    def count(stat, value, target, rel=None, lo=None, hi=None):
        if not full:
            rows.append(_row(stat, value, target, f"n/a (scale {scale})", True))
        elif rel is not None:
            rows.append(_row(stat, value, target, f"±{rel:.0%}", abs(value - target) <= rel * target))
        else:
            rows.append(_row(stat, value, f"{lo}-{hi}", "range", lo <= value <= hi))

    # --- sizes
    count("train rows", train.height, T["train_rows"], rel=0.02)
    count("train trips", train["utrip_id"].n_unique(), T["train_trips"], rel=0.02)
    count("test trips", test["utrip_id"].n_unique(), T["test_trips"], rel=0.02)
    cities = pl.concat([train["city_id"], test["city_id"].filter(test["city_id"] != 0)])
    count("distinct cities in train+test", cities.n_unique(), T["distinct_cities"], rel=0.05)
    countries = pl.concat([train["hotel_country"], test["hotel_country"].drop_nulls()])
    countries = countries.filter(countries != "")
    count("distinct hotel countries", countries.n_unique(), T["hotel_countries"], rel=0.05)

    # --- complete rows (concealed test rows filled from the ground truth)
    test_full = (test.join(truth.select("utrip_id", pl.col("city_id").alias("_tc"),
                                        pl.col("hotel_country").alias("_th")), on="utrip_id", how="left")
                 .with_columns(
                     pl.when(pl.col("city_id") == 0).then(pl.col("_tc")).otherwise(pl.col("city_id"))
                     .alias("city_id"),
                     pl.when(pl.col("city_id") == 0).then(pl.col("_th"))
                     .otherwise(pl.col("hotel_country")).alias("hotel_country"))
                 .drop("_tc", "_th"))
    allr = pl.concat([train, test_full]).sort(["utrip_id", "checkin"])
    n_rows = allr.height

    # --- markets, devices, affiliates (row shares over train + test)
    ms = allr.group_by("booker_country").len().sort("len", descending=True)["len"].to_numpy()
    ms = 100 * ms / n_rows
    for i, tgt in enumerate(T["market_shares"]):
        near(f"booker market #{i + 1} row share (%)", float(ms[i]) if i < len(ms) else 0.0, tgt, 2, " pts")
    dev = dict(allr.group_by("device_class").len().iter_rows())
    for d, tgt in T["device_shares"].items():
        near(f"device {d} share (%)", 100 * dev.get(d, 0) / n_rows, tgt, 2, " pts")
    aff = allr.group_by("affiliate_id").len().sort("len", descending=True)["len"].to_numpy()
    count("distinct affiliates", len(aff), T["affiliates"], rel=0.10)
    near("rows in the top-5 affiliates (%)", 100 * aff[:5].sum() / n_rows, T["affiliate_top5"], 5, " pts")

    # --- trips
    trips = allr.group_by("utrip_id").agg(
        pl.len().alias("n"),
        (pl.col("checkout").max() - pl.col("checkin").min()).dt.total_days().alias("span"),
        (pl.col("checkin") == pl.col("checkout").shift(1)).slice(1).all().alias("consec"),
        pl.col("hotel_country").n_unique().alias("n_ctry"),
    )
    n = trips["n"].to_numpy()
    bins = {"4": n == 4, "5": n == 5, "6": n == 6, "7-8": (n >= 7) & (n <= 8), "9+": n >= 9}
    for k, tgt in T["length_shares"].items():
        near(f"trips of length {k} (%)", 100 * bins[k].mean(), tgt, 2, " pts")
    near("mean trip length", float(n.mean()), T["length_mean"], 0.1)
    count("max trip length", int(n.max()), "30-48", lo=T["length_max"][0], hi=T["length_max"][1])
    nights = (allr["checkout"] - allr["checkin"]).dt.total_days().to_numpy()
    near("nights per stay: mean", float(nights.mean()), T["nights_mean"], 0.1)
    med = float(np.median(nights))
    rows.append(_row("nights per stay: median", med, T["nights_median"], "exact", med == T["nights_median"]))
    count("nights per stay: max", int(nights.max()), T["nights_max"], rel=0.0)
    span = trips["span"].to_numpy()
    near("trip span (days): mean", float(span.mean()), T["span_mean"], 0.5)
    mode = int(np.bincount(span).argmax())
    lo, hi = T["span_mode"]
    rows.append(_row("trip span (days): mode", mode, 7, f"{lo}-{hi}", lo <= mode <= hi))
    near("trips fully consecutive (%)", 100 * trips["consec"].mean(), T["consecutive"], 1.5, " pts")
    month = allr["checkin"].dt.month().to_numpy()
    for name, (m, tgt) in T["months"].items():
        near(f"check-in month {name} (%)", 100 * (month == m).mean(), tgt, 2, " pts")
    nc = trips["n_ctry"].to_numpy()
    near("trips within one hotel country (%)", 100 * (nc == 1).mean(), T["one_country"], 4, " pts")
    near("distinct countries per trip", float(nc.mean()), T["countries_per_trip"], 0.1)

    # --- final cities (ground truth)
    fc = truth.group_by("city_id").len().sort("len", descending=True)["len"].to_numpy()
    cum = np.cumsum(fc) / max(truth.height, 1)
    for k, (tgt, tol) in T["final_top"].items():
        v = 100 * float(cum[min(k, len(cum)) - 1])
        if k >= 100 and not full:
            rows.append(_row(f"final city top-{k} share (%)", round(v, 4), tgt, f"n/a (scale {scale})", True))
        else:
            near(f"final city top-{k} share (%)", v, tgt, tol, " pts")
    count("distinct final cities in test", len(fc), T["final_distinct"], rel=0.15)
    fk = truth.group_by("hotel_country").len().sort("len", descending=True)["len"].to_numpy()
    cumk = np.cumsum(fk) / max(truth.height, 1)
    for k, (tgt, tol) in T["final_country_top"].items():
        near(f"final hotel country top-{k} share (%)", 100 * float(cumk[min(k, len(cumk)) - 1]),
             tgt, tol, " pts")
    tu = test["user_id"].unique().to_numpy()
    near("test users also in train (%)", 100 * float(np.isin(tu, train["user_id"].to_numpy()).mean()),
         T["user_overlap"], 3, " pts")

    # --- baselines
    b = baselines(train, test, truth)
    near("popular-4 baseline (acc@4)", b["popular4"], T["popular4"], 0.01)
    near("previous-city baseline (acc@4)", b["prev_city"], T["prev_city"], 0.02)
    gap2 = b["last_two"] - b["prev_city"]
    rows.append(_row("last-two-cities minus previous-city baseline", round(gap2, 4),
                     T["last_two_gap"], "at least", gap2 >= T["last_two_gap"]))

    # --- ceilings (generator's oracle; n/a on real data)
    oracle = data_dir / "oracle.parquet"
    if oracle.exists():
        orc = pl.read_parquet(oracle).filter(pl.col("rank") <= 4)
        ntest = max(truth.height, 1)
        expected = float(orc["prob"].sum()) / ntest
        realized = orc.join(truth.select("utrip_id", pl.col("city_id").alias("t")), on="utrip_id") \
            .filter(pl.col("city_id") == pl.col("t")).height / ntest
        lo, hi = T["ceiling_range"]
        rows.append(_row("ceiling (expected, oracle top-4 mass)", round(expected, 4), f"{lo}-{hi}",
                         "range", lo <= expected <= hi))
        gap = expected - b["prev_city"]
        rows.append(_row("ceiling (expected) minus previous-city baseline", round(gap, 4),
                         T["ceiling_gap"], "at least", gap >= T["ceiling_gap"]))
        tol = max(0.03, 4 * math.sqrt(max(expected * (1 - expected), 1e-9) / ntest))
        rows.append(_row("ceiling (realized, truth in oracle top-4)", round(realized, 4),
                         round(expected, 4), f"±{tol:.3f} of expected", abs(realized - expected) <= tol))
    else:
        for stat in ("ceiling (expected, oracle top-4 mass)",
                     "ceiling (expected) minus previous-city baseline",
                     "ceiling (realized, truth in oracle top-4)"):
            rows.append(_row(stat, "n/a", "-", "n/a (no oracle.parquet)", True))
    return rows


def row_margin(row: dict) -> float | None:
    """How much of its tolerance a row has left: 1 = on target, 0 = on the edge, < 0 = failing.

    ``±x`` rows: ``1 - |value - target| / x`` (``±x%`` on count rows: ``x`` relative to the
    target); range rows (``lo-hi`` in the target or the tolerance): 1 anywhere inside the range
    (every value there meets the spec), below 0 outside, by the distance to the range in units
    of its half-width; ``at least`` rows: ``(value - target) / |target|``; ``exact`` rows: 1 or
    -1. ``None`` for rows that are not checked (``n/a``).
    """
    tol, v, t = str(row["tolerance"]), row["value"], row["target"]
    if tol.startswith("n/a") or not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    v = float(v)
    if tol == "exact":
        return 1.0 if row["pass"] else -1.0
    if tol == "at least":
        return (v - float(t)) / abs(float(t))
    if tol == "range" or "-" in tol and not tol.startswith("±"):
        lo, hi = (float(x) for x in (t if tol == "range" else tol).split("-"))
        if lo <= v <= hi:
            return 1.0
        return -max(lo - v, v - hi) / max((hi - lo) / 2, 1e-12)
    if tol.startswith("±"):
        body = tol[1:].split()[0]
        if body.endswith("%"):  # relative (count rows)
            width = float(body[:-1]) / 100 * abs(float(t))
        else:
            width = float(body)
        if width == 0:
            return 1.0 if row["pass"] else -1.0
        return 1.0 - abs(v - float(t)) / width
    return None


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (tuple, list)):
        return "/".join(_fmt(x) for x in v)
    return str(v)


def format_table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| statistic | value | target | tolerance | pass |", "|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['statistic']} | {_fmt(r['value'])} | {_fmt(r['target'])} | "
                     f"{r['tolerance']} | {_fmt(r['pass'])} |")
    n_ok = sum(r["pass"] for r in rows)
    lines.append("")
    lines.append(f"{n_ok}/{len(rows)} rows pass.")
    return "\n".join(lines)


def run_calibration(data_dir: Path | str, out: TextIO = sys.stdout, scale: str = "full") -> int:
    """Print the calibration table of ``data_dir``; return 0 iff every row passes."""
    rows = calibration_table(data_dir, scale=scale)
    gen = Path(data_dir) / "generator.json"
    if gen.exists():
        info = json.loads(gen.read_text())
        out.write(f"generator: preset {info.get('preset')}, seed {info.get('seed')}\n")
    out.write(f"calibration of {data_dir} (scale: {scale})\n\n")
    out.write(format_table(rows) + "\n")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":  # pragma: no cover - the project CLI wires this properly
    raise SystemExit(run_calibration(sys.argv[1], scale=sys.argv[2] if len(sys.argv) > 2 else "full"))
