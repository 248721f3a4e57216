"""One ranker interface and THE fold loop, shared by every gradient-boosted ranker.

A :class:`Ranker` learns to order the candidates of one trip (a query group) from the candidate
table's features. :func:`fit_groups` is the only fold loop (:func:`cross_fit` feeds it data
frames): the out-of-fold candidate table is split by trip into ``rankers.n_folds`` groups
(deterministic by ``cfg.seed``); for each group a fresh ranker trains on the other groups (trips
whose pool misses the true city carry no ranking signal and are dropped from training); the
rankers grow in lock step and stop together on NDCG@4 pooled over every held-out group; each
scores its held-out group (each trip exactly once -> the ranker's out-of-fold top-k) and the test
pool (averaged over the fold models).

Cost: the tables become float32 matrices once; work that does not depend on the fold (quantile
cuts, binning) is done once (:meth:`Ranker.prepare`); the held-out scores that drive early
stopping come from the new trees only, every ``EVAL_EVERY`` rounds. Per round the cost is linear
in the rows, and the rounds are capped (``n_estimators``).

A ranker is one module in this folder: its config (a :class:`GBDTConfig` subclass, section
``rankers.<key>``) and its :class:`Ranker`, registered with :func:`register_ranker`.
:func:`run_ranker_stage` is the stage function of every registered ranker: the ranker is picked by
the stage's name.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .. import registry
from ..folds import trip_groups
from ..sections import at_least, fraction, positive
from ..topk import rerank, write_outputs
from ..artifacts import read_candidates, write_json
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

    def query_index(self) -> np.ndarray:
        """The query (0..len(sizes)-1) of every row."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)

    def take(self, rows: np.ndarray) -> "RankData":
        """The rows ``rows`` (increasing, whole queries) as a new block (a copy)."""
        rows = np.asarray(rows)
        return RankData(self.X[rows], self.y[rows], self.sizes_of(rows), self.names)

    def sizes_of(self, rows: np.ndarray) -> np.ndarray:
        """Rows per query of the rows ``rows`` (increasing, whole queries), without copying them."""
        return run_lengths(self.query_index()[np.asarray(rows)])


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


def feature_matrix(df: pl.DataFrame, features: list[str], rows: np.ndarray | None = None,
                   chunk_rows: int = 1 << 20) -> np.ndarray:
    """``df[features]`` (its rows ``rows``, in that order; ``None`` = every row in order) as one
    C-ordered float32 matrix (null -> NaN), gathered and converted in row chunks, so the peak
    memory is the matrix plus one chunk, not a float32 (or reordered) copy of the whole frame."""
    cols = df.select(features)  # the frame's columns, not a copy
    n = df.height if rows is None else len(rows)
    X = np.empty((n, len(features)), dtype=np.float32)
    for a in range(0, n, chunk_rows):
        part = cols.slice(a, chunk_rows) if rows is None else cols[rows[a:a + chunk_rows]]
        X[a:a + chunk_rows] = part.select(pl.all().cast(pl.Float32)).to_numpy()
    return X


# --------------------------------------------------------------------------- interface
@dataclass(frozen=True)
class GBDTConfig:
    """The keys of every gradient-boosted ranker's section (``rankers.<key>``)."""

    enabled: bool
    n_estimators: int = at_least(1)  # the most rounds; the fold loop stops earlier on held-out NDCG@4
    learning_rate: float = positive()
    max_bin: int = at_least(2)
    subsample: float = fraction()
    colsample_bytree: float = fraction()
    early_stopping_rounds: int = at_least(1)  # rounds without a better pooled held-out NDCG@4


def register_ranker(name: str, key: str, config: type):
    """Class decorator: register a :class:`Ranker` as stage ``name`` with config section
    ``rankers.<key>`` typed by ``config``."""
    return registry.register("ranker", name, key, config)


class Ranker(ABC):
    """A learning-to-rank model over query groups. Subclasses wrap one library."""

    EVAL_EVERY = 5  # rounds between two looks of the fold loop at the held-out groups (patience is in rounds)

    def __init__(self, params, seed: int, device: str, n_threads: int):
        self.params = params  # the ranker's config section (a GBDTConfig)
        self.seed = seed
        self.device = device  # "cuda" or "cpu", from nextdest.device.resolve_device
        self.n_threads = n_threads
        self.best_iteration: int = 0  # number of trees kept after early stopping
        self.n_trees: int = 0  # trees boosted so far

    def prepare(self, data: RankData, rows: np.ndarray):
        """Called once per cross-fit with every row any fold trains on (``rows`` of ``data``,
        increasing, whole queries): what it returns (quantile cuts, a binned dataset) is handed to
        :meth:`start` of every fold model, so the work that does not depend on the fold is done
        once. Default: nothing."""
        return None

    @abstractmethod
    def start(self, prepared, data: RankData, rows: np.ndarray):
        """Get ready to boost on rows ``rows`` of ``data`` (increasing, whole queries). Returns
        what the next fold model's :meth:`start` gets in place of ``prepared``: ``prepared``
        itself, or something lighter that serves the same purpose (XGBoost hands on this fold's
        binned matrix, which carries the same quantile cuts, so the all-rows matrix is freed)."""

    @abstractmethod
    def boost(self, rounds: int) -> None:
        """Add ``rounds`` trees."""

    @abstractmethod
    def predict(self, X: np.ndarray, first: int = 0, last: int | None = None, sizes: np.ndarray | None = None) -> np.ndarray:
        """Raw scores (higher = better) of trees ``first`` .. ``last - 1`` (``last=None``: up to
        :attr:`best_iteration`); within a query only their order matters, so a library may add
        the same constant to every row (XGBoost adds its base margin to every partial range).
        ``sizes``: rows per query of ``X`` (whole queries, in order), for a ranker that scores a row
        beside the others of its query; the tree rankers score rows on their own and ignore it."""

    def finish(self, n_trees: int) -> None:
        """Keep the first ``n_trees`` trees (the early-stopped model) and free the training data."""
        self.best_iteration = n_trees

    @abstractmethod
    def importance(self) -> dict[str, float]:
        """Total gain per feature name (features never split on may be absent)."""

    def describe(self) -> dict:
        """What actually ran (device, library-specific notes) for metrics.json."""
        return {"device": self.device}

    @classmethod
    def runtime(cls, cfg) -> dict:
        """Settings resolved at run time that change this ranker's results (part of its stage's
        cache key), e.g. a thread count the library is deterministic for only."""
        return {}


def resolve_threads(setting: int) -> int:
    """``rankers.n_threads``: a positive number as given; 0 = every core. (On a machine shared
    with other busy processes, OpenMP threads that outnumber free cores spin against them and can
    run several times slower than one thread: set it to 1 there.)"""
    return setting if setting > 0 else (os.cpu_count() or 1)


def make_ranker(stage: str, cfg, device: str) -> Ranker:
    """A fresh ranker of the registered ranker stage ``stage`` under ``cfg``."""
    entry = registry.discover("ranker").get(stage)
    if entry is None:
        raise ValueError(f"no ranker for stage {stage!r}")
    return entry.cls(cfg.section(entry.section), cfg.seed, device, resolve_threads(cfg.rankers.n_threads))


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


def spill(X: np.ndarray, path) -> np.ndarray:
    """``X`` saved to ``path`` (``.npy``) and mapped back read-only: its pages leave memory until
    they are read. The test matrix is read once, after every fold model has trained, so it does not
    sit in memory beside the training matrices (at full scale 1 GiB)."""
    np.save(path, X)
    return np.load(path, mmap_mode="r")


def candidate_tables(oof: pl.DataFrame, test: pl.DataFrame, features: list[str], n_groups: int, seed: int) -> Tables:
    """Give every OOF trip its group (:func:`trip_groups`), order the OOF rows by group, trip and
    priority (so a group's rows are one contiguous block: a view, not a copy) and the test rows by
    trip and priority, and convert them to :class:`Tables` (the caller may drop the frames). Only
    the key columns are sorted; the feature matrices are gathered in that order chunk by chunk, so
    no reordered copy of a whole table is ever held (at full scale one is several GiB)."""
    groups = trip_groups(oof["utrip_id"], n_groups, seed)
    keys = (oof.select("utrip_id", "city_id", "prio", "label").with_row_index("_row")
            .join(groups, on="utrip_id", how="left").sort("group", "utrip_id", "prio"))
    test_keys = test.select("utrip_id", "city_id", "prio").with_row_index("_row").sort("utrip_id", "prio")
    data = RankData(feature_matrix(oof, features, keys["_row"].to_numpy()), keys["label"].to_numpy().astype(np.float32),
                    query_sizes(keys["utrip_id"]), list(features))  # query_sizes raises when a trip's rows are split
    return Tables(data, keys.select("utrip_id", "city_id", "group"),
                  feature_matrix(test, features, test_keys["_row"].to_numpy()), test_keys.select("utrip_id", "city_id"))


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


def ndcg4(score: np.ndarray, y: np.ndarray, starts: np.ndarray) -> tuple[float, int]:
    """(sum, count) over the queries with a relevant row of NDCG@4 with one relevant row per
    query: ``1 / log2(1 + rank)`` when its rank (1 + rows scoring strictly higher) is at most 4.
    ``starts``: first row of each query (rows contiguous by query)."""
    q = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(score)]))
    pos = np.flatnonzero(y > 0)
    ts = np.full(len(starts), np.inf)
    ts[q[pos]] = score[pos]
    rank = 1 + np.bincount(q, weights=score > ts[q], minlength=len(starts))[q[pos]]
    return float(np.where(rank <= 4, 1.0 / np.log2(1.0 + rank), 0.0).sum()), len(pos)


def fit_groups(factory, tables: Tables, n_groups: int, log=print, eval_every: int | None = None) -> CrossFitResult:
    """THE fold loop over :class:`Tables`. One ranker per group of trips trains on the other
    groups; the rankers grow in lock step and stop together: every ``eval_every`` rounds each
    scores its held-out group with its new trees (``eval_every``: the ranker's ``EVAL_EVERY``), and when NDCG@4 pooled over every held-out
    trip (trips whose pool holds the true city) has not improved for ``early_stopping_rounds``
    rounds, all keep the trees of the best round. One stopping decision on every OOF trip is far
    less noisy than one per group on a fifth of them (which stopped some groups on an early
    plateau), and the held-out scores it picks from are the OOF scores, so the CV is only mildly
    optimistic (one number chosen on all trips). Each fold's training rows are copied once into
    the library's binned format; :meth:`Ranker.prepare` (cuts, binning) runs once for all folds."""
    data, X_test = tables.oof, tables.X_test
    features = data.names
    q = data.query_index()
    pos_col = (np.bincount(q, weights=data.y, minlength=len(data.sizes)) > 0)[q]  # the trip's true city is in its pool
    group_col = tables.oof_keys["group"].to_numpy()
    t_start = time.perf_counter()
    models = [factory() for _ in range(n_groups)]
    eval_every = eval_every or models[0].EVAL_EVERY
    prepared = models[0].prepare(data, np.flatnonzero(pos_col))
    held = []  # per group: its block of rows (a, b), the first row of each of its trips and their rows per trip
    for g, model in enumerate(models):
        h = np.flatnonzero(group_col == g)
        a, b = (int(h[0]), int(h[-1]) + 1) if len(h) else (0, 0)
        if b - a != len(h):
            raise ValueError("fold loop: a group's rows are not one block (sort the OOF rows by group first)")
        tr = np.flatnonzero((group_col != g) & pos_col)
        prepared = model.start(prepared, data, tr)
        qh = q[a:b]
        starts = np.flatnonzero(np.r_[True, qh[1:] != qh[:-1]]) if b > a else np.zeros(0, np.int64)
        held.append((a, b, starts, np.diff(np.r_[starts, b - a])))
        log(f"group {g}: {len(np.unique(q[tr])):,} train trips ({len(tr):,} rows), {b - a:,} held-out rows")
    del prepared
    p = models[0].params
    margins = [np.zeros(b - a) for a, b, _s, _n in held]
    best, best_round, rounds, trace = -np.inf, 0, 0, []
    while rounds < p.n_estimators:
        step = min(eval_every, p.n_estimators - rounds)
        total, count = 0.0, 0
        for model, (a, b, starts, sizes), m in zip(models, held, margins):
            model.boost(step)
            m += model.predict(data.X[a:b], rounds, rounds + step, sizes=sizes)
            s, c = ndcg4(m, data.y[a:b], starts)  # trips without the true city in their pool add nothing
            total, count = total + s, count + c
        rounds += step
        score = total / max(count, 1)
        trace.append(round(score, 6))
        if score > best + 1e-12:
            best, best_round = score, rounds
        elif rounds - best_round >= p.early_stopping_rounds:
            break
    train_seconds = time.perf_counter() - t_start
    oof_score = np.full(len(q), np.nan)
    test_score = np.zeros(len(X_test))
    test_sizes = query_sizes(tables.test_keys["utrip_id"])
    gains = []
    for model, (a, b, _starts, sizes) in zip(models, held):
        model.finish(best_round)
        oof_score[a:b] = model.predict(data.X[a:b], sizes=sizes)
        test_score += model.predict(X_test, sizes=test_sizes) / n_groups
        gains.append(model.importance())
    log(f"{n_groups} groups x {rounds} rounds, best round {best_round} (pooled held-out NDCG@4 {best:.4f}), "
        f"{train_seconds:.1f}s training, {time.perf_counter() - t_start - train_seconds:.1f}s scoring")
    if np.isnan(oof_score).any():  # pragma: no cover - every row is in exactly one group
        raise RuntimeError("fold loop left OOF rows unscored")
    importance = {f: float(np.mean([gd.get(f, 0.0) for gd in gains])) for f in features}
    return CrossFitResult(
        oof=tables.oof_keys.with_columns(pl.Series("score", oof_score)),
        test=tables.test_keys.with_columns(pl.Series("score", test_score)),
        best_iterations=[best_round] * n_groups,
        importance=dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        info={**models[0].describe(), "rounds": rounds, "best_round": best_round, "eval_every": eval_every,
              "pooled_ndcg4": trace, "train_seconds": round(train_seconds, 2)},
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
    """The candidate tables (OOF: fold after fold, each by trip and priority; test: by trip and
    priority), capped at ``max_candidates`` per trip by pool priority. :func:`candidate_tables`
    puts them in the order the fold loop needs."""
    oof, test = (read_candidates(cand_dir, split, max_candidates) for split in ("oof", "test"))
    return oof, test


def run_ranker_stage(ctx) -> None:
    """A ranker stage (its name picks the registered ranker): cross-fit the ranker, write top-k,
    metrics, importances (JSON + PNG)."""
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
    tables.X_test = spill(tables.X_test, ctx.work / "X_test.npy")  # on disk until the fold models score it
    res = fit_groups(lambda: make_ranker(name, cfg, device), tables, cfg.rankers.n_folds, ctx.log)
    del tables
    oof_topk = rerank(res.oof, name, k)
    test_topk = rerank(res.test, name, k)
    write_json(ctx.out, "importance.json", res.importance)
    plot_importance(res.importance, ctx.out / "importance.png", f"{name}: feature importance (gain, mean of {cfg.rankers.n_folds} folds)")
    extra = {"best_iterations": res.best_iterations, **extra, "top_features": list(res.importance)[:10], **res.info}
    write_outputs(ctx, {name: (oof_topk, test_topk, time.perf_counter() - t0, extra)})
