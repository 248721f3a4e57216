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
of its largest connected part; then AdamW on the sampled softmax, the negatives drawn uniformly
from the step's country (``n_negatives`` per step), at learning rate :data:`GEO_LR`, the cities' log
scales decaying toward the shared scale (:data:`SCALE_DECAY`: a city seen in few steps cannot fit
its own scale to them). Deterministic: single-threaded torch, seeded.

One map for all countries (:func:`_fit_global`, after the per-country fit, on the same steps):
each country's map is placed by its own affine transform ``A_k x + t_k`` (turned, mirrored,
scaled, moved), fitted on the steps that cross a border with the cities' own positions fixed.
Start (:func:`_orient`): the countries' spectral embedding of the crossing graph for the centres;
each map turned so that its border cities face the countries they cross to, one unit across; the
centres' spread by least squares on the crossings' ends; a mirror about the border-facing axis
where it shortens them. A crossing ``c -> j`` scores ``g_j - alpha' log(1 + |G_j - G_c|^2) +
kappa' cos(G_j - G_c, G_c - G_p)`` against cities that end some crossing, outside ``c``'s country.

Features (:func:`geo_features`), missing (null) where a city has no fitted position or the cities
compared are in different countries:

  * ``geo_logit``: the model's logit of the candidate after the last stay (with the momentum of
    the last step), and ``geo_rank``, its rank among the trip's candidates;
  * ``geo_dist_last`` / ``geo_dist_first``: ``log(1 + d^2 / s^2)`` from the last / the first stay;
  * ``geo_cos_step``: cosine of the step last -> candidate with the last step (second last -> last);
  * ``geo_cos_trip``: ... with the trip's summed unit steps (its overall direction of travel);
  * ``geo_cos_home``: ... with the direction from the last stay back to the first;
  * ``geo_straight``: how straight the trip has travelled so far, the mean cosine of its
    consecutive steps (how strongly it keeps its direction; the same for every candidate);
  * ``geo_logp``: ``geo_logit`` normalised over every placed city of the last stay's country (the
    map's log-probability of the step: a pointwise ranker cannot normalise across a trip itself);
  * ``geo_cos_mix``: cosine of the step with the unit last step plus the unit overall direction
    (the heading a walk with momentum keeps).

On the one map (:data:`GLOBAL_FEATURES`, null where a city's country is not placed): ``gx_logit``
(the crossing's logit, candidates in another country than the last stay), ``gx_dist_last``, and
the step's cosines with the last step, the trip's heading and the way home, border crossings
included (``gx_cos_step``, ``gx_cos_trip``, ``gx_cos_home``).

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

GEO_FEATURES = ("geo_logit", "geo_logp", "geo_rank", "geo_cos_mix", "geo_dist_last", "geo_dist_first", "geo_cos_step", "geo_cos_trip", "geo_cos_home",
                "geo_straight")
# With the global map (:func:`_fit_global`), on the one map of all countries: the crossing's logit
# (candidates in another country than the last stay), the distance from the last stay, and the
# cosines of the step with the last step, the trip's heading and the way home.
GLOBAL_FEATURES = ("gx_logit", "gx_dist_last", "gx_cos_step", "gx_cos_trip", "gx_cos_home")
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
    # One map for all countries (:func:`_fit_global`): each country's map placed by its own affine
    # transform, fitted on the steps that cross a border (NaN: the city's country is not placed).
    gxy: np.ndarray | None = None  # (n_index, 2)
    gbias: np.ndarray | None = None  # (n_index,) bias of a city as the end of a border crossing
    galpha: float = 0.0
    gkappa: float = 0.0


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


# The per-country fit's learning rate and the decoupled weight decay of the cities' log scales (AdamW:
# a city with few steps keeps the shared scale; None = no per-city scale at all). Chosen on medium (seed
# 42) by the held-out log-probability of the train trips' final steps (never in the fit) and the rankers'
# CV: against lr 0.05 without decay, -3.2467 against -3.2702 and XGBoost CV 0.5440 against 0.5431; no
# per-city scale, -3.2410 but XGBoost CV 0.5409 (BENCHMARKS.md, geo-regularised).
GEO_LR = 0.02
SCALE_DECAY: float | None = 0.2
GLOBAL_LR = 0.05  # the one map's affine placement (:func:`_fit_global`)


def fit_layout(feat: pl.DataFrame, cities: pl.DataFrame, n_index: int, epochs: int, seed: int,
               n_negatives: int = 64, batch_size: int = 2048, lr: float = GEO_LR,
               scale_decay: float | None = SCALE_DECAY, log=print) -> Layout:
    """Fit the map on the known non-final steps of ``feat`` (module docstring); ``scale_decay``
    None: no per-city scale."""
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
        groups = [{"params": [x, bias, alpha, kappa], "weight_decay": 0.0}]
        if scale_decay is not None:  # else every city keeps log_s = 0 (one shared scale)
            groups.append({"params": [log_s], "weight_decay": scale_decay})
        opt = torch.optim.AdamW(groups, lr=lr)
        order = np.argsort(country, kind="stable")
        start = np.searchsorted(country[order], np.arange(country.max() + 2))
        order_t, start_t = torch.from_numpy(order), torch.from_numpy(start)
        q, r, p = (torch.from_numpy(v) for v in (p1, nx, p2))
        cq = torch.from_numpy(country)[q]
        has_prev = (p > 0) & (torch.from_numpy(country)[p] == cq)

        def batch_logits(j):  # (B,) step indices -> (B, 1 + N) logits, the true next city first
            qb, rb, pb, cb = q[j], r[j], p[j], cq[j]
            lo, size = start_t[cb], start_t[cb + 1] - start_t[cb]
            neg = order_t[lo[:, None] + (torch.rand(len(j), n_negatives, generator=gen) * size[:, None]).long()]  # (B, N)
            cand = torch.cat([rb[:, None], neg], dim=1)  # (B, 1 + N)
            z = _logits(x, bias, log_s, alpha, kappa, qb, pb, has_prev[j], cand)  # (B, 1 + N)
            z = z.masked_fill(cand == qb[:, None], -1e9)
            z[:, 1:] = z[:, 1:].masked_fill(neg == rb[:, None], -1e9)  # accidental hits
            return z

        losses = _sgd(batch_logits, len(q), batch_size, epochs, gen, opt)
        xy = x.detach().double().numpy()
        out = Layout(xy, log_s.detach().double().numpy(), bias.detach().double().numpy(), alpha.item(), kappa.item(),
                     country, fitted, {})
    finally:
        torch.set_num_threads(threads)
    p2a, p1a, nxa = (steps[c].to_numpy().astype(np.int64) for c in ("prev2", "prev1", "next"))
    ginfo = _fit_global(out, p2a, p1a, nxa, epochs, seed, n_negatives, batch_size, GLOBAL_LR) if epochs > 0 else {}
    out.directions = trip_directions(forward, out)
    out.info = {"steps": int(len(p1)), "cities_fitted": int(fitted.sum()), "cities_spectral": int(placed.sum()),
                "epochs": epochs, "lr": lr, "scale_decay": scale_decay, "loss": losses, "alpha": round(out.alpha, 4), "kappa": round(out.kappa, 4),
                "global": ginfo, "seconds": round(time.perf_counter() - t0, 2)}
    trace = f"loss {losses[0]} -> {losses[-1]}, " if losses else ""
    log(f"geo layout: {len(p1):,} same-country steps, {int(fitted.sum()):,} cities, {epochs} epochs, {trace}"
        f"alpha {out.alpha:.2f}, kappa {out.kappa:.2f}, {out.info['seconds']:.0f}s")
    if ginfo:
        log(f"geo global map: {ginfo['cross_steps']:,} border crossings, {ginfo['countries_placed']} countries placed, "
            f"loss {ginfo['loss'][0]} -> {ginfo['loss'][-1]}, alpha {ginfo['alpha']:.2f}, kappa {ginfo['kappa']:.2f}, "
            f"{ginfo['seconds']:.0f}s")
    return out


def _orient(xy: np.ndarray, country: np.ndarray, p1: np.ndarray, nx: np.ndarray, placed: np.ndarray,
            centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A starting transform per country (``G = A x + t``) for :func:`_fit_global`, given the countries'
    starting centres ``centre`` (K, 2): each country's map is turned (and mirrored if need be) so that
    the cities its trips cross the border from face the country they cross to, scaled to a quarter
    of the distance to its nearest placed neighbour, then every country is mirrored about its
    border-facing axis where that brings the two ends of its crossings closer. Returns (A (K, 2, 2),
    t (K, 2))."""
    n_country = len(centre)
    a = np.tile(np.eye(2), (n_country, 1, 1))
    t = centre.copy()
    ids = np.flatnonzero(placed)
    mu = np.zeros((n_country, 2))
    for k in ids:
        mu[k] = xy[country == k].mean(axis=0) if (country == k).any() else 0.0
    # Both ends of every crossing: a city of country k that borders country l.
    c_city, c_from, c_to = np.r_[p1, nx], np.r_[country[p1], country[nx]], np.r_[country[nx], country[p1]]
    axis = np.tile(np.array([1.0, 0.0]), (n_country, 1))
    for k in ids:
        m = c_from == k
        if not m.any():
            continue
        x = xy[c_city[m]] - mu[k]  # (M, 2) local positions of its border cities
        d = centre[c_to[m]] - centre[k]
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)  # (M, 2) where they cross to
        lin = d.T @ x @ np.linalg.inv(x.T @ x + 1e-3 * np.eye(2))  # least squares A x ~ d
        u, sv, vt = np.linalg.svd(lin)
        rot = u @ vt  # the nearest orthogonal map (a mirror included where it fits better)
        radius = float(np.sqrt(((xy[country == k] - mu[k]) ** 2).sum(axis=1)).mean())
        a[k] = rot / max(radius, 1e-6)  # every country one unit across, for a start
        axis[k] = vt[0]  # the local axis that points across the border
    # The centres' spread that brings the ends of the crossings closest (1-D least squares).
    rel = np.einsum("nij,nj->ni", a[country[p1]], xy[p1] - mu[country[p1]]) - np.einsum("nij,nj->ni", a[country[nx]], xy[nx] - mu[country[nx]])
    dc = centre[country[p1]] - centre[country[nx]]
    gamma = max(-float((rel * dc).sum()) / max(float((dc ** 2).sum()), 1e-12), 1e-3)
    centre = gamma * centre
    for k in ids:
        t[k] = centre[k] - a[k] @ mu[k]
    # Mirror a country about its border-facing axis where that shortens its crossings (two passes).
    for _ in range(2):
        for k in ids:
            m = (country[p1] == k) | (country[nx] == k)
            if not m.any():
                continue
            f = 2 * np.outer(axis[k], axis[k]) - np.eye(2)  # reflection keeping that axis
            def spread(ak):
                g1 = np.where((country[p1[m]] == k)[:, None], (ak @ (xy[p1[m]] - mu[k]).T).T + centre[k],
                              np.einsum("nij,nj->ni", a[country[p1[m]]], xy[p1[m]]) + t[country[p1[m]]])
                g2 = np.where((country[nx[m]] == k)[:, None], (ak @ (xy[nx[m]] - mu[k]).T).T + centre[k],
                              np.einsum("nij,nj->ni", a[country[nx[m]]], xy[nx[m]]) + t[country[nx[m]]])
                return float(((g1 - g2) ** 2).sum())
            if spread(a[k] @ f) < spread(a[k]):
                a[k] = a[k] @ f
                t[k] = centre[k] - a[k] @ mu[k]
    return a, t


def _fit_global(layout: Layout, p2: np.ndarray, p1: np.ndarray, nx: np.ndarray, epochs: int, seed: int,
                n_negatives: int, batch_size: int, lr: float) -> dict:
    """Place every country's map on one map: country ``k``'s cities go to ``A_k x + t_k`` (an affine
    transform: a country's local map may come out rotated, mirrored or scaled), fitted with the
    cities' own positions fixed on the border crossings (steps ``p1 -> nx`` between two countries,
    ``p2`` the stay before, 0 = none). A crossing ``c -> j`` scores ``g_j - alpha * log(1 + |G_j -
    G_c|^2) + kappa * cos(G_j - G_c, G_c - G_p)`` against negatives drawn from every city that ends a
    crossing somewhere, outside ``c``'s country. Start: the countries' 2-D spectral embedding of
    the crossing graph (largest connected part; the others stay unplaced). Sets ``layout.gxy``,
    ``gbias``, ``galpha``, ``gkappa``; returns what it did."""
    import torch

    t0 = time.perf_counter()
    country, fitted = layout.country, layout.fitted
    ok = fitted[p1] & fitted[nx] & (country[p1] != country[nx]) & (country[p1] >= 0) & (country[nx] >= 0)
    p2, p1, nx = p2[ok], p1[ok], nx[ok]
    n_index, n_country = len(country), int(country.max()) + 1
    if len(p1) == 0:
        return {}
    # Start: the crossing graph between countries, its largest part embedded in 2-D.
    g = sp.coo_matrix((np.ones(2 * len(p1)), (np.r_[country[p1], country[nx]], np.r_[country[nx], country[p1]])),
                      shape=(n_country, n_country)).tocsr()
    _, comp = connected_components(g, directed=False)
    deg = np.asarray(g.sum(axis=1)).ravel()
    big = np.bincount(comp[deg > 0]).argmax()
    ids = np.flatnonzero((comp == big) & (deg > 0))
    if len(ids) < 2:
        return {}
    sub = g[ids][:, ids].astype(np.float64)
    d = np.asarray(sub.sum(axis=1)).ravel()
    inv = sp.diags(1.0 / np.sqrt(d))
    vals, vecs = np.linalg.eigh((inv @ sub @ inv).toarray())
    u = np.zeros((len(ids), 2))
    smooth = vecs[:, np.argsort(-vals)[1:3]] / np.sqrt(d)[:, None]  # two countries: one such vector
    u[:, :smooth.shape[1]] = (smooth - smooth.mean(axis=0)) / np.maximum(smooth.std(axis=0), 1e-12)
    placed_c = np.zeros(n_country, dtype=bool)
    placed_c[ids] = True
    t_init = np.zeros((n_country, 2))
    t_init[ids] = 4.0 * u  # countries a few of their own (unit) spreads apart
    keep = placed_c[country[p1]] & placed_c[country[nx]]
    p2, p1, nx = p2[keep], p1[keep], nx[keep]
    a_init, t_init = _orient(layout.xy, country, p1, nx, placed_c, t_init)
    ends = np.unique(nx)  # the negatives: every city that ends a crossing
    ccity = np.where(country >= 0, country, 0)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(int(seed) + 1)
        xloc = torch.tensor(layout.xy, dtype=torch.float32)
        kc = torch.from_numpy(ccity)
        t = torch.tensor(t_init, dtype=torch.float32, requires_grad=True)
        a = torch.tensor(a_init, dtype=torch.float32, requires_grad=True)  # (K, 2, 2)
        ends_count = np.bincount(nx, minlength=n_index).astype(np.float64)
        gb = torch.tensor(np.log1p(ends_count), dtype=torch.float32, requires_grad=True)
        galpha = torch.tensor(1.0, requires_grad=True)
        gkappa = torch.tensor(0.3, requires_grad=True)
        opt = torch.optim.Adam([t, a, gb, galpha, gkappa], lr=lr)
        ends_t = torch.from_numpy(ends)
        q, r, p = (torch.from_numpy(v) for v in (p1, nx, p2))
        has_prev = torch.from_numpy(fitted[p2] & (p2 > 0) & (p2 != p1) & placed_c[ccity[p2]] & (country[p2] >= 0))

        def place(i):  # (...,) city indices -> (..., 2) global positions
            return (a[kc[i]] @ xloc[i].unsqueeze(-1)).squeeze(-1) + t[kc[i]]


        def batch_logits(j):  # (B,) crossing indices -> (B, 1 + N) logits, the true next city first
            qb, rb, pb = q[j], r[j], p[j]
            neg = ends_t[torch.randint(len(ends), (len(j), n_negatives), generator=gen)]  # (B, N)
            cand = torch.cat([rb[:, None], neg], dim=1)  # (B, 1 + N)
            gq = place(qb)  # (B, 2)
            diff = place(cand) - gq[:, None, :]  # (B, 1 + N, 2)
            d2 = (diff ** 2).sum(-1)  # (B, 1 + N)
            v = gq - place(pb)  # (B, 2) the last step
            v = v / torch.sqrt((v ** 2).sum(-1, keepdim=True) + 1e-6)
            cos = (diff * v[:, None, :]).sum(-1) / torch.sqrt(d2 + 1e-6)  # (B, 1 + N)
            z = gb[cand] - galpha * torch.log1p(d2) + gkappa * cos * has_prev[j].float()[:, None]
            # Negatives in c's own country are no crossing; accidental hits are no negatives.
            z[:, 1:] = z[:, 1:].masked_fill((kc[neg] == kc[qb][:, None]) | (neg == rb[:, None]), -1e9)
            return z

        batch = max(64, min(batch_size, len(q) // 32))  # crossings are few: smaller batches, more steps
        losses = _sgd(batch_logits, len(q), batch, epochs, gen, opt)
        with torch.no_grad():
            allc = torch.arange(n_index)
            gxy = place(allc).double().numpy()
    finally:
        torch.set_num_threads(threads)
    ok_city = fitted & (country >= 0) & placed_c[ccity]
    layout.gxy = np.where(ok_city[:, None], gxy, np.nan)
    layout.gbias = gb.detach().double().numpy()
    layout.galpha, layout.gkappa = float(galpha.item()), float(gkappa.item())
    return {"cross_steps": int(len(p1)), "countries_placed": int(placed_c.sum()), "loss": losses,
            "alpha": round(layout.galpha, 4), "kappa": round(layout.gkappa, 4), "seconds": round(time.perf_counter() - t0, 2)}


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


def _sgd(batch_logits, n: int, batch_size: int, epochs: int, gen, opt) -> list[float]:
    """``epochs`` passes of Adam over ``n`` examples in seeded random batches; ``batch_logits(j)``
    gives the (B, 1 + N) logits of examples ``j`` with the true class first. Mean loss per epoch."""
    import torch

    losses = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            j = perm[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(batch_logits(j), torch.zeros(len(j), dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(j)
        losses.append(round(total / max(n, 1), 4))
    return losses


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
    cols = [pl.Series("geo_dx", u[:, 0]), pl.Series("geo_dy", u[:, 1]), pl.Series("_turn", turn, nan_to_null=True)]
    aggs = [pl.col("geo_dx").sum(), pl.col("geo_dy").sum(), pl.col("_turn").mean().cast(pl.Float32).alias("geo_straight")]
    if layout.gxy is not None:  # the same heading on the one map, border crossings included
        d = layout.gxy[nx] - layout.gxy[p1]
        n = np.hypot(d[:, 0], d[:, 1])
        g = np.where((np.isfinite(n) & (n > 1e-9))[:, None], d / np.where(np.isfinite(n) & (n > 1e-9), n, 1.0)[:, None], 0.0)
        cols += [pl.Series("gx_dx", g[:, 0]), pl.Series("gx_dy", g[:, 1])]
        aggs += [pl.col("gx_dx").sum(), pl.col("gx_dy").sum()]
    return prefix_steps.select("utrip_id").with_columns(cols).group_by("utrip_id").agg(aggs)


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


def _global_features(df: pl.DataFrame, layout: Layout, c, l1, l2, f) -> list[pl.Series]:
    """:data:`GLOBAL_FEATURES` on the one map (null where a city is not placed on it)."""
    G = layout.gxy
    ok = np.isfinite(G[c, 0]) & np.isfinite(G[l1, 0]) & (c > 0) & (l1 > 0) & (c != l1)
    ux, uy = G[c, 0] - G[l1, 0], G[c, 1] - G[l1, 1]
    with np.errstate(invalid="ignore"):
        dist = np.log1p(ux ** 2 + uy ** 2)
    prev_ok = ok & np.isfinite(G[l2, 0]) & (l2 > 0) & (l2 != l1)
    cos_step = _cos(ux, uy, G[l1, 0] - G[l2, 0], G[l1, 1] - G[l2, 1])
    cross = ok & (layout.country[c] != layout.country[l1])
    logit = layout.gbias[c] - layout.galpha * dist + layout.gkappa * np.where(prev_ok, np.nan_to_num(cos_step), 0.0)
    cos_trip = _cos(ux, uy, df["gx_dx"].fill_null(0.0).to_numpy(), df["gx_dy"].fill_null(0.0).to_numpy())
    home_ok = ok & np.isfinite(G[f, 0]) & (f > 0) & (f != l1)
    cos_home = _cos(ux, uy, G[f, 0] - G[l1, 0], G[f, 1] - G[l1, 1])

    def col(name: str, v: np.ndarray, m: np.ndarray) -> pl.Series:
        return pl.Series(name, np.where(m, v, np.nan).astype(np.float32), nan_to_null=True)

    return [col("gx_logit", logit, cross), col("gx_dist_last", dist, ok), col("gx_cos_step", cos_step, prev_ok),
            col("gx_cos_trip", cos_trip, ok), col("gx_cos_home", cos_home, home_ok)]


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

    # The step's probability under the map: its logit against every other city of the last stay's
    # country (a pointwise ranker cannot normalise across a trip's candidates itself).
    trips = df.select("utrip_id", "city_lag1", "city_lag2").unique("utrip_id", keep="first")
    lse, _ = _country_scan(layout, trips["city_lag1"].fill_null(0).to_numpy().astype(np.int64),
                           trips["city_lag2"].fill_null(0).to_numpy().astype(np.int64), 0)
    lse = df.select("utrip_id").join(trips.select("utrip_id", pl.Series("_lse", lse)), on="utrip_id", how="left",
                                     maintain_order="left")["_lse"].to_numpy()
    # The direction the generator's walk keeps: the trip's overall heading plus its last step.
    sx, sy = df["geo_dx"].fill_null(0.0).to_numpy(), df["geo_dy"].fill_null(0.0).to_numpy()
    sn = np.maximum(np.hypot(sx, sy), 1e-12)
    lx, ly = X[l1] - X[l2], Y[l1] - Y[l2]
    ln = np.maximum(np.hypot(lx, ly), 1e-12)
    mx = np.where(step_ok, lx / ln, 0.0) + sx / sn
    my = np.where(step_ok, ly / ln, 0.0) + sy / sn
    cos_mix = _cos(ux, uy, mx, my)
    if layout.gxy is not None:
        df = df.with_columns(_global_features(df, layout, c, l1, l2, f))
    return df.drop("geo_dx", "geo_dy", "gx_dx", "gx_dy", strict=False).with_columns(
        col("geo_logit", logit, same_1),
        col("geo_logp", logit - lse, same_1 & np.isfinite(lse)),
        col("geo_cos_mix", cos_mix, same_1),
        col("geo_dist_last", dist_last, same_1),
        col("geo_dist_first", dist_first, same_f),
        col("geo_cos_step", cos_step, step_ok),
        col("geo_cos_trip", cos_trip, same_1),
        col("geo_cos_home", cos_home, same_1 & same_f & (f != l1)),
    ).with_columns(  # rank keeps nulls null: no rank where the map has no logit
        pl.col("geo_logit").rank("ordinal", descending=True).over("utrip_id").cast(pl.Float32).alias("geo_rank")
    )


def _country_scan(layout: Layout, last: np.ndarray, prev: np.ndarray, k: int, chunk: int = 1 << 22):
    """For every query row (last stay ``last``, the stay before ``prev``; index arrays, 0 = none):
    the log-sum-exp of the map's logits over every other fitted city of the last stay's country
    (NaN: the last stay has no position), and, for ``k`` > 0, the rows and their ``k`` best cities
    by logit (ties by city index) as a list of (rows (R,), cities (R, kk)) per country."""
    n = len(layout.fitted)
    last = np.where((last > 0) & (last < n), last, 0)
    prev = np.where((prev > 0) & (prev < n), prev, 0)
    ok = layout.fitted[last] & (last > 0)
    lse = np.full(len(last), np.nan)
    tops = []
    for country in np.unique(layout.country[last[ok]]):
        rows = np.flatnonzero(ok & (layout.country[last] == country))
        cands = np.flatnonzero(layout.fitted & (layout.country == country))
        kk = min(k, len(cands) - 1)
        step = max(1, chunk // len(cands))
        for a in range(0, len(rows), step):
            r = rows[a:a + step]
            l1 = last[r][:, None]
            z = step_scores(layout, cands[None, :], l1, prev[r][:, None])[0]  # (R, C)
            z[cands[None, :] == l1] = -np.inf  # not the last stay itself
            if len(cands) > 1:
                m = z.max(axis=1, keepdims=True)  # (R, 1)
                lse[r] = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))).ravel()
            if kk < 1:
                continue
            top = np.argpartition(-z, kk - 1, axis=1)[:, :kk]  # (R, kk) unordered
            zt = np.take_along_axis(z, top, axis=1)
            order = np.lexsort((cands[top], -zt), axis=1)  # by logit, ties by city index
            tops.append((r, cands[np.take_along_axis(top, order, axis=1)]))
    return lse, tops


def geo_top(q: pl.DataFrame, layout: Layout, k: int) -> pl.DataFrame:
    """(utrip_id, city_idx, rank): for each query trip ``q`` (utrip_id, city_lag1, city_lag2), the
    ``k`` cities of its last stay's country with the highest ``geo_logit`` (a pool source: it
    proposes rarely seen cities near the last stay, ahead in the trip's direction)."""
    last = q["city_lag1"].fill_null(0).to_numpy().astype(np.int64)
    prev = q["city_lag2"].fill_null(0).to_numpy().astype(np.int64)
    _, tops = _country_scan(layout, last, prev, k)
    if not tops:
        return pl.DataFrame(schema={"utrip_id": pl.String, "city_idx": pl.Int32, "rank": pl.Int32})
    trips = q["utrip_id"].to_numpy()
    return pl.DataFrame({
        "utrip_id": np.concatenate([np.repeat(trips[r], c.shape[1]) for r, c in tops]),
        "city_idx": np.concatenate([c.ravel() for _, c in tops]).astype(np.int32),
        "rank": np.concatenate([np.tile(np.arange(1, c.shape[1] + 1), len(r)) for r, c in tops]).astype(np.int32),
    })
