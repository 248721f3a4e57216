"""One ranker interface and THE fold loop, shared by every gradient-boosted ranker.

A :class:`Ranker` learns to order the candidates of one trip (a query group) from the candidate
table's features. :func:`cross_fit` is the only fold loop: the out-of-fold candidate table is split
by trip into ``rankers.n_folds`` groups (deterministic by ``cfg.seed``); for each group a fresh
ranker trains on the other groups (trips whose pool misses the true city carry no ranking signal
and are dropped from training and from early stopping), stops early on the held-out group, scores
the held-out group (each trip exactly once -> the ranker's out-of-fold top-k) and the test pool
(averaged over the fold models).

:func:`run_ranker_stage` is the stage function of ``xgb_ranker`` and ``lgb_ranker``: the ranker
is picked by the stage's name.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..topk import rerank, write_outputs
from .candidates import feature_columns


# --------------------------------------------------------------------------- data
@dataclass
class RankData:
    """A block of candidate rows, contiguous by query: features ``X`` (float32, NaN = missing),
    labels ``y`` (1 = the true city) and ``sizes`` (rows per query, in row order)."""

    X: np.ndarray
    y: np.ndarray
    sizes: np.ndarray
    names: list[str] = field(default_factory=list)

    @property
    def n_queries(self) -> int:
        return len(self.sizes)


def query_sizes(qid: np.ndarray | pl.Series) -> np.ndarray:
    """Rows per query of a query-id column whose queries are contiguous; raises when a query's rows
    are split (a query id that appears in two separate runs)."""
    q = np.asarray(qid)
    if len(q) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    if len(np.unique(q[starts])) != len(starts):
        raise ValueError("query groups are not contiguous: a trip's candidates are split")
    return np.diff(np.r_[starts, len(q)]).astype(np.int64)


def to_rankdata(df: pl.DataFrame, features: list[str]) -> RankData:
    """Candidate rows (sorted by trip) -> :class:`RankData`."""
    X = df.select(pl.col(features).cast(pl.Float32)).to_numpy()
    y = df["label"].to_numpy().astype(np.float32) if "label" in df.columns else np.zeros(df.height, np.float32)
    return RankData(np.ascontiguousarray(X, dtype=np.float32), y, query_sizes(df["utrip_id"]), list(features))


def trip_groups(trips: pl.Series, n_groups: int, seed: int) -> pl.DataFrame:
    """GroupKFold by trip: each distinct trip gets one group in 0..n_groups-1, balanced, deterministic
    by ``seed`` and independent of the input order. Columns: utrip_id, group."""
    ids = np.sort(trips.unique().to_numpy())
    perm = np.random.default_rng(seed).permutation(len(ids))
    group = np.empty(len(ids), dtype=np.int32)
    group[perm] = np.arange(len(ids)) % n_groups
    return pl.DataFrame({"utrip_id": ids, "group": group})


# --------------------------------------------------------------------------- interface
class Ranker(ABC):
    """A learning-to-rank model over query groups. Subclasses wrap one library."""

    name: str = "ranker"

    def __init__(self, params, seed: int, device: str, n_threads: int):
        self.params = params  # the library's section of the config (XGBConfig, LGBConfig)
        self.seed = seed
        self.device = device  # "cuda" or "cpu", from nextdest.device.resolve_device
        self.n_threads = n_threads
        self.best_iteration: int = 0  # number of trees kept after early stopping

    @abstractmethod
    def fit(self, train: RankData, valid: RankData) -> "Ranker":
        """Train on ``train`` with early stopping on ``valid``."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores (higher = better) with the early-stopped number of trees."""

    @abstractmethod
    def importance(self) -> dict[str, float]:
        """Total gain per feature name (features never split on may be absent)."""

    def describe(self) -> dict:
        """What actually ran (device, library-specific notes) for metrics.json."""
        return {"device": self.device}


def resolve_threads(setting: int) -> int:
    """``rankers.n_threads``: a positive number as given; 0 = every core. (On a machine shared
    with other busy processes, OpenMP threads that outnumber free cores spin against them and can
    run several times slower than one thread: set it to 1 there.)"""
    return setting if setting > 0 else (os.cpu_count() or 1)


def make_ranker(stage: str, cfg, device: str) -> Ranker:
    """The ranker for stage ``xgb_ranker`` or ``lgb_ranker`` under ``cfg``."""
    n_threads = resolve_threads(cfg.rankers.n_threads)
    if stage == "xgb_ranker":
        from .xgb import XGBRanker

        return XGBRanker(cfg.rankers.xgb, cfg.seed, device, n_threads)
    if stage == "lgb_ranker":
        from .lgb import LGBRanker

        return LGBRanker(cfg.rankers.lgb, cfg.seed, device, n_threads)
    raise ValueError(f"no ranker for stage {stage!r}")


# --------------------------------------------------------------------------- the fold loop
@dataclass
class CrossFitResult:
    oof: pl.DataFrame  # utrip_id, city_id, score, group: every OOF candidate row, scored once
    test: pl.DataFrame  # utrip_id, city_id, score: mean over the fold models
    best_iterations: list[int]
    importance: dict[str, float]  # mean total gain over the fold models
    info: dict


def cross_fit(
    factory,
    oof: pl.DataFrame,
    test: pl.DataFrame,
    features: list[str],
    n_groups: int,
    seed: int,
    log=print,
) -> CrossFitResult:
    """Train ``n_groups`` rankers (``factory()`` makes a fresh one) on the OOF candidate table
    grouped by trip; return held-out scores for every OOF row and fold-averaged test scores."""
    groups = trip_groups(oof["utrip_id"], n_groups, seed)
    oof = oof.join(groups, on="utrip_id", how="left").sort("utrip_id", "prio")
    has_pos = oof.group_by("utrip_id").agg((pl.col("label").max() > 0).alias("_pos"))
    oof = oof.join(has_pos, on="utrip_id", how="left").sort("utrip_id", "prio")
    test = test.sort("utrip_id", "prio")
    query_sizes(oof["utrip_id"])  # raises when a trip's rows are not contiguous
    X_test = to_rankdata(test, features).X
    oof_score = np.full(oof.height, np.nan)
    test_score = np.zeros(test.height)
    best, gains, seconds = [], [], []
    group_col = oof["group"].to_numpy()
    pos_col = oof["_pos"].to_numpy()
    for g in range(n_groups):
        t0 = time.perf_counter()
        held = group_col == g
        tr = oof.filter(pl.Series(~held & pos_col))
        va = oof.filter(pl.Series(held & pos_col))
        model = factory().fit(to_rankdata(tr, features), to_rankdata(va, features))
        oof_score[held] = model.predict(to_rankdata(oof.filter(pl.Series(held)), features).X)
        test_score += model.predict(X_test) / n_groups
        best.append(int(model.best_iteration))
        gains.append(model.importance())
        seconds.append(time.perf_counter() - t0)
        log(f"group {g}: {tr['utrip_id'].n_unique():,} train trips ({tr.height:,} rows), "
            f"{int(held.sum()):,} held-out rows, best iteration {model.best_iteration}, {seconds[-1]:.1f}s")
    if np.isnan(oof_score).any():  # pragma: no cover - every row is in exactly one group
        raise RuntimeError("fold loop left OOF rows unscored")
    importance = {f: float(np.mean([gd.get(f, 0.0) for gd in gains])) for f in features}
    return CrossFitResult(
        oof=oof.select("utrip_id", "city_id", "group").with_columns(pl.Series("score", oof_score)),
        test=test.select("utrip_id", "city_id").with_columns(pl.Series("score", test_score)),
        best_iterations=best,
        importance=dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        info={**model.describe(), "group_seconds": [round(s, 2) for s in seconds]},
    )


# --------------------------------------------------------------------------- outputs
def plot_importance(importance: dict[str, float], path, title: str, top: int = 30) -> None:
    """Horizontal bar chart of the ``top`` features by gain share (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(importance.items(), key=lambda kv: -kv[1])[:top]
    total = sum(importance.values()) or 1.0
    names = [k for k, _ in items][::-1]
    vals = [v / total for _, v in items][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(names) + 1.2))
    ax.barh(names, vals, color="#4c72b0")
    ax.set_xlabel("share of total gain")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_candidates(cand_dir, max_candidates: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The candidate tables, capped at ``max_candidates`` per trip by pool priority."""
    oof = pl.read_parquet(cand_dir / "oof_candidates.parquet").filter(pl.col("prio") <= max_candidates)
    test = pl.read_parquet(cand_dir / "test_candidates.parquet").filter(pl.col("prio") <= max_candidates)
    return oof.sort("utrip_id", "prio"), test.sort("utrip_id", "prio")


def run_ranker_stage(ctx) -> None:
    """Stage ``xgb_ranker`` / ``lgb_ranker``: cross-fit the ranker, write top-k, metrics,
    importances (JSON + PNG)."""
    from ..device import resolve_device

    cfg = ctx.cfg
    name = ctx.spec.name
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    cand_dir = ctx.input("candidates")
    oof, test = load_candidates(cand_dir, cfg.rankers.max_candidates)
    features = feature_columns(oof)
    ctx.log(f"{oof['utrip_id'].n_unique():,} OOF trips ({oof.height:,} rows), {test['utrip_id'].n_unique():,} test trips "
            f"({test.height:,} rows), {len(features)} features, cap {cfg.rankers.max_candidates}, device {device}, "
            f"{resolve_threads(cfg.rankers.n_threads)} threads")
    res = cross_fit(lambda: make_ranker(name, cfg, device), oof, test, features, cfg.rankers.n_folds, cfg.seed, ctx.log)
    k = cfg.rankers.max_candidates
    oof_topk = rerank(res.oof, name, k)
    test_topk = rerank(res.test, name, k)
    (ctx.out / "importance.json").write_text(json.dumps(res.importance, indent=2))
    plot_importance(res.importance, ctx.out / "importance.png", f"{name}: feature importance (gain, mean of {cfg.rankers.n_folds} folds)")
    oof_truth = oof.filter(pl.col("label") == 1).select("utrip_id", "city_idx")
    n_oof = oof["utrip_id"].n_unique()
    extra = {
        "best_iterations": res.best_iterations,
        "n_features": len(features),
        "max_candidates": k,
        "pool_recall_oof": oof_truth.height / max(n_oof, 1),
        "top_features": list(res.importance)[:10],
        **res.info,
    }
    if "label" in test.columns:
        extra["pool_recall_test"] = float(test.group_by("utrip_id").agg(pl.col("label").max())["label"].mean())
    write_outputs(ctx, {name: (oof_topk, test_topk, time.perf_counter() - t0, extra)})
