"""Every file that crosses a stage boundary: its name, and a typed reader and writer.

This module is the only one that knows the artifact file names. A stage gets the folders of its
inputs from its context (``ctx.input("features")``) and writes into ``ctx.out``; tables are
checked against :mod:`nextdest.schema` on the way in (and conformed or checked on the way out).

    data/       train.parquet, test.parquet (RESERVATIONS), truth.parquet (TRUTH, when known),
                data_report.json; synthetic: generator.json, oracle.parquet, oracle_train.parquet (ORACLE)
    folds/      folds.parquet (FOLDS)
    features/   features.parquet (FEATURES), cities.parquet (CITIES), vocab.json, features_report.json
    <top-k stage>/  oof_topk.parquet, test_topk.parquet (TOPK), metrics.json
                    (baselines, every model and ranker, blend); a model's fold<k>/model*.pt
    candidates/ oof_candidates.parquet, test_candidates.parquet (CANDIDATES), recall.json, feature_names.json
    report/     submission.csv, summary.{json,md,png}, summary_buckets.png
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import polars as pl

from .schema import CANDIDATES, CITIES, FEATURES, FOLDS, ORACLE, RESERVATIONS, TOPK, TRUTH, SchemaError, check, conform

SPLITS = ("oof", "test")


# --------------------------------------------------------------------------- JSON
def read_json(folder: Path, name: str) -> Any:
    return json.loads((Path(folder) / name).read_text())


def write_json(folder: Path, name: str, obj: Any, indent: int | None = 2, newline: bool = False) -> None:
    (Path(folder) / name).write_text(json.dumps(obj, indent=indent) + ("\n" if newline else ""))


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temp file and a rename: a reader never sees half a file, and
    a ``dst`` that is a hard link (experiments hard-linked from another) is replaced, not written
    through."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


# --------------------------------------------------------------------------- data
def read_reservations(data_dir: Path, split: str, columns: list[str] | None = None) -> pl.DataFrame:
    """The validated reservations of ``split`` (train, test) from the data stage."""
    name = f"{split}.parquet"
    df = pl.read_parquet(Path(data_dir) / name, columns=columns)
    return check(df, {c: t for c, t in RESERVATIONS.items() if columns is None or c in columns}, name)


def write_reservations(out: Path, split: str, df: pl.DataFrame) -> None:
    check(df, RESERVATIONS, f"{split}.parquet").write_parquet(Path(out) / f"{split}.parquet")


def read_truth(data_dir: Path) -> pl.DataFrame | None:
    """The test ground truth (TRUTH), or None when it is not known."""
    path = Path(data_dir) / "truth.parquet"
    return check(pl.read_parquet(path), TRUTH, path.name) if path.exists() else None


def write_truth(out: Path, df: pl.DataFrame) -> None:
    check(df, TRUTH, "truth.parquet").write_parquet(Path(out) / "truth.parquet")


def read_data_report(data_dir: Path) -> dict:
    return read_json(data_dir, "data_report.json")


def write_data_report(out: Path, report: dict) -> None:
    write_json(out, "data_report.json", report)


ORACLE_FILES = {"test": "oracle.parquet", "train": "oracle_train.parquet"}
GENERATOR_FILES = (*ORACLE_FILES.values(), "generator.json")  # the synthetic generator's own


def read_generator(data_dir: Path) -> dict:
    """The synthetic generator's figures (its ceiling), {} for real data."""
    path = Path(data_dir) / "generator.json"
    return json.loads(path.read_text()) if path.exists() else {}


def read_oracle(data_dir: Path, split: str, max_rank: int | None = None) -> pl.DataFrame | None:
    """The generator's own top cities of the last city of every ``split`` (test, train) trip
    (ORACLE; ``rank`` 1 = most likely), optionally only ranks <= ``max_rank``; None for real data."""
    path = Path(data_dir) / ORACLE_FILES[split]
    return check(_scan_ranks(path, max_rank), ORACLE, path.name) if path.exists() else None


def _scan_ranks(path: Path, max_rank: int | None) -> pl.DataFrame:
    lf = pl.scan_parquet(path)
    return (lf if max_rank is None else lf.filter(pl.col("rank") <= max_rank)).collect()


# --------------------------------------------------------------------------- folds
def read_folds(folds_dir: Path) -> pl.DataFrame:
    return check(pl.read_parquet(Path(folds_dir) / "folds.parquet"), FOLDS, "folds.parquet")


def write_folds(out: Path, df: pl.DataFrame) -> None:
    conform(df, FOLDS, "folds.parquet").write_parquet(Path(out) / "folds.parquet")


# --------------------------------------------------------------------------- features
def read_features(features_dir: Path) -> pl.DataFrame:
    return check(pl.read_parquet(Path(features_dir) / "features.parquet"), FEATURES, "features.parquet")


def scan_features(features_dir: Path) -> pl.LazyFrame:
    """The feature table, lazily (for the few columns a query needs)."""
    return pl.scan_parquet(Path(features_dir) / "features.parquet")


def read_cities(features_dir: Path) -> pl.DataFrame:
    return check(pl.read_parquet(Path(features_dir) / "cities.parquet"), CITIES, "cities.parquet")


def read_vocab(features_dir: Path) -> dict | None:
    path = Path(features_dir) / "vocab.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_features(out: Path, feats: pl.DataFrame, cities: pl.DataFrame, vocab: dict) -> None:
    """Write the features stage's tables and vocabulary."""
    check(feats, FEATURES, "features.parquet").write_parquet(Path(out) / "features.parquet")
    check(cities, CITIES, "cities.parquet").write_parquet(Path(out) / "cities.parquet")
    write_json(out, "vocab.json", vocab, indent=None, newline=True)


def write_features_report(out: Path, report: dict) -> None:
    write_json(out, "features_report.json", report, newline=True)


# --------------------------------------------------------------------------- top-k and metrics
def topk_path(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_topk.parquet"


def has_topk(folder: Path) -> bool:
    return all(topk_path(folder, s).exists() for s in SPLITS)


def read_topk(folder: Path, split: str, max_rank: int | None = None) -> pl.DataFrame:
    """A stage's top-k table of ``split`` (oof, test): every model of the stage, TOPK schema;
    optionally only ranks <= ``max_rank``."""
    path = topk_path(folder, split)
    return check(_scan_ranks(path, max_rank), TOPK, str(path))


def write_topk(out: Path, split: str, df: pl.DataFrame) -> None:
    check(df, TOPK, f"{split} top-k").write_parquet(topk_path(out, split))


def read_model_tables(folders: dict[str, Path], log: Callable[[str], None] | None = None,
                      max_rank: int | None = None) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """Model name -> (oof top-k, test top-k) for every model in the top-k stages ``folders``
    (stage name -> folder), in stage order and, within a stage, by model name (optionally only
    ranks <= ``max_rank``); a stage without top-k tables is passed over (and said, with ``log``)."""
    out: dict[str, tuple[pl.DataFrame, pl.DataFrame]] = {}
    for stage, folder in folders.items():
        if not has_topk(folder):
            if log is not None:
                log(f"stage '{stage}' has no top-k tables, passed over")
            continue
        oof, test = read_topk(folder, "oof", max_rank), read_topk(folder, "test", max_rank)
        for name in sorted(oof["model"].unique().to_list()):
            out[name] = (oof.filter(pl.col("model") == name), test.filter(pl.col("model") == name))
    return out


def read_metrics(folder: Path) -> dict[str, dict] | None:
    """Model name -> metrics of a top-k stage (None when it wrote none)."""
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text())["models"] if path.exists() else None


def write_metrics(out: Path, metrics: dict[str, dict]) -> None:
    write_json(out, "metrics.json", {"models": metrics})


def model_file(out: Path, fold: int, seed_pos: int, seed: int) -> Path:
    """A model stage's file of the model of ``fold`` and the ``seed_pos``-th seed."""
    return Path(out) / f"fold{fold}" / ("model.pt" if seed_pos == 0 else f"model_seed{seed}.pt")


def model_files(folder: Path) -> list[Path]:
    """Every model file of a model stage folder (or of a fold folder)."""
    folder = Path(folder)
    return sorted(folder.glob("fold*/model*.pt")) or sorted(folder.glob("model*.pt"))


# --------------------------------------------------------------------------- candidates
def candidates_path(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_candidates.parquet"


def check_candidates(df: pl.DataFrame, name: str) -> pl.DataFrame:
    """Raise unless ``df`` has the candidate key columns with their dtypes (``label`` only when
    present) and numeric features."""
    check(df, {c: t for c, t in CANDIDATES.items() if c != "label" or "label" in df.columns}, name)
    bad = [f"{c} ({t})" for c, t in df.schema.items() if c not in CANDIDATES and not t.is_numeric()]
    if bad:
        raise SchemaError(f"{name}: non-numeric feature columns {bad}")
    return df


def read_candidates(folder: Path, split: str, max_prio: int | None = None) -> pl.DataFrame:
    """The candidate table of ``split``, optionally only the first ``max_prio`` of each pool."""
    path = candidates_path(folder, split)
    lf = pl.scan_parquet(path)
    if max_prio is not None:
        lf = lf.filter(pl.col("prio") <= max_prio)
    return check_candidates(lf.collect(), str(path))


def write_candidate_parts(out: Path, split: str, parts: list[Path]) -> None:
    """Stream the candidate parts of ``split`` (in order) into its table; the parts are consumed."""
    path = candidates_path(out, split)
    if len(parts) == 1:
        parts[0].rename(path)
    else:
        pl.scan_parquet(parts).sink_parquet(path)


def write_candidates_info(out: Path, recall: dict, feature_names: list[str]) -> None:
    write_json(out, "recall.json", recall)
    write_json(out, "feature_names.json", feature_names)


# --------------------------------------------------------------------------- report
SUBMISSION = "submission.csv"
SUMMARY_FILES = ("summary.md", "summary.json", "summary.png", "summary_buckets.png")


def submission_path(folder: Path) -> Path:
    return Path(folder) / SUBMISSION


def summary_path(folder: Path, suffix: str) -> Path:
    return Path(folder) / f"summary.{suffix}"


def summary_buckets_path(folder: Path) -> Path:
    """The figure of accuracy@4 per bucket of the true city's train frequency."""
    return Path(folder) / SUMMARY_FILES[-1]
