"""The features stage: read the data and folds artifacts, build, write four files."""

from __future__ import annotations

import time

from .. import artifacts
from ..device import resolve_polars_engine
from .build import build_features_report
from .engine import EngineRun


def resolve_engine(cfg) -> tuple[str, str]:
    """``features.engine`` -> (engine, why); with ``auto`` a config that pins ``device: cpu`` gets
    the CPU engine too."""
    if cfg.features.engine == "auto" and cfg.device == "cpu":
        return "cpu", "features.engine=auto and device=cpu: polars CPU engine"
    return resolve_polars_engine(cfg.features.engine)


def run_features_stage(ctx) -> None:
    """Build the feature table and vocabularies; write features.parquet, cities.parquet,
    vocab.json and features_report.json into ``ctx.out``."""
    fcfg = ctx.cfg.features
    engine, why = resolve_engine(ctx.cfg)
    ctx.log(f"polars engine: {engine} ({why})")
    run = EngineRun(engine, reason=why)

    t0 = time.perf_counter()
    data, folds_dir = ctx.input("data"), ctx.input("folds")
    train = artifacts.read_reservations(data, "train")
    test = artifacts.read_reservations(data, "test")
    folds = artifacts.read_folds(folds_dir)
    t_read = time.perf_counter() - t0

    feats, cities, vocab, report = build_features_report(train, test, folds, fcfg, run)
    for note in run.fallbacks:
        ctx.log(f"GPU engine fell back to CPU: {note}")
    # vocab.json travels into every model file: it keeps what ran, not how long it took.
    vocab["engine"] = {k: v for k, v in run.as_dict().items() if k != "query_seconds"}

    t1 = time.perf_counter()
    artifacts.write_features(ctx.out, feats, cities, vocab)
    t_write = time.perf_counter() - t1

    report["engine"] = run.as_dict()
    report["config"] = {
        "n_lags": fcfg.n_lags,
        "rare_city_min_count": fcfg.rare_city_min_count,
        "rare_affiliate_min_count": fcfg.rare_affiliate_min_count,
        "reverse_augment": fcfg.reverse_augment,
    }
    report["seconds"] = {"read": round(t_read, 3), **report["seconds"], "write": round(t_write, 3),
                         "total": round(time.perf_counter() - t0, 3)}
    artifacts.write_features_report(ctx.out, report)
    out = report["rows_out"]
    ctx.log(
        f"{out['total']:,} feature rows (train {out['train']:,}, test {out['test']:,}, reversed "
        f"{report['reversed_rows_added']:,}); {vocab['n_cities'] - 2:,} cities ({vocab['n_rare_cities']:,} rare), "
        f"{vocab['n_affiliates'] - 2:,} frequent affiliates; engine ran: {run.ran}; "
        f"{report['seconds']['total']:.1f}s"
    )
