"""The features stage: the per-reservation feature table, the city table and the vocabularies.

Public entry points:

* :func:`build_features` - pure function from the reservations and folds to
  (features, cities, vocab); used by the stage, the tests and the benchmark.
* :func:`run_features_stage` - the pipeline stage (reads the data and folds artifacts, writes
  ``features.parquet``, ``cities.parquet``, ``vocab.json``, ``features_report.json``).

The implementation is one set of polars LazyFrame plans (:mod:`.build`, :mod:`.vocab`) collected on
the engine ``features.engine`` resolves to (:mod:`.engine`); README.md in this folder says what was
verified about the GPU engine.
"""

from __future__ import annotations

import polars as pl

from ..config import FeaturesConfig
from .build import build_features_report
from .engine import EngineRun
from .stage import run_features_stage

__all__ = ["build_features", "run_features_stage"]


def build_features(
    train: pl.DataFrame,
    test: pl.DataFrame,
    folds: pl.DataFrame,
    fcfg: FeaturesConfig,
    engine: str = "cpu",
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Build (features table, cities table, vocab dict) from typed reservations and folds.

    ``train``/``test`` follow the RESERVATIONS schema (test trips end with their concealed row),
    ``folds`` the FOLDS schema; ``engine`` is "cpu" or "gpu" (see
    :func:`nextdest.device.resolve_polars_engine`). The vocab dict carries an ``engine`` entry
    saying what ran (GPU queries that fell back to the CPU are listed there).
    """
    run = EngineRun(engine, reason=f"engine={engine!r} passed to build_features")
    feats, cities, vocab, _report = build_features_report(train, test, folds, fcfg, run)
    vocab["engine"] = run.as_dict()
    return feats, cities, vocab
