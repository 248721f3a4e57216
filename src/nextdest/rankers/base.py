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
from .candidates import check_candidates, feature_columns


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

    def query_index(self) -> np.ndarray:
        """The query (0..n_queries-1) of every row."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)

    def take(self, rows: np.ndarray) -> "RankData":
        """The rows ``rows`` (increasing, whole queries) as a new block (a copy)."""
        rows = np.asarray(rows)
        q = self.query_index()[rows]
        return RankData(self.X[rows], self.y[rows], run_lengths(q), self.names)


def run_lengths(q: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal values in ``q`` (rows per query of contiguous queries)."""
    if len(q) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    return np.diff(np.r_[starts, len(q)]).astype(np.int64)


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


def feature_matrix(df: pl.DataFrame, features: list[str], chunk_rows: int = 1 << 20) -> np.ndarray:
    """``df[features]`` as one C-ordered float32 matrix (null -> NaN), converted in row chunks so
    the peak memory is the matrix plus one chunk, not a float32 copy of the whole frame."""
    X = np.empty((df.height, len(features)), dtype=np.float32)
    for a in range(0, df.height, chunk_rows):
        X[a:a + chunk_rows] = df.slice(a, chunk_rows).select(pl.col(features).cast(pl.Float32)).to_numpy()
    return X


def to_rankdata(df: pl.DataFrame, features: list[str]) -> RankData:
    """Candidate rows (sorted by trip) -> :class:`RankData`."""
    y = df["label"].to_numpy().astype(np.float32) if "label" in df.columns else np.zeros(df.height, np.float32)
    return RankData(feature_matrix(df, features), y, query_sizes(df["utrip_id"]), list(features))


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

    def prepare(self, data: RankData, rows: np.ndarray):
        """Called once per cross-fit with every row any fold trains or stops on (``rows`` of
        ``data``, whole queries): what it returns (a binned dataset, quantile cuts) is handed to
        :meth:`fit_rows` of every fold model, so work that does not depend on the fold is done
        once. Default: nothing."""
        return None

    def fit_rows(self, prepared, data: RankData, train_rows: np.ndarray, valid_rows: np.ndarray) -> "Ranker":
        """Train on rows ``train_rows`` of ``data`` with early stopping on ``valid_rows`` (both
        increasing, whole queries, within the rows given to :meth:`prepare`). Default: copies the
        rows and calls :meth:`fit`."""
        return self.fit(data.take(train_rows), data.take(valid_rows))

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


@dataclass
class Tables:
    """The OOF and test candidate tables as the fold loop uses them: float32 feature matrices and
    the key columns (``oof_keys``: utrip_id, city_id, group; ``test_keys``: utrip_id, city_id)."""

    oof: RankData
    oof_keys: pl.DataFrame
    X_test: np.ndarray
    test_keys: pl.DataFrame


def candidate_tables(oof: pl.DataFrame, test: pl.DataFrame, features: list[str], n_groups: int, seed: int) -> Tables:
    """Sort the tables by trip, give every OOF trip its group (:func:`trip_groups`) and convert
    them to :class:`Tables` (the caller may drop the frames afterwards)."""
    groups = trip_groups(oof["utrip_id"], n_groups, seed)
    oof = oof.join(groups, on="utrip_id", how="left").sort("utrip_id", "prio")
    query_sizes(oof["utrip_id"])  # raises when a trip's rows are not contiguous
    test = test.sort("utrip_id", "prio")
    return Tables(to_rankdata(oof, features), oof.select("utrip_id", "city_id", "group"),
                  feature_matrix(test, features), test.select("utrip_id", "city_id"))


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
    return fit_groups(factory, candidate_tables(oof, test, features, n_groups, seed), n_groups, log)


def fit_groups(factory, tables: Tables, n_groups: int, log=print) -> CrossFitResult:
    """THE fold loop over :class:`Tables`: each fold takes its rows by index (no table copies but
    the ranker's own), and the ranker's :meth:`Ranker.prepare` (binning) runs once for all folds."""
    data, X_test = tables.oof, tables.X_test
    features = data.names
    q = data.query_index()
    pos_col = (np.bincount(q, weights=data.y, minlength=data.n_queries) > 0)[q]  # the trip's true city is in its pool
    group_col = tables.oof_keys["group"].to_numpy()
    oof_score = np.full(len(q), np.nan)
    test_score = np.zeros(len(X_test))
    best, gains, seconds = [], [], []
    t0 = time.perf_counter()
    prepared = factory().prepare(data, np.flatnonzero(pos_col))
    prep_seconds = time.perf_counter() - t0
    for g in range(n_groups):
        t0 = time.perf_counter()
        held = group_col == g
        tr, va = np.flatnonzero(~held & pos_col), np.flatnonzero(held & pos_col)
        model = factory().fit_rows(prepared, data, tr, va)
        oof_score[held] = model.predict(data.X[held])
        test_score += model.predict(X_test) / n_groups
        best.append(int(model.best_iteration))
        gains.append(model.importance())
        seconds.append(time.perf_counter() - t0)
        log(f"group {g}: {len(np.unique(q[tr])):,} train trips ({len(tr):,} rows), "
            f"{int(held.sum()):,} held-out rows, best iteration {model.best_iteration}, {seconds[-1]:.1f}s")
    del prepared
    if np.isnan(oof_score).any():  # pragma: no cover - every row is in exactly one group
        raise RuntimeError("fold loop left OOF rows unscored")
    importance = {f: float(np.mean([gd.get(f, 0.0) for gd in gains])) for f in features}
    return CrossFitResult(
        oof=tables.oof_keys.with_columns(pl.Series("score", oof_score)),
        test=tables.test_keys.with_columns(pl.Series("score", test_score)),
        best_iterations=best,
        importance=dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        info={**model.describe(), "prepare_seconds": round(prep_seconds, 2), "group_seconds": [round(s, 2) for s in seconds]},
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
    out = []
    for split in ("oof", "test"):
        path = cand_dir / f"{split}_candidates.parquet"
        df = pl.scan_parquet(path).filter(pl.col("prio") <= max_candidates).collect()
        out.append(check_candidates(df, str(path)).sort("utrip_id", "prio"))
    return out[0], out[1]


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
    n_oof = oof["utrip_id"].n_unique()
    ctx.log(f"{n_oof:,} OOF trips ({oof.height:,} rows), {test['utrip_id'].n_unique():,} test trips "
            f"({test.height:,} rows), {len(features)} features, cap {cfg.rankers.max_candidates}, device {device}, "
            f"{resolve_threads(cfg.rankers.n_threads)} threads")
    k = cfg.rankers.max_candidates
    extra = {"n_features": len(features), "max_candidates": k, "pool_recall_oof": int(oof["label"].sum()) / max(n_oof, 1)}
    if "label" in test.columns:
        extra["pool_recall_test"] = float(test.group_by("utrip_id").agg(pl.col("label").max())["label"].mean())
    tables = candidate_tables(oof, test, features, cfg.rankers.n_folds, cfg.seed)
    del oof, test  # the matrices hold what the fold loop needs
    res = fit_groups(lambda: make_ranker(name, cfg, device), tables, cfg.rankers.n_folds, ctx.log)
    del tables
    oof_topk = rerank(res.oof, name, k)
    test_topk = rerank(res.test, name, k)
    (ctx.out / "importance.json").write_text(json.dumps(res.importance, indent=2))
    plot_importance(res.importance, ctx.out / "importance.png", f"{name}: feature importance (gain, mean of {cfg.rankers.n_folds} folds)")
    extra = {"best_iterations": res.best_iterations, **extra, "top_features": list(res.importance)[:10], **res.info}
    write_outputs(ctx, {name: (oof_topk, test_topk, time.perf_counter() - t0, extra)})
