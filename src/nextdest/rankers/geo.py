"""Learned geography: a 2-D map of the cities, fitted to the trips' steps, for candidate features
that place rarely seen cities and carry the trip's direction of travel.

Trips move over a map: a step goes mostly to a nearby city of the same country, keeps its direction
(a trip does not turn straight back) and, at the end, drifts back toward where it began. City
coordinates are not in the data, but the steps reveal them. Each city ``i`` gets a position
``x_i`` (2-D), a bias ``b_i`` and a local scale ``s_i``; a step from ``c`` (previous stay ``p``) to
a city ``j`` of the same country has the logit::

    b_j - alpha * log(1 + |x_j - x_c|^2 / s_c^2) + kappa * cos(x_j - x_c, x_c - x_p)

(a gravity model with momentum; ``alpha`` and ``kappa`` are fitted too). Four numbers per city, so
a city seen in a handful of steps still gets a usable position: that is what the rare cities lack
in the transition counts and the neural models' 64-wide embeddings.

Fit (:func:`fit_layout`): every known step that is *not* a trip's last (train and test trips'
prefixes, original direction), and every run of three such stays read backwards (the map and its
turns are the same walked either way): no fold's validation targets and no concealed test city are used,
so one fit serves every fold and the test trips without leakage. Only steps within one country
(each country gets its own map; positions of two countries are not comparable). Initial positions:
per country, the two smooth eigenvectors of the normalised co-visit graph (Laplacian eigenmaps)
of its largest connected part; then Adam on the sampled softmax, the negatives drawn uniformly
from the step's country (``n_negatives`` per step). Deterministic: single-threaded torch, seeded.

Features (:func:`geo_features`), missing (null) where a city has no fitted position or the cities
compared are in different countries:

  * ``geo_logit``: the model's logit of the candidate after the last stay (with the momentum of
    the last step), and ``geo_rank``, its rank among the trip's candidates;
  * ``geo_dist_last`` / ``geo_dist_first``: ``log(1 + d^2 / s^2)`` from the last / the first stay;
  * ``geo_cos_step``: cosine of the step last -> candidate with the last step (second last -> last);
  * ``geo_cos_trip``: ... with the trip's summed unit steps (its overall direction of travel);
  * ``geo_cos_home``: ... with the direction from the last stay back to the first;
  * ``geo_straight``: how straight the trip has travelled so far, the mean cosine of its
    consecutive steps (how strongly it keeps its direction; the same for every candidate).

On the synthetic data the fitted positions' step cosines correlate 0.85 with the generator's true
ones (medium, seed 42, 30 epochs; 0.77 without the backward steps, 0.48 for the spectral start
alone; BENCHMARKS.md, geo-layout and geo-medium).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh

GEO_FEATURES = ("geo_logit", "geo_rank", "geo_dist_last", "geo_dist_first", "geo_cos_step", "geo_cos_trip", "geo_cos_home",
                "geo_straight")
DENSE_EIG_MAX = 400  # a country's part with at most this many cities: dense eigendecomposition


@dataclass
class Layout:
    """The fitted map: row ``i`` for city index ``i`` (``fitted[i]``: it has a position)."""

    xy: np.ndarray  # (n_index, 2) float64
    log_s: np.ndarray  # (n_index,)
    bias: np.ndarray  # (n_index,)
    alpha: float
    kappa: float
    country: np.ndarray  # (n_index,) country index of every city index (-1: none)
    fitted: np.ndarray  # (n_index,) bool
    info: dict
    directions: pl.DataFrame | None = None  # :func:`trip_directions` of every trip with known steps


def known_steps(feat: pl.DataFrame) -> pl.DataFrame:
    """(utrip_id, prev2, prev1, next) of every known step that is not a trip's last (original
    direction): ``prev2`` = 0 where the step has no stay before ``prev1``."""
    return (
        feat.lazy()
        .filter(~pl.col("is_reversed") & ~pl.col("is_last") & ~pl.col("is_concealed") & (pl.col("city_lag1") > 0))
        .select("utrip_id", pl.col("city_lag2").fill_null(0).alias("prev2"), pl.col("city_lag1").alias("prev1"),
                pl.col("city_idx").alias("next"))
        .collect()
    )


def _spectral_init(a: np.ndarray, b: np.ndarray, country: np.ndarray, n_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per country, the two smooth eigenvectors of the normalised co-visit graph of its largest
    connected part, scaled to unit spread; (positions (n_index, 2), placed (n_index,) bool)."""
    xy = np.zeros((n_index, 2))
    placed = np.zeros(n_index, dtype=bool)
    c = sp.coo_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n_index, n_index)).tocsr()
    c.sum_duplicates()
    deg = np.asarray(c.sum(axis=1)).ravel()
    for k in np.unique(country[deg > 0]):
        ids = np.flatnonzero((country == k) & (deg > 0))
        if len(ids) < 4:
            continue
        sub = c[ids][:, ids]
        _, comp = connected_components(sub, directed=False)
        big = np.bincount(comp).argmax()
        ids = ids[comp == big]
        if len(ids) < 4:
            continue
        sub = c[ids][:, ids].astype(np.float64)
        d = np.asarray(sub.sum(axis=1)).ravel()
        inv = sp.diags(1.0 / np.sqrt(d))
        norm = inv @ sub @ inv
        if len(ids) <= DENSE_EIG_MAX:
            vals, vecs = np.linalg.eigh(norm.toarray())
        else:
            vals, vecs = eigsh(norm, k=3, which="LA", v0=np.sqrt(d) / np.linalg.norm(np.sqrt(d)))
        order = np.argsort(-vals)
        u = vecs[:, order[1:3]] / np.sqrt(d)[:, None]  # random-walk eigenvectors 2 and 3
        u = u * np.sign(u[np.abs(u).argmax(axis=0), [0, 1]])  # a fixed sign per column
        xy[ids] = (u - u.mean(axis=0)) / np.maximum(u.std(axis=0), 1e-12)
        placed[ids] = True
    return xy, placed


def fit_layout(feat: pl.DataFrame, cities: pl.DataFrame, n_index: int, epochs: int, seed: int,
               n_negatives: int = 64, batch_size: int = 2048, lr: float = 0.05, log=print) -> Layout:
    """Fit the map on the known non-final steps of ``feat`` (module docstring)."""
    import torch

    t0 = time.perf_counter()
    country = np.full(n_index, -1, dtype=np.int64)
    country[cities["city_idx"].to_numpy()] = cities["country_idx"].to_numpy()
    forward = known_steps(feat)
    steps = forward
    # Every run of three stays read backwards too (c -> b -> a): the map and the turns are the same
    # walked either way, so this doubles the steps that place the cities (the step cosines of the
    # fitted map correlate 0.85 with the generator's true ones, against 0.77 forwards only).
    back = steps.filter(pl.col("prev2") > 0).select("utrip_id", pl.col("next").alias("prev2"), "prev1", pl.col("prev2").alias("next"))
    steps = pl.concat([steps, back])
    p2, p1, nx = (steps[c].to_numpy().astype(np.int64) for c in ("prev2", "prev1", "next"))
    same = (country[p1] == country[nx]) & (p1 != nx) & (country[p1] >= 0)
    p2, p1, nx = p2[same], p1[same], nx[same]
    xy0, placed = _spectral_init(p1, nx, country, n_index)
    # Cities seen only outside their country's main part start at the centre; the fit moves them.
    fitted = np.zeros(n_index, dtype=bool)
    fitted[p1] = True
    fitted[nx] = True
    visits = np.bincount(np.r_[p1, nx], minlength=n_index).astype(np.float64)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and the stage's other work is single-threaded too
    try:
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.tensor(xy0, dtype=torch.float32, requires_grad=True)
        bias = torch.tensor(np.log1p(visits), dtype=torch.float32, requires_grad=True)
        log_s = torch.zeros(n_index, requires_grad=True)
        alpha = torch.tensor(1.5, requires_grad=True)
        kappa = torch.tensor(0.3, requires_grad=True)
        opt = torch.optim.Adam([x, bias, log_s, alpha, kappa], lr=lr)
        order = np.argsort(country, kind="stable")
        start = np.searchsorted(country[order], np.arange(country.max() + 2))
        order_t, start_t = torch.from_numpy(order), torch.from_numpy(start)
        q, r, p = (torch.from_numpy(v) for v in (p1, nx, p2))
        cq = torch.from_numpy(country)[q]
        has_prev = (p > 0) & (torch.from_numpy(country)[p] == cq)
        losses = []
        for _ in range(epochs):
            perm = torch.randperm(len(q), generator=gen)
            total = 0.0
            for i in range(0, len(q), batch_size):
                j = perm[i:i + batch_size]
                qb, rb, pb, cb = q[j], r[j], p[j], cq[j]
                lo, size = start_t[cb], start_t[cb + 1] - start_t[cb]
                neg = order_t[lo[:, None] + (torch.rand(len(j), n_negatives, generator=gen) * size[:, None]).long()]  # (B, N)
                cand = torch.cat([rb[:, None], neg], dim=1)  # (B, 1 + N): the true next city first
                z = _logits(x, bias, log_s, alpha, kappa, qb, pb, has_prev[j], cand)  # (B, 1 + N)
                z = z.masked_fill(cand == qb[:, None], -1e9)
                z[:, 1:] = z[:, 1:].masked_fill(neg == rb[:, None], -1e9)  # accidental hits
                loss = torch.nn.functional.cross_entropy(z, torch.zeros(len(j), dtype=torch.long))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(j)
            losses.append(round(total / max(len(q), 1), 4))
        xy = x.detach().double().numpy()
        out = Layout(xy, log_s.detach().double().numpy(), bias.detach().double().numpy(), alpha.item(), kappa.item(),
                     country, fitted, {})
    finally:
        torch.set_num_threads(threads)
    out.directions = trip_directions(forward, out)
    out.info = {"steps": int(len(p1)), "cities_fitted": int(fitted.sum()), "cities_spectral": int(placed.sum()),
                "epochs": epochs, "loss": losses, "alpha": round(out.alpha, 4), "kappa": round(out.kappa, 4),
                "seconds": round(time.perf_counter() - t0, 2)}
    trace = f"loss {losses[0]} -> {losses[-1]}, " if losses else ""
    log(f"geo layout: {len(p1):,} same-country steps, {int(fitted.sum()):,} cities, {epochs} epochs, {trace}"
        f"alpha {out.alpha:.2f}, kappa {out.kappa:.2f}, {out.info['seconds']:.0f}s")
    return out


def _logits(x, bias, log_s, alpha, kappa, q, p, has_prev, cand):
    """Logits (B, K) of candidates ``cand`` (B, K) after stay ``q`` (B,) with previous stay ``p``."""
    import torch

    diff = x[cand] - x[q][:, None, :]  # (B, K, 2)
    d2 = (diff ** 2).sum(-1)  # (B, K)
    z = bias[cand] - alpha * torch.log1p(d2 * torch.exp(-2 * log_s[q])[:, None])  # (B, K)
    v = x[q] - x[p]  # (B, 2) the last step
    v = v / torch.sqrt((v ** 2).sum(-1, keepdim=True) + 1e-6)
    cos = (diff * v[:, None, :]).sum(-1) / torch.sqrt(d2 + 1e-6)  # (B, K)
    return z + kappa * cos * has_prev.float()[:, None]


def _cos(ux, uy, vx, vy) -> np.ndarray:
    nu, nv = np.hypot(ux, uy), np.hypot(vx, vy)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ux * vx + uy * vy) / (nu * nv)
    return np.where((nu > 1e-9) & (nv > 1e-9), out, np.nan)


def _unit_steps(a: np.ndarray, b: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (n, 2) of the steps a -> b between fitted cities of one country, and which are."""
    ok = layout.fitted[a] & layout.fitted[b] & (layout.country[a] == layout.country[b]) & (a != b)
    d = layout.xy[b] - layout.xy[a]
    n = np.hypot(d[:, 0], d[:, 1])
    ok &= n > 1e-9
    return np.where(ok[:, None], d / np.maximum(n, 1e-12)[:, None], 0.0), ok


def trip_directions(prefix_steps: pl.DataFrame, layout: Layout) -> pl.DataFrame:
    """(utrip_id, geo_dx, geo_dy, geo_straight): the sum of a trip's unit steps between fitted
    cities of one country, and the mean cosine of its consecutive such steps (null: none), from
    its known steps ``prefix_steps`` (utrip_id, prev2, prev1, next; :func:`known_steps`)."""
    p2, p1, nx = (prefix_steps[c].to_numpy().astype(np.int64) for c in ("prev2", "prev1", "next"))
    u, ok = _unit_steps(p1, nx, layout)
    w, ok2 = _unit_steps(p2, p1, layout)
    turn = np.where(ok & ok2, (u * w).sum(axis=1), np.nan)
    return (
        prefix_steps.select("utrip_id")
        .with_columns(pl.Series("geo_dx", u[:, 0]), pl.Series("geo_dy", u[:, 1]), pl.Series("_turn", turn, nan_to_null=True))
        .group_by("utrip_id")
        .agg(pl.col("geo_dx").sum(), pl.col("geo_dy").sum(), pl.col("_turn").mean().cast(pl.Float32).alias("geo_straight"))
    )


def step_scores(layout: Layout, c: np.ndarray, l1: np.ndarray, l2: np.ndarray):
    """The map's view of the step last stay ``l1`` -> candidate ``c`` after ``l2`` (index arrays
    that broadcast together; 0 = no such stay): (logit, log(1 + d^2 / s^2), cosine with the last
    step, same country as the last stay with both placed, the last step usable)."""
    X, Y = layout.xy[:, 0], layout.xy[:, 1]
    placed = lambda v: layout.fitted[v] & (v > 0)  # noqa: E731
    same = placed(c) & placed(l1) & (layout.country[c] == layout.country[l1])
    step_ok = same & placed(l2) & (layout.country[l2] == layout.country[l1]) & (l2 != l1)
    ux, uy = X[c] - X[l1], Y[c] - Y[l1]
    dist = np.log1p((ux ** 2 + uy ** 2) * np.exp(-2 * layout.log_s[l1]))
    cos = _cos(ux, uy, X[l1] - X[l2], Y[l1] - Y[l2])
    logit = layout.bias[c] - layout.alpha * dist + layout.kappa * np.where(step_ok, np.nan_to_num(cos), 0.0)
    return logit, dist, cos, same, step_ok


def geo_features(df: pl.DataFrame, layout: Layout, directions: pl.DataFrame | None = None) -> pl.DataFrame:
    """Adds :data:`GEO_FEATURES` (module docstring) to ``df`` (utrip_id, city_idx, city_lag1,
    city_lag2, first_city; null / 0: no such stay); ``directions`` (:func:`trip_directions`)
    defaults to the layout's own, computed when it was fitted."""
    n = len(layout.fitted)
    df = df.join(layout.directions if directions is None else directions, on="utrip_id", how="left")

    def idx(col: str) -> np.ndarray:
        v = df[col].fill_null(0).to_numpy().astype(np.int64)
        return np.where((v > 0) & (v < n), v, 0)

    c, l1, l2, f = idx("city_idx"), idx("city_lag1"), idx("city_lag2"), idx("first_city")
    logit, dist_last, cos_step, same_1, step_ok = step_scores(layout, c, l1, l2)
    same_f = layout.fitted[c] & (c > 0) & layout.fitted[f] & (f > 0) & (layout.country[c] == layout.country[f])
    X, Y = layout.xy[:, 0], layout.xy[:, 1]
    ux, uy = X[c] - X[l1], Y[c] - Y[l1]
    cos_trip = _cos(ux, uy, df["geo_dx"].fill_null(0.0).to_numpy(), df["geo_dy"].fill_null(0.0).to_numpy())
    cos_home = _cos(ux, uy, X[f] - X[l1], Y[f] - Y[l1])
    dist_first = np.log1p(((X[c] - X[f]) ** 2 + (Y[c] - Y[f]) ** 2) * np.exp(-2 * layout.log_s[f]))

    def col(name: str, v: np.ndarray, ok: np.ndarray) -> pl.Series:
        return pl.Series(name, np.where(ok, v, np.nan).astype(np.float32), nan_to_null=True)

    return df.drop("geo_dx", "geo_dy").with_columns(
        col("geo_logit", logit, same_1),
        col("geo_dist_last", dist_last, same_1),
        col("geo_dist_first", dist_first, same_f),
        col("geo_cos_step", cos_step, step_ok),
        col("geo_cos_trip", cos_trip, same_1),
        col("geo_cos_home", cos_home, same_1 & same_f & (f != l1)),
    ).with_columns(  # rank keeps nulls null: no rank where the map has no logit
        pl.col("geo_logit").rank("ordinal", descending=True).over("utrip_id").cast(pl.Float32).alias("geo_rank")
    )


def geo_top(q: pl.DataFrame, layout: Layout, k: int, chunk: int = 1 << 22) -> pl.DataFrame:
    """(utrip_id, city_idx, rank): for each query trip ``q`` (utrip_id, city_lag1, city_lag2), the
    ``k`` cities of its last stay's country with the highest ``geo_logit`` (a pool source: it
    proposes rarely seen cities near the last stay, ahead in the trip's direction)."""
    n = len(layout.fitted)
    last = q["city_lag1"].fill_null(0).to_numpy().astype(np.int64)
    prev = q["city_lag2"].fill_null(0).to_numpy().astype(np.int64)
    last = np.where((last > 0) & (last < n), last, 0)
    prev = np.where((prev > 0) & (prev < n), prev, 0)
    ok = layout.fitted[last] & (last > 0)
    trips = q["utrip_id"].to_numpy()
    out_t, out_c, out_r = [], [], []
    for country in np.unique(layout.country[last[ok]]):
        rows = np.flatnonzero(ok & (layout.country[last] == country))
        cands = np.flatnonzero(layout.fitted & (layout.country == country))
        kk = min(k, len(cands) - 1)
        if kk < 1:
            continue
        step = max(1, chunk // len(cands))
        for a in range(0, len(rows), step):
            r = rows[a:a + step]
            l1 = last[r][:, None]
            z = step_scores(layout, cands[None, :], l1, prev[r][:, None])[0]  # (R, C)
            z[cands[None, :] == l1] = -np.inf  # not the last stay itself
            top = np.argpartition(-z, kk - 1, axis=1)[:, :kk]  # (R, kk) unordered
            zt = np.take_along_axis(z, top, axis=1)
            order = np.lexsort((cands[top], -zt), axis=1)  # by logit, ties by city index
            top = np.take_along_axis(top, order, axis=1)
            out_t.append(np.repeat(trips[r], kk))
            out_c.append(cands[top].ravel())
            out_r.append(np.tile(np.arange(1, kk + 1), len(r)))
    if not out_t:
        return pl.DataFrame(schema={"utrip_id": pl.String, "city_idx": pl.Int32, "rank": pl.Int32})
    return pl.DataFrame({"utrip_id": np.concatenate(out_t), "city_idx": np.concatenate(out_c).astype(np.int32),
                         "rank": np.concatenate(out_r).astype(np.int32)})
