"""Paired CV: one experiment's out-of-fold accuracy@4, scored on the validation trips of another
experiment's fold layout, so two runs with different folds are compared on the same trips.

    python benchmarks/paired_cv.py --experiment medium_old --folds-of medium-olddata [--models gru,mlp]

Both experiments must hold the same train trips (the same data). For each model of
``--experiment`` that has an ``oof_topk.parquet``, prints accuracy@4 over the trips of each fold of
``--folds-of``'s ``folds`` stage (trips without an out-of-fold prediction count as misses, and
their number is printed), then the same for ``--folds-of``'s own models, so a cell of the first
block and the cell below it score the same trips. Reads only artifacts; trains nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MODELS = ("gru", "transformer", "mlp", "sasrec", "xgb_ranker", "lgb_ranker", "blend")


def fold_accuracies(exp_dir: Path, model: str, truth, layout) -> tuple[list[float], int] | None:
    """accuracy@4 of ``model``'s OOF top-k per fold of ``layout`` (utrip_id, fold), and the number of
    truth trips it has no prediction for (they count as misses)."""
    import polars as pl

    from nextdest.metrics import topk_metrics

    path = exp_dir / model / "oof_topk.parquet"
    if not path.exists():
        return None
    topk = pl.read_parquet(path, columns=["utrip_id", "city_id", "rank"])
    missing = truth.join(topk.select("utrip_id").unique(), on="utrip_id", how="anti").height
    folds = truth.join(layout, on="utrip_id")
    acc = [topk_metrics(topk, folds.filter(pl.col("fold") == f), ks=(4,))["acc4"] for f in sorted(layout["fold"].unique())]
    return acc, missing


def main() -> int:
    import polars as pl

    from nextdest.topk import validation_truth

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", required=True, help="the run to score (artifacts/<experiment>)")
    ap.add_argument("--folds-of", required=True, help="the run whose fold layout gives the trips")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    args = ap.parse_args()

    root = Path(args.artifacts)
    a, b = root / args.experiment, root / args.folds_of
    for d in (a, b):
        if not (d / "folds" / "folds.parquet").exists():
            raise SystemExit(f"{d}: no folds stage (folds/folds.parquet); run that experiment first")
    # the CV targets (the last stay of every train trip), from each run's own feature table
    truth = validation_truth(pl.scan_parquet(a / "features" / "features.parquet")).select("utrip_id", "city_id")
    truth_b = validation_truth(pl.scan_parquet(b / "features" / "features.parquet")).select("utrip_id", "city_id")
    if not truth.equals(truth_b):
        raise SystemExit(f"{a.name} and {b.name} have different train trips or last cities: the runs are not on the same data")
    layout = pl.read_parquet(b / "folds" / "folds.parquet").filter(~pl.col("is_test")).select("utrip_id", "fold")
    sizes = layout.group_by("fold").len().sort("fold")["len"].to_list()

    print(f"accuracy@4 on the validation trips of each fold of {args.folds_of} ({', '.join(f'{n:,}' for n in sizes)} trips)")
    print(f"| run | model | " + " | ".join(f"fold {f}" for f in range(len(sizes))) + " | trips without OOF prediction |")
    print("|---|---|" + "---|" * len(sizes) + "---|")
    for name, d in ((args.experiment, a), (args.folds_of, b)):
        for model in args.models.split(","):
            got = fold_accuracies(d, model, truth, layout)
            if got is None:
                continue
            acc, missing = got
            print(f"| {name} | {model} | " + " | ".join(f"{x:.4f}" for x in acc) + f" | {missing:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
