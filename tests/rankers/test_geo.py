"""The learned city map (:mod:`nextdest.rankers.geo`): hand-computed features, and a fit that
recovers a known map from walks over it without reading any trip's last step."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from nextdest.rankers.geo import GEO_FEATURES, GLOBAL_FEATURES, Layout, _fit_global, fit_layout, geo_features, geo_top, known_steps, trip_directions


def hand_layout() -> Layout:
    # Index: 0 padding, 1 unused; 2..5 in country 0, 6 in country 1, 7 in country 0 but unfitted.
    xy = np.zeros((8, 2))
    xy[2], xy[3], xy[4], xy[5], xy[6] = [0, 0], [1, 0], [2, 0], [1, 1], [5, 5]
    country = np.array([-1, -1, 0, 0, 0, 0, 1, 0])
    fitted = np.array([False, False, True, True, True, True, True, False])
    return Layout(xy, np.zeros(8), np.array([0, 0, 0.5, 0.2, 0.1, 0.3, 0.4, 0]), 2.0, 1.0, country, fitted, {})


def test_geo_features_hand_computed():
    lay = hand_layout()
    # Trip: 2 -> 3 (first 2, second last 2, last 3); candidates 4 (straight on), 5 (a right angle),
    # 2 (straight back, home), 6 (another country), 7 (no position).
    df = pl.DataFrame({"utrip_id": ["t"] * 5, "city_idx": [4, 5, 2, 6, 7], "city_lag1": [3] * 5,
                       "city_lag2": [2] * 5, "first_city": [2] * 5})
    # Its known steps: 5 -> 2 -> 3, unit steps (-1, -1) / sqrt 2 then (1, 0): a turn of cosine
    # -1 / sqrt 2, summed direction s = (1 - 1 / sqrt 2, -1 / sqrt 2).
    steps = pl.DataFrame({"utrip_id": ["t", "t"], "prev2": [0, 5], "prev1": [5, 2], "next": [2, 3]})
    h = math.sqrt(0.5)
    s = np.array([1 - h, -h]) / math.hypot(1 - h, h)
    out = geo_features(df, lay, trip_directions(steps, lay))
    assert set(GEO_FEATURES) <= set(out.columns)
    r = {c: out[c].to_list() for c in GEO_FEATURES}
    assert r["geo_cos_step"][:3] == pytest.approx([1.0, 0.0, -1.0])
    assert r["geo_cos_trip"][:3] == pytest.approx([s[0], s[1], -s[0]])  # candidate steps (1, 0), (0, 1), (-1, 0)
    assert r["geo_straight"] == pytest.approx([-h] * 5)  # a trip-level feature
    assert r["geo_cos_home"][:2] == pytest.approx([-1.0, 0.0])  # home (2) lies behind: (-1, 0) from 3
    assert r["geo_cos_home"][2] == pytest.approx(1.0)
    assert r["geo_dist_last"][:3] == pytest.approx([math.log(2), math.log(2), math.log(2)])  # d^2 = 1, s = 1
    assert r["geo_dist_first"][:3] == pytest.approx([math.log(5), math.log(3), 0.0])
    # logit = bias - alpha * log(1 + d^2) + kappa * cos_step
    want = [0.1 - 2 * math.log(2) + 1.0, 0.3 - 2 * math.log(2), 0.5 - 2 * math.log(2) - 1.0]
    assert r["geo_logit"][:3] == pytest.approx(want, rel=1e-5)
    assert r["geo_rank"][:3] == [1.0, 2.0, 3.0]
    # Normalised over every other placed city of the last stay's country (2, 4, 5; 7 has no position).
    lse = math.log(sum(math.exp(z) for z in want))
    assert r["geo_logp"][:3] == pytest.approx([z - lse for z in want], rel=1e-5)
    # Heading = unit last step (1, 0) + unit summed direction s.
    m = np.array([1 + s[0], s[1]]) / math.hypot(1 + s[0], s[1])
    assert r["geo_cos_mix"][:3] == pytest.approx([m[0], m[1], -m[0]])
    # Another country or no position: every candidate feature missing.
    for c in set(GEO_FEATURES) - {"geo_straight"}:
        assert r[c][3] is None and r[c][4] is None, c
    # No second last stay in the same country: no step direction, the rest stays.
    one = geo_features(df.with_columns(pl.lit(6).alias("city_lag2")), lay, trip_directions(steps, lay))
    # Steps that cancel out give no direction: 4 -> 2 -> 3 is (-1, 0) then (1, 0).
    back = pl.DataFrame({"utrip_id": ["t", "t"], "prev2": [0, 4], "prev1": [4, 2], "next": [2, 3]})
    flat = geo_features(df, lay, trip_directions(back, lay))
    assert flat["geo_cos_trip"].to_list()[:3] == [None] * 3 and flat["geo_straight"].to_list()[0] == pytest.approx(-1.0)
    assert one["geo_cos_step"].to_list()[0] is None and one["geo_dist_last"].to_list()[0] == pytest.approx(math.log(2))


def walks(n_trips: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """Trips walking with momentum over a 10 x 10 grid of cities (one country, indices 2..101):
    each step goes to a grid neighbour, mostly keeping its direction. Returns (feature-like table,
    cities, true positions by index)."""
    rng = np.random.default_rng(seed)
    side = 10
    pos = np.array([(i % side, i // side) for i in range(side * side)], dtype=float)
    moves = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 1], [-1, -1], [1, -1], [-1, 1]])
    rows = []
    for t in range(n_trips):
        cur = rng.integers(0, side * side)
        heading = moves[rng.integers(0, 8)]
        seq = [cur]
        for _ in range(rng.integers(4, 9) - 1):
            w = np.array([math.exp(2.0 * (m @ heading) / (np.linalg.norm(m) * np.linalg.norm(heading))) for m in moves])
            for _try in range(20):
                m = moves[rng.choice(8, p=w / w.sum())]
                nxt = pos[cur] + m
                if 0 <= nxt[0] < side and 0 <= nxt[1] < side:
                    break
            else:
                continue
            heading, cur = m, int(nxt[1] * side + nxt[0])
            seq.append(cur)
        for k, c in enumerate(seq):
            rows.append({"utrip_id": f"u{t}", "city_idx": c + 2, "city_lag1": seq[k - 1] + 2 if k else 0,
                         "city_lag2": seq[k - 2] + 2 if k > 1 else 0, "is_last": k == len(seq) - 1})
    feat = pl.DataFrame(rows).with_columns(pl.lit(False).alias("is_reversed"), pl.lit(False).alias("is_concealed"))
    cities = pl.DataFrame({"city_idx": np.arange(2, side * side + 2), "country_idx": np.zeros(side * side, dtype=np.int64)})
    true = np.zeros((side * side + 2, 2))
    true[2:] = pos
    return feat, cities, true


def step_cos(xy: np.ndarray, s: pl.DataFrame) -> np.ndarray:
    p, q, r = (s[c].to_numpy() for c in ("prev2", "prev1", "next"))
    ok = (p > 0) & (p != q) & (q != r)
    u, v = xy[r[ok]] - xy[q[ok]], xy[q[ok]] - xy[p[ok]]
    return (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-12)


def test_fit_recovers_the_map_deterministically_without_last_steps():
    feat, cities, true = walks(600, seed=0)
    lay = fit_layout(feat, cities, 102, epochs=15, seed=3, log=lambda *_: None)
    s = known_steps(feat)
    assert s.height == feat.filter(~pl.col("is_last") & (pl.col("city_lag1") > 0)).height
    truth = step_cos(true, s)
    # The fitted map keeps the walks' turns. (On a regular grid the spectral start is already close:
    # 0.90 here; on the synthetic medium data the fit lifts it from 0.48 to 0.85, BENCHMARKS.md.)
    assert np.corrcoef(step_cos(lay.xy, s), truth)[0, 1] > 0.85
    start = fit_layout(feat, cities, 102, epochs=0, seed=3, log=lambda *_: None)
    assert not np.allclose(start.xy, lay.xy) and lay.info["loss"][-1] < lay.info["loss"][0]
    assert lay.kappa > 0.3  # momentum learned
    again = fit_layout(feat, cities, 102, epochs=15, seed=3, log=lambda *_: None)
    assert np.array_equal(lay.xy, again.xy) and lay.alpha == again.alpha
    # The trips' last steps are never read: moving every last city changes nothing.
    moved = feat.with_columns(pl.when(pl.col("is_last")).then(2).otherwise(pl.col("city_idx")).alias("city_idx"))
    other = fit_layout(moved, cities, 102, epochs=15, seed=3, log=lambda *_: None)
    assert np.array_equal(lay.xy, other.xy)


def test_city_scales_decay_toward_the_shared_scale():
    """``scale_decay``: the cities' log scales shrink toward 0 (the shared scale) as the decay grows;
    ``None`` keeps every city at the shared scale; the fitted settings are recorded."""
    feat, cities, _true = walks(300, seed=1)
    spread = {}
    for decay in (0.0, 40.0, None):
        lay = fit_layout(feat, cities, 102, epochs=8, seed=3, scale_decay=decay, log=lambda *_: None)
        spread[decay] = float(np.abs(lay.log_s[lay.fitted]).mean())
        assert lay.info["scale_decay"] == decay and lay.info["lr"] > 0
    assert spread[None] == 0.0 and 0.0 < spread[40.0] < 0.5 * spread[0.0], spread


def test_geo_top_ranks_the_country_by_the_maps_logit():
    lay = hand_layout()
    q = pl.DataFrame({"utrip_id": ["a", "b", "c", "d"], "city_lag1": [3, 6, 7, 3], "city_lag2": [2, 0, 0, 0]})
    top = geo_top(q, lay, 2)
    # a: after 3 from 2, logits 4: 0.1 - 2 ln 2 + 1, 5: 0.3 - 2 ln 2, 2: 0.5 - 2 ln 2 - 1 (3 itself excluded).
    # b: country 1 holds no other city; c: the last stay has no position. d: no momentum, by bias then index.
    assert top.filter(pl.col("utrip_id") == "a")["city_idx"].to_list() == [4, 5]
    assert top.filter(pl.col("utrip_id") == "d")["city_idx"].to_list() == [2, 5]
    assert top["rank"].to_list() == [1, 2, 1, 2] and set(top["utrip_id"]) == {"a", "d"}


def _two_countries():
    feat, cities, true = walks(600, seed=0)
    # The grid's left half is one country, the right half another: walks cross the border often.
    cities = cities.with_columns(((pl.col("city_idx") - 2) % 10 >= 5).cast(pl.Int64).alias("country_idx"))
    s = known_steps(feat)
    p, q, r = (s[c].to_numpy() for c in ("prev2", "prev1", "next"))
    country = np.full(102, -1)
    country[2:] = cities["country_idx"].to_numpy()
    crossing = (p > 0) & (p != q) & (q != r) & ((country[p] != country[q]) | (country[q] != country[r]))
    return feat, cities, true, s, s.filter(pl.Series(crossing))


def test_global_map_puts_two_countries_maps_together():
    feat, cities, true, s, crossing = _two_countries()
    lay = fit_layout(feat, cities, 102, epochs=15, seed=3, log=lambda *_: None)
    # Give the fit each country's true map, the right one turned, shrunk and moved: the global fit must
    # undo that from the border crossings alone (each country's map alone cannot say how they join).
    th = 2.0
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    lay.xy = true.copy()
    right = lay.country == 1
    lay.xy[right] = (true[right] - 7) @ rot.T * 0.3
    both = pl.concat([s, s.filter(pl.col("prev2") > 0).select("utrip_id", pl.col("next").alias("prev2"), "prev1",
                                                              pl.col("prev2").alias("next"))])
    p2, p1, nx = (both[c].to_numpy().astype(np.int64) for c in ("prev2", "prev1", "next"))
    info = _fit_global(lay, p2, p1, nx, 15, 3, 64, 2048, 0.05)
    assert info["countries_placed"] == 2 and info["loss"][-1] < info["loss"][0]
    assert np.corrcoef(step_cos(lay.gxy, crossing), step_cos(true, crossing))[0, 1] > 0.6  # 0.74
    assert np.corrcoef(step_cos(lay.xy, crossing), step_cos(true, crossing))[0, 1] < 0.3  # the local maps: 0.06


def test_global_map_fit_is_deterministic_and_reads_no_last_step():
    feat, cities, true, s, crossing = _two_countries()
    lay = fit_layout(feat, cities, 102, epochs=15, seed=3, log=lambda *_: None)
    assert lay.gxy is not None and lay.info["global"]["countries_placed"] == 2
    # Crossings end closer together on the one map than cities of the two countries do on average.
    a, b = crossing["prev1"].to_numpy(), crossing["next"].to_numpy()
    far = np.linalg.norm(lay.gxy[2:, None, :] - lay.gxy[None, 2:, :], axis=2)[lay.country[2:, None] != lay.country[None, 2:]]
    assert np.median(np.linalg.norm(lay.gxy[a] - lay.gxy[b], axis=1)) < 0.7 * np.median(far)
    moved = feat.with_columns(pl.when(pl.col("is_last")).then(2).otherwise(pl.col("city_idx")).alias("city_idx"))
    other = fit_layout(moved, cities, 102, epochs=15, seed=3, log=lambda *_: None)
    assert np.array_equal(lay.gxy, other.gxy, equal_nan=True)


def test_global_features_hand_computed():
    lay = hand_layout()
    # One map: country 0 as it is, country 1's city 6 at (3, 0); 7 unplaced.
    lay.gxy = lay.xy.copy()
    lay.gxy[6] = [3, 0]
    lay.gxy[7] = np.nan
    lay.gbias, lay.galpha, lay.gkappa = np.array([0, 0, 0, 0, 0, 0, 0.7, 0]), 0.5, 2.0
    df = pl.DataFrame({"utrip_id": ["t"] * 4, "city_idx": [4, 6, 5, 7], "city_lag1": [3] * 4,
                       "city_lag2": [2] * 4, "first_city": [2] * 4})
    steps = pl.DataFrame({"utrip_id": ["t", "t"], "prev2": [0, 6], "prev1": [6, 2], "next": [2, 3]})
    out = geo_features(df, lay, trip_directions(steps, lay))
    r = {c: out[c].to_list() for c in GLOBAL_FEATURES}
    # Crossing logit only for 6 (another country): 0.7 - 0.5 log(1 + 2^2) + 2 cos((2, 0), (1, 0)).
    assert r["gx_logit"][0] is None and r["gx_logit"][1] == pytest.approx(0.7 - 0.5 * math.log(5) + 2.0)
    assert r["gx_dist_last"][:3] == pytest.approx([math.log(2), math.log(5), math.log(2)])
    assert r["gx_cos_step"][:3] == pytest.approx([1.0, 1.0, 0.0])
    # The global heading counts the crossing 6 -> 2 ((-3, 0): unit (-1, 0)) and 2 -> 3 ((1, 0)): they
    # cancel, so no heading; the local one has only 2 -> 3.
    assert r["gx_cos_trip"][:3] == [None] * 3 and out["geo_cos_trip"].to_list()[0] == pytest.approx(1.0)
    assert r["gx_cos_home"][:3] == pytest.approx([-1.0, -1.0, 0.0])
    assert all(r[c][3] is None for c in GLOBAL_FEATURES)  # no position on the map
