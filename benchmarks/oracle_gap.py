"""Oracle-expected accuracy: compare runs on the synthetic data with a fraction of CV's noise, and
see where a model's top four lose against the generator's own.

    python benchmarks/oracle_gap.py --experiments medium-georev,medium-g3 [--model xgb_ranker] [--name NAME] [--no-write]

The generator knows each trip's last-step distribution (``data/oracle_train.parquet`` for the train
trips: its top 50 cities and their probabilities). The *oracle-expected* accuracy@4 of a model's
top four on a trip is the probability mass the generator puts on them: what accuracy@4 would be
averaged over every final city the generator could have drawn for that trip. Over the out-of-fold
trips it estimates the same quantity as CV accuracy@4 without the noise of the one city drawn per
trip, so two variants on the same trips differ with a standard error of a few 1e-4 instead of
about 2e-3 (medium). It needs the generator, so it exists only for synthetic data; it reads train
trips only (never the test ground truth) and is a diagnostic: models are still chosen by CV.

For each experiment (the first is the reference; all must hold the same data): the model's CV
accuracy@4 (from its metrics), its oracle-expected accuracy and the paired difference to the
reference with its standard error, and a decomposition of what the oracle's top four hold that the
model's miss, by the kind of city (the trip's first city; another country than the last stay; in
the last stay's country with no, 1-2 or 3+ transitions from the last stay; not among the first
``candidates.max_pool`` of the candidate pool). Reads only artifacts; trains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

KINDS = ("not in the feature pool", "first city", "other country", "same country, no transition",
         "same country, 1-2 transitions", "same country, 3+ transitions")


def expected(exp: Path, model: str, oracle):
    """(utrip_id, e_acc): the oracle's mass on ``model``'s out-of-fold top four, per trip."""
    import polars as pl

    top = pl.read_parquet(exp / model / "oof_topk.parquet", columns=["utrip_id", "city_id", "rank"]).filter(pl.col("rank") <= 4)
    trips = top.select("utrip_id").unique()
    mass = top.join(oracle, on=["utrip_id", "city_id"], how="left").group_by("utrip_id").agg(
        pl.col("prob").fill_null(0.0).sum().alias("e_acc"))
    return trips.join(mass, on="utrip_id", how="left").with_columns(pl.col("e_acc").fill_null(0.0))


def kinds(exp: Path, model: str, oracle) -> dict[str, tuple[float, float]]:
    """Per kind of city (:data:`KINDS`): (oracle's top-4 mass, the model's top-4 mass), per trip."""
    import polars as pl

    cols = ["utrip_id", "city_id", "t1_count", "cand_is_first", "cand_same_country_last"]
    cand = pl.read_parquet(exp / "candidates" / "oof_candidates.parquet", columns=cols)
    ours = pl.read_parquet(exp / model / "oof_topk.parquet", columns=["utrip_id", "city_id", "rank"]).filter(pl.col("rank") <= 4)
    n = ours["utrip_id"].n_unique()
    d = (
        oracle.join(cand, on=["utrip_id", "city_id"], how="left")
        .join(ours.select("utrip_id", "city_id", pl.lit(True).alias("ours")), on=["utrip_id", "city_id"], how="left")
        .with_columns(
            pl.when(pl.col("t1_count").is_null() & pl.col("cand_is_first").is_null()).then(pl.lit(KINDS[0]))
            .when(pl.col("cand_is_first") == 1).then(pl.lit(KINDS[1]))
            .when(pl.col("cand_same_country_last") != 1).then(pl.lit(KINDS[2]))
            .when(pl.col("t1_count").fill_null(0) == 0).then(pl.lit(KINDS[3]))
            .when(pl.col("t1_count") <= 2).then(pl.lit(KINDS[4]))
            .otherwise(pl.lit(KINDS[5])).alias("kind"))
    )
    g = d.group_by("kind").agg(
        (pl.col("prob") * (pl.col("rank") <= 4)).sum().alias("oracle"),
        (pl.col("prob") * pl.col("ours").fill_null(False)).sum().alias("model"),
    )
    got = {r["kind"]: (r["oracle"] / n, r["model"] / n) for r in g.iter_rows(named=True)}
    return {k: got.get(k, (0.0, 0.0)) for k in KINDS}


def main() -> int:
    import numpy as np
    import polars as pl

    from bench import write_section

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", required=True, help="comma list; the first is the reference")
    ap.add_argument("--model", default="xgb_ranker")
    ap.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    ap.add_argument("--name", default="oracle-gap", help="BENCHMARKS.md section")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    names = [e.strip() for e in args.experiments.split(",") if e.strip()]
    root = Path(args.artifacts)
    for e in names:
        for need in (root / e / "data" / "oracle_train.parquet", root / e / args.model / "oof_topk.parquet"):
            if not need.exists():
                raise SystemExit(f"oracle_gap: {need} is missing (synthetic data and a finished {args.model} stage are needed)")
    oracle = pl.read_parquet(root / names[0] / "data" / "oracle_train.parquet", columns=["utrip_id", "city_id", "prob", "rank"])
    per = {e: expected(root / e, args.model, oracle.select("utrip_id", "city_id", "prob")) for e in names}
    ref = per[names[0]]
    ceiling = float(oracle.filter(pl.col("rank") <= 4)["prob"].sum()) / oracle["utrip_id"].n_unique()
    rows = []
    for e in names:
        both = ref.join(per[e], on="utrip_id", suffix="_b")
        if both.height != ref.height or both.height != per[e].height:
            raise SystemExit(f"oracle_gap: {e} and {names[0]} do not hold the same out-of-fold trips "
                             f"({per[e].height:,} against {ref.height:,})")
        diff = (both["e_acc_b"] - both["e_acc"]).to_numpy()
        metrics = json.loads((root / e / args.model / "metrics.json").read_text())["models"][args.model]
        rows.append((e, metrics["cv_acc4"], metrics.get("test_acc4"), float(per[e]["e_acc"].mean()), float(diff.mean()),
                     float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0, kinds(root / e, args.model, oracle)))
    n = ref.height
    lines = [f"Model `{args.model}`, {n:,} out-of-fold trips; the oracle's own top four hold {ceiling:.4f} of the mass "
             f"(its expected accuracy@4).", "",
             "| experiment | CV acc@4 | test acc@4 (report) | oracle-expected acc@4 | vs first | SE |",
             "|---|---|---|---|---|---|"]
    for e, cv, test, ea, d, se, _ in rows:
        lines.append(f"| {e} | {cv:.4f} | {test:.4f} | {ea:.4f} | {d:+.4f} | {se:.4f} |" if test is not None else
                     f"| {e} | {cv:.4f} | - | {ea:.4f} | {d:+.4f} | {se:.4f} |")
    lines += ["", "Where the oracle's top four hold mass that the model's do not (per trip; oracle / model / gap):", "",
              "| kind of city | " + " | ".join(e for e, *_ in rows) + " |", "|---|" + "---|" * len(rows)]
    for k in KINDS:
        cells = [f"{r[6][k][0]:.4f} / {r[6][k][1]:.4f} / {r[6][k][0] - r[6][k][1]:+.4f}" for r in rows]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        cmd = f"python benchmarks/oracle_gap.py --experiments {','.join(names)} --model {args.model}"
        write_section(args.name, f"### Oracle-expected accuracy: `{cmd}`\n\n{md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
