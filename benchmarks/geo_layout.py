"""How well the learned city map (src/nextdest/rankers/geo.py) recovers the synthetic generator's
true city positions: the map is fitted on an experiment's features exactly as the candidates stage
fits it, then the cosine of every known turn (second last -> last -> next stay, one country) on
the fitted map is correlated with the same cosine on the generator's map. The turns carry the
trip's direction of travel, what the geo_* ranker features read.

    python benchmarks/geo_layout.py --experiment medium [--epochs 0,30] [--no-write]

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
    rows = []
    for epochs in [int(e) for e in args.epochs.split(",")]:
        t0 = time.perf_counter()
        lay = fit_layout(feat, cities, cities.height + FIRST_INDEX, epochs, cfg.seed)
        secs = time.perf_counter() - t0
        c = lay.country
        turn = (p > 0) & (c[p] == c[q]) & (c[q] == c[r]) & (p != q) & (q != r) & lay.fitted[p] & lay.fitted[q] & lay.fitted[r]
        corr = float(np.corrcoef(turn_cosines(lay.xy, p[turn], q[turn], r[turn]), turn_cosines(true, p[turn], q[turn], r[turn]))[0, 1])
        rows.append((epochs, corr, int(turn.sum()), lay.info["cities_fitted"], lay.alpha, lay.kappa, secs))
        print(f"epochs {epochs}: turn-cosine correlation {corr:.3f} over {int(turn.sum()):,} turns, "
              f"{lay.info['cities_fitted']:,} cities, alpha {lay.alpha:.2f}, kappa {lay.kappa:.2f}, {secs:.1f}s", flush=True)
    md = [f"### Learned city map against the generator's map (`python benchmarks/geo_layout.py --experiment {args.experiment} --epochs {args.epochs}`)",
          "",
          f"Preset `{cfg.data.preset}`, seed {cfg.seed}. Correlation of the cosine of each known turn (second last -> last -> next",
          "stay, one country, no trip's last step) on the fitted map with the same turn on the generator's true map; epochs 0",
          "is the spectral start alone. One torch thread (the fit sets it).",
          "",
          "| epochs | turn-cosine correlation | turns | cities placed | alpha | kappa | seconds |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {e} | {c:.3f} | {n:,} | {k:,} | {a:.2f} | {kp:.2f} | {s:.1f} |" for e, c, n, k, a, kp, s in rows]
    if not args.no_write:
        write_section("geo-layout", "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
