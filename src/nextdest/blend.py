"""The blend stage: one weighted sum of every model's normalised scores per (trip, city).

Components: every model with out-of-fold and test top-k tables among the stage's inputs (the
baselines, every model and ranker stage: its top-k inputs in the stage graph). Scores of different models live on
different scales, so each model's score goes through one transform, chosen together with its
weight on the out-of-fold predictions:

* ``rank1`` / ``rank10``: ``1 / (rank + c)`` (reciprocal-rank fusion, c = 1 or 10);
* ``prob``: per-trip probabilities: the scores divided by their sum when they already are
  probabilities (all in [0, 1]), else a per-trip softmax of the scores (logits, ranker margins).

A city outside a model's top-k gets 0 from that model. The weights maximise accuracy@4 on the OOF
validation trips (``blend.search``: ``coordinate`` = coordinate ascent over (transform, weight) per
model from the best single model, ``blend.n_rounds`` passes in a seeded order; ``grid`` = a seeded
random sample of the weight grid per transform choice), deterministic by ``cfg.seed``. Nothing is
hard-coded: the weights, the transforms and the search trace go to ``weights.json``. The search
scores a whole batch of candidate weights in one vectorised pass (:func:`accuracy4_many`), and fits
on at most ``blend.max_fit_trips`` OOF trips (a seeded sample), so its cost is bounded at any scale;
applying the weights is one pass over every row.

The reported CV score is *cross-fitted*: the OOF trips are split into groups by trip; each group is
blended with weights fitted on the other groups, so the blend's CV accuracy is not flattered by
fitting on the very trips it is scored on (the in-sample figure is saved too). Test trips use the
weights fitted on all OOF trips; the test truth is never used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from . import artifacts
from .folds import balanced_groups
from .topk import rerank, validation_truth, write_outputs

TRANSFORMS = ("rank1", "rank10", "prob")
WEIGHT_GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
CROSSFIT_GROUPS = 5


# --------------------------------------------------------------------------- inputs
def transformed(topk: pl.DataFrame, transform: str, is_prob: bool) -> pl.Expr:
    """Expression of ``transform`` over a top-k table's score/rank columns (per trip)."""
    if transform == "rank1":
        return 1.0 / (pl.col("rank").cast(pl.Float64) + 1.0)
    if transform == "rank10":
        return 1.0 / (pl.col("rank").cast(pl.Float64) + 10.0)
    if transform == "prob":
        if is_prob:
            return pl.col("score") / pl.col("score").sum().over("utrip_id").clip(lower_bound=1e-12)
        e = (pl.col("score") - pl.col("score").max().over("utrip_id")).exp()
        return e / e.sum().over("utrip_id")
    raise ValueError(f"unknown transform {transform!r}")


def looks_like_probability(oof: pl.DataFrame) -> bool:
    """Scores that already are probabilities (all within [0, 1])."""
    return bool(oof.height) and float(oof["score"].min()) >= 0.0 and float(oof["score"].max()) <= 1.0


@dataclass
class Matrix:
    """Long (trip, city) table of every component's transformed scores, rows sorted by trip.

    ``X[:, m, t]`` = model m's transform t (0 outside its top-k); ``trip`` = dense trip index of
    each row; ``city`` = raw city id; ``tpos`` = the row of the trip's true city, -1 when the
    trip's true city is not among its rows or the table is unlabeled; ``n_trips`` = the
    accuracy denominator (truth trips; a trip whose true city no model proposed is a miss)."""

    keys: pl.DataFrame  # utrip_id, city_id
    X: np.ndarray  # (rows, models, transforms) float32
    trip: np.ndarray
    city: np.ndarray
    tpos: np.ndarray
    n_trips: int

    def target_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row of each row's true city (clipped to 0), row's city id sorts before the true
        city's, trip index of every true-city row); cached: the search scores the same rows
        thousands of times."""
        if getattr(self, "_tidx", None) is None:
            tp = np.maximum(self.tpos, 0)
            rows_t = np.flatnonzero(self.tpos == np.arange(len(self.tpos)))
            self._tidx = (tp, self.city < self.city[tp], self.trip[rows_t])
        return self._tidx

    def trip_starts(self) -> np.ndarray:
        """First row of each trip (rows are sorted by trip, trips numbered 0..n-1); cached."""
        if getattr(self, "_starts", None) is None:
            if len(self.trip) and np.any(np.diff(self.trip) < 0):
                raise ValueError("blend matrix rows are not sorted by trip")
            self._starts = np.flatnonzero(np.r_[True, self.trip[1:] != self.trip[:-1]]) if len(self.trip) else np.zeros(0, np.int64)
        return self._starts

    def subset(self, rows: np.ndarray, n_trips: int | None = None) -> "Matrix":
        """The rows of boolean mask ``rows``, trips renumbered; a trip whose true-city row is
        dropped is left without one (a miss). ``n_trips``: the new denominator (default: the
        trips kept)."""
        idx = np.flatnonzero(rows)
        trip = np.unique(self.trip[idx], return_inverse=True)[1]
        new_pos = np.full(len(self.trip), -1)
        new_pos[idx] = np.arange(len(idx))
        tpos = np.where(self.tpos[idx] >= 0, new_pos[np.maximum(self.tpos[idx], 0)], -1)
        n = int(trip.max()) + 1 if len(trip) else 0
        return Matrix(self.keys[idx], self.X[idx], trip, self.city[idx], tpos, n if n_trips is None else n_trips)


def build_matrix(tables: dict[str, pl.DataFrame], is_prob: dict[str, bool], truth: pl.DataFrame | None) -> Matrix:
    """Union of the components' (trip, city) pairs with the transformed scores of each model.
    With ``truth`` (utrip_id, city_id), only its trips are kept and ``n_trips`` = its height."""
    names = list(tables)
    keys = pl.concat([t.select("utrip_id", "city_id") for t in tables.values()]).unique()
    if truth is not None:
        keys = keys.join(truth.select("utrip_id"), on="utrip_id", how="semi")
    keys = keys.sort("utrip_id", "city_id")
    X = np.zeros((keys.height, len(names), len(TRANSFORMS)), dtype=np.float32)
    for m, name in enumerate(names):
        tab = tables[name]
        cols = [transformed(tab, t, is_prob[name]).alias(t) for t in TRANSFORMS]
        vals = keys.join(tab.select("utrip_id", "city_id", *cols), on=["utrip_id", "city_id"], how="left").fill_null(0.0)
        X[:, m, :] = vals.select(TRANSFORMS).to_numpy().astype(np.float32)
    trip = keys["utrip_id"].rank("dense").cast(pl.Int64).to_numpy() - 1
    tpos = np.full(keys.height, -1, dtype=np.int64)
    if truth is not None:
        is_t = keys.join(truth.select("utrip_id", "city_id").with_columns(pl.lit(True).alias("_t")),
                         on=["utrip_id", "city_id"], how="left")["_t"].fill_null(False).to_numpy()
        rows_t = np.flatnonzero(is_t)
        of_trip = np.full(int(trip.max()) + 1 if len(trip) else 0, -1, dtype=np.int64)
        of_trip[trip[rows_t]] = rows_t
        tpos = of_trip[trip]
        n = truth.height
    else:
        n = keys["utrip_id"].n_unique()
    return Matrix(keys, X, trip, keys["city_id"].to_numpy(), tpos, n)


def fitting_view(mx: Matrix, max_rank: int = 10) -> Matrix:
    """The rows that can matter for accuracy@4, for fast weight search: trips whose true city is
    in the union, and within them the true city plus the cities some model ranks in its top
    ``max_rank`` (a city below that in every model practically never reaches a blended top 4: on
    the default run 10 and 20 give the same weights, 10 with half the rows).
    The denominator stays the full truth count."""
    near = mx.X[:, :, TRANSFORMS.index("rank1")].max(axis=1) >= 1.0 / (max_rank + 1.0) - 1e-9
    keep = (mx.tpos >= 0) & (near | (mx.tpos == np.arange(len(mx.tpos))))
    return mx.subset(keep, n_trips=mx.n_trips)


# --------------------------------------------------------------------------- scoring
def combine(mx: Matrix, weights: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Blended score of every row: sum_m weights[m] * X[:, m, choice[m]]."""
    s = np.zeros(len(mx.trip), dtype=np.float64)
    for m, (w, t) in enumerate(zip(weights, choice)):
        if w != 0.0:
            s += w * mx.X[:, m, t]
    return s


def accuracy4(mx: Matrix, score: np.ndarray) -> float:
    """accuracy@4 of a blended score with the ordering of :func:`nextdest.topk.rerank` (score
    descending, ties by city id): a trip hits when fewer than 4 of its rows come before its true
    city; trips without their true city among the rows count as misses."""
    return float(accuracy4_many(mx, np.asarray(score, dtype=np.float64)[:, None])[0])


def accuracy4_many(mx: Matrix, scores: np.ndarray, chunk_cells: int = 1 << 23) -> np.ndarray:
    """accuracy@4 of each column of ``scores`` (rows x K), as :func:`accuracy4` computes it for
    one: the search scores a whole batch of candidate weights in one pass. Trips are processed in
    chunks of about ``chunk_cells`` cells, so memory stays bounded for any number of rows."""
    scores = np.asarray(scores)
    K = scores.shape[1]
    if mx.n_trips == 0:
        return np.full(K, np.nan)
    tp, city_before, _trip_t = mx.target_index()
    starts = mx.trip_starts()
    has_t = mx.tpos[starts] >= 0  # trip has its true city among its rows
    hits = np.zeros(K, dtype=np.int64)
    bounds = np.r_[starts, len(mx.trip)]
    step = max(1, chunk_cells // max(K, 1))
    i = 0
    while i < len(starts):
        j = int(np.searchsorted(bounds, bounds[i] + step, side="right")) - 1
        j = min(max(j, i + 1), len(starts))
        lo, hi = bounds[i], bounds[j]
        s = scores[lo:hi]
        ts = scores[tp[lo:hi]]
        ahead = (s > ts) | ((s == ts) & city_before[lo:hi, None])
        n_ahead = np.add.reduceat(ahead, starts[i:j] - lo, axis=0, dtype=np.int32)
        hits += ((n_ahead < 4) & has_t[i:j, None]).sum(axis=0)
        i = j
    return hits / mx.n_trips


# --------------------------------------------------------------------------- search
def coordinate_ascent(mx: Matrix, n_rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Weights and transforms maximising OOF accuracy@4, from the best single model, by coordinate
    ascent over (transform, weight) per model; a move is kept only when it strictly improves. All
    (transform, weight) moves of one model are scored in one batch (:func:`accuracy4_many`); the
    first best move in (transform, weight) order wins, as a sequential scan would pick it."""
    M = mx.X.shape[1]
    singles = accuracy4_many(mx, mx.X[:, :, 0].astype(np.float64))
    weights, choice = np.zeros(M), np.zeros(M, dtype=np.int64)
    weights[int(np.argmax(singles))] = 1.0
    best = accuracy4(mx, combine(mx, weights, choice))
    trace = [{"round": 0, "acc4": best}]
    rng = np.random.default_rng(seed)
    grid = np.asarray(WEIGHT_GRID)
    for r in range(1, n_rounds + 1):
        improved = False
        for m in rng.permutation(M):
            moves = [(t, w) for t in range(len(TRANSFORMS)) for w in grid
                     if not (w == weights[m] and (t == choice[m] or w == 0.0))  # the current setting
                     and not (w == 0.0 and np.count_nonzero(weights) == 1 and weights[m] != 0.0)]  # never drop the last weighted model
            if not moves:
                continue
            base = combine(mx, np.where(np.arange(M) == m, 0.0, weights), choice)
            ts = np.array([t for t, _ in moves])
            ws = np.array([w for _, w in moves])
            cols = mx.X[:, m, :].astype(np.float64)
            acc = accuracy4_many(mx, base[:, None] + ws[None, :] * cols[:, ts])
            k = int(np.argmax(acc))
            if acc[k] > best + 1e-12:
                best, weights[m], improved = float(acc[k]), ws[k], True
                choice[m] = ts[k] if ws[k] else choice[m]
        trace.append({"round": r, "acc4": best})
        if not improved:
            break
    return weights, choice, trace


def grid_search(mx: Matrix, n_rounds: int, seed: int, batch: int = 32) -> tuple[np.ndarray, np.ndarray, list]:
    """A seeded random sample (``200 * n_rounds`` points) of the weight grid x transform choices,
    plus the best single model; the best point by OOF accuracy@4 (the first best in sample order)."""
    M = mx.X.shape[1]
    rng = np.random.default_rng(seed)
    singles = accuracy4_many(mx, mx.X[:, :, 0].astype(np.float64))
    weights, choice = np.zeros(M), np.zeros(M, dtype=np.int64)
    weights[int(np.argmax(singles))] = 1.0
    best = accuracy4(mx, combine(mx, weights, choice))
    trace = [{"sample": 0, "acc4": best}]
    grid = np.asarray(WEIGHT_GRID)
    samples = []
    for i in range(1, 200 * n_rounds + 1):
        w = grid[rng.integers(0, len(grid), M)]
        c = rng.integers(0, len(TRANSFORMS), M)
        if w.any():
            samples.append((i, w, c))
    for b in range(0, len(samples), batch):
        chunk = samples[b:b + batch]
        W = np.array([w for _i, w, _c in chunk]).T  # (M, batch)
        C = np.array([c for _i, _w, c in chunk]).T
        S = np.zeros((len(mx.trip), len(chunk)))
        for m in range(M):  # summed in model order, as combine() does
            S += W[m][None, :] * mx.X[:, m, :].astype(np.float64)[:, C[m]]
        acc = accuracy4_many(mx, S)
        for j, (i, w, c) in enumerate(chunk):
            if acc[j] > best + 1e-12:
                best, weights, choice = float(acc[j]), w.astype(float), c
                trace.append({"sample": i, "acc4": best})
    return weights, choice, trace


def fit_weights(mx: Matrix, search: str, n_rounds: int, seed: int, max_trips: int = 0):
    """(weights, transform choice, trace) by ``search`` on the labeled matrix ``mx``; with
    ``max_trips`` > 0 and more trips than that, on a seeded sample of ``max_trips`` of its trips
    (a handful of weights needs no more: the search's cost stays bounded at any scale)."""
    fn = coordinate_ascent if search == "coordinate" else grid_search
    n = int(mx.trip.max()) + 1 if len(mx.trip) else 0
    if max_trips and n > max_trips:
        keep = np.zeros(n, dtype=bool)
        keep[np.random.default_rng(seed).permutation(n)[:max_trips]] = True
        mx = mx.subset(keep[mx.trip])
    return fn(fitting_view(mx), n_rounds, seed)


def describe(names: list[str], weights: np.ndarray, choice: np.ndarray) -> dict:
    total = float(np.abs(weights).sum()) or 1.0
    return {n: {"weight": float(w / total), "transform": TRANSFORMS[int(c)] if w else None}
            for n, w, c in zip(names, weights, choice)}


def scored_topk(mx: Matrix, weights: np.ndarray, choice: np.ndarray, k: int, model: str = "blend") -> pl.DataFrame:
    """Blend scores -> top-k table (rows scoring 0 - in no weighted model's top-k - dropped)."""
    s = combine(mx, weights, choice)
    df = mx.keys.with_columns(pl.Series("score", s)).filter(pl.col("score") > 0)
    return rerank(df, model, k)


def crossfit_groups(mx: Matrix, seed: int) -> np.ndarray:
    """Group (0..CROSSFIT_GROUPS-1) of every row, by trip (trips are numbered in id order),
    balanced and deterministic by seed."""
    n = int(mx.trip.max()) + 1 if len(mx.trip) else 0
    return balanced_groups(n, CROSSFIT_GROUPS, np.random.default_rng(seed))[mx.trip]


# --------------------------------------------------------------------------- stage
def run_blend_stage(ctx) -> None:
    cfg = ctx.cfg
    t0 = time.perf_counter()
    comps = artifacts.read_model_tables(ctx.topk_inputs())
    if not comps:
        raise RuntimeError("blend: no component top-k tables found")
    names = list(comps)
    is_prob = {n: looks_like_probability(comps[n][0]) for n in names}
    vt = validation_truth(artifacts.scan_features(ctx.input("features")), tuple(cfg.cv.train_folds)).select("utrip_id", "city_id")
    mx = build_matrix({n: o for n, (o, _t) in comps.items()}, is_prob, vt)
    ctx.log(f"components: {', '.join(names)}; {mx.n_trips:,} OOF trips, {len(mx.trip):,} (trip, city) rows")
    singles = dict(zip(names, map(float, accuracy4_many(mx, mx.X[:, :, 0].astype(np.float64)))))

    # Weights on all OOF trips (used for test), and the cross-fitted OOF blend (reported CV).
    weights, choice, trace = fit_weights(mx, cfg.blend.search, cfg.blend.n_rounds, cfg.seed, cfg.blend.max_fit_trips)
    in_sample = accuracy4(mx, combine(mx, weights, choice))
    row_group = crossfit_groups(mx, cfg.seed)
    folds_info = []
    cross_score = np.zeros(len(mx.trip))
    for g in range(CROSSFIT_GROUPS):
        w_g, c_g, _ = fit_weights(mx.subset(row_group != g), cfg.blend.search, cfg.blend.n_rounds, cfg.seed,
                                  cfg.blend.max_fit_trips)
        held = row_group == g
        cross_score[held] = combine(mx, w_g, c_g)[held]
        folds_info.append(describe(names, w_g, c_g))
    oof_df = mx.keys.with_columns(pl.Series("score", cross_score)).filter(pl.col("score") > 0)
    oof_topk = rerank(oof_df, "blend", cfg.blend.top_k)

    test_mx = build_matrix({n: t for n, (_o, t) in comps.items()}, is_prob, None)
    test_topk = scored_topk(test_mx, weights, choice, cfg.blend.top_k)
    info = {
        "components": names,
        "search": cfg.blend.search,
        "n_rounds": cfg.blend.n_rounds,
        "max_fit_trips": cfg.blend.max_fit_trips,
        "seed": cfg.seed,
        "score_is_probability": is_prob,
        "weights": describe(names, weights, choice),
        "oof_acc4_in_sample": in_sample,
        "oof_acc4_crossfit": accuracy4(mx, cross_score),
        "oof_acc4_single": singles,
        "crossfit_groups": CROSSFIT_GROUPS,
        "crossfit_weights": folds_info,
        "trace": trace,
    }
    artifacts.write_json(ctx.out, "weights.json", info)
    ctx.log("weights: " + ", ".join(f"{n} {v['weight']:.3f} ({v['transform']})" for n, v in info["weights"].items() if v["weight"]))
    ctx.log(f"OOF acc@4: in-sample {in_sample:.4f}, cross-fitted {info['oof_acc4_crossfit']:.4f}; best single "
            f"{max(singles, key=singles.get)} {max(singles.values()):.4f}")
    extra = {"weights": info["weights"], "oof_acc4_in_sample": in_sample, "oof_acc4_crossfit": info["oof_acc4_crossfit"]}
    write_outputs(ctx, {"blend": (oof_topk, test_topk, time.perf_counter() - t0, extra)})
