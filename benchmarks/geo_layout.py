"""How well the learned city map (src/nextdest/rankers/geo.py) recovers the synthetic generator's
true city positions: the map is fitted on an experiment's features exactly as the candidates stage
fits it, then the cosine of every known turn (second last -> last -> next stay, one country) on
the fitted map is correlated with the same cosine on the generator's map. The turns carry the
trip's direction of travel, what the geo_* ranker features read.

    python benchmarks/geo_layout.py --experiment medium [--epochs 0,30] [--variants lr=0.02:decay=0.2,...] [--true-map] [--no-write]

Besides the turn cosines (a diagnostic: it needs the generator), each fit reports the held-out
log-probability of the train trips' final steps under the map (the step last stay -> final city
against every placed city of the last stay's country, where both are placed and in one country):
those steps are never in the fit, so this is a cross-validated figure that real data has too.
``--variants`` fits the map with other settings (``lr``, ``decay`` = the cities' log-scale weight
decay, ``none`` = no per-city scale; ``epochs``); ``--true-map`` adds a fit whose positions are the
generator's own (held fixed; biases, scales, alpha and kappa fitted): the figure a perfect map would
reach.

Needs the experiment's data and features stages (synthetic data: the generator's map is rebuilt
from the preset and seed in its config). Writes section ``geo-layout`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def true_positions(cfg, cities):
    """(n_index, 2) generator positions of every city index (NaN for unknown)."""
    import numpy as np

    from nextdest.data import synthetic as S
    from nextdest.schema import FIRST_INDEX

    preset = S.PRESETS[cfg.data.preset]
    ss = np.random.SeedSequence([int(cfg.seed), 20210301])  # the world's stream, as generate() draws it
    world = S._build_world(preset, preset.knobs(), np.random.default_rng(ss.spawn(4)[0]))
    row = {int(c): i for i, c in enumerate(world.city_ids)}
    out = np.full((cities.height + FIRST_INDEX, 2), np.nan)
    ids = cities["city_id"].to_numpy()
    out[cities["city_idx"].to_numpy()] = world.city_xy[[row[int(c)] for c in ids]]
    return out


def turn_cosines(xy, p, q, r):
    import numpy as np

    u, v = xy[r] - xy[q], xy[q] - xy[p]
    return (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-12)


def heldout_logp(lay, feat) -> tuple[float, int]:
    """Mean log-probability (and count) of the train trips' final steps under the map, within the
    last stay's country (steps where the last and the final stay are placed in one country)."""
    import numpy as np
    import polars as pl

    from nextdest.rankers.geo import _country_scan, step_scores

    fin = feat.filter(~pl.col("is_reversed") & pl.col("is_last") & ~pl.col("is_concealed") & (pl.col("city_lag1") > 0))
    l2, l1, c = (fin[k].fill_null(0).to_numpy().astype(np.int64) for k in ("city_lag2", "city_lag1", "city_idx"))
    logit, _d, _cos, same, _ok = step_scores(lay, c, l1, l2)
    lse, _ = _country_scan(lay, l1, l2, 0)
    m = same & np.isfinite(lse) & (c != l1)
    return float((logit[m] - lse[m]).mean()), int(m.sum())


def true_map_fit(true):
    """:func:`fit_layout` with the positions held at ``true`` (its own source, two lines changed)."""
    import inspect
    import textwrap

    import numpy as np

    from nextdest.rankers import geo

    src = textwrap.dedent(inspect.getsource(geo.fit_layout))
    swaps = [("xy0, placed = _spectral_init(p1, nx, country, n_index)",
              "xy0, placed = _spectral_init(p1, nx, country, n_index)\n    xy0 = np.nan_to_num(TRUE_XY)"),
             ('groups = [{"params": [x, bias, alpha, kappa], "weight_decay": 0.0}]',
              'groups = [{"params": [bias, alpha, kappa], "weight_decay": 0.0}]')]
    for a, b in swaps:
        if a not in src:
            raise SystemExit(f"geo_layout --true-map: fit_layout changed, cannot hold the positions ({a!r})")
        src = src.replace(*[a, b])
    ns = dict(geo.__dict__, TRUE_XY=np.asarray(true))
    exec(compile(src, "fit_layout (true positions)", "exec"), ns)
    return ns["fit_layout"]


def main() -> int:
    import numpy as np
    import yaml

    from bench import write_section
    from nextdest import artifacts
    from nextdest.config import load_config
    from nextdest.rankers.geo import fit_layout, known_steps
    from nextdest.schema import FIRST_INDEX

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="medium")
    ap.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    ap.add_argument("--epochs", default="0,30", help="comma list of epoch counts to fit")
    ap.add_argument("--variants", default="", help="comma list of fits with other settings, e.g. lr=0.05:decay=none")
    ap.add_argument("--true-map", action="store_true", help="add a fit with the generator's positions held fixed")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    exp = Path(args.artifacts) / args.experiment
    cfg = load_config(None, [])
    stored = yaml.safe_load((exp / "features" / "config.yaml").read_text())
    cfg = load_config(None, [f"seed={stored['seed']}", f"data.preset={stored['data']['preset']}", f"data.source={stored['data']['source']}"])
    if cfg.data.source != "synthetic":
        raise SystemExit("geo_layout: needs synthetic data (the generator's true map)")
    feat = artifacts.read_features(exp / "features")
    cities = artifacts.read_cities(exp / "features")
    true = true_positions(cfg, cities)
    steps = known_steps(feat)
    p, q, r = (steps[c].to_numpy() for c in ("prev2", "prev1", "next"))
    fits = [(f"epochs {e}", fit_layout, int(e), {}) for e in args.epochs.split(",")]
    for v in filter(None, args.variants.split(",")):
        kv = dict(item.split("=") for item in v.split(":"))
        kw = {}
        if "lr" in kv:
            kw["lr"] = float(kv["lr"])
        if "decay" in kv:
            kw["scale_decay"] = None if kv["decay"] == "none" else float(kv["decay"])
        fits.append((v, fit_layout, int(kv.get("epochs", 30)), kw))
    if args.true_map:
        fits.append(("true positions", true_map_fit(true), 30, {}))
    rows = []
    for name, fit, epochs, kw in fits:
        t0 = time.perf_counter()
        lay = fit(feat, cities, cities.height + FIRST_INDEX, epochs, cfg.seed, **kw)
        secs = time.perf_counter() - t0
        c = lay.country
        turn = (p > 0) & (c[p] == c[q]) & (c[q] == c[r]) & (p != q) & (q != r) & lay.fitted[p] & lay.fitted[q] & lay.fitted[r]
        corr = float(np.corrcoef(turn_cosines(lay.xy, p[turn], q[turn], r[turn]), turn_cosines(true, p[turn], q[turn], r[turn]))[0, 1])
        lp, n_fin = heldout_logp(lay, feat)
        settings = f"lr {lay.info['lr']}, scale decay {lay.info['scale_decay']}"
        rows.append((name, settings, corr, lp, n_fin, int(turn.sum()), lay.info["cities_fitted"], lay.alpha, lay.kappa, secs))
        print(f"{name} ({settings}): turn-cosine correlation {corr:.3f} over {int(turn.sum()):,} turns, held-out final-step "
              f"log-probability {lp:.4f} over {n_fin:,} steps, {lay.info['cities_fitted']:,} cities, alpha {lay.alpha:.2f}, "
              f"kappa {lay.kappa:.2f}, {secs:.1f}s", flush=True)
    cmd = " ".join(sys.argv[1:])
    md = [f"### Learned city map against the generator's map (`python benchmarks/geo_layout.py {cmd}`)",
          "",
          f"Preset `{cfg.data.preset}`, seed {cfg.seed}. Correlation of the cosine of each known turn (second last -> last -> next",
          "stay, one country, no trip's last step) on the fitted map with the same turn on the generator's true map (a",
          "diagnostic); the held-out log-probability of the train trips' final steps within the last stay's country (never in",
          "the fit: the cross-validated figure, higher is better). Epochs 0 is the spectral start alone. One torch thread (the",
          "fit sets it); the seconds include the one map across borders.",
          "",
          "| fit | settings | turn-cosine correlation | held-out final-step log-prob | final steps | turns | cities placed | alpha | kappa | seconds |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {nm} | {st} | {c:.3f} | {lp:.4f} | {nf:,} | {n:,} | {k:,} | {a:.2f} | {kp:.2f} | {s:.1f} |"
           for nm, st, c, lp, nf, n, k, a, kp, s in rows]
    if not args.no_write:
        write_section("geo-layout", "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
