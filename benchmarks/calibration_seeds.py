"""Calibration across seeds: generate one preset for several seeds, run the calibration table on
each, and report how many rows pass and which row is closest to (or past) its tolerance.

    python benchmarks/calibration_seeds.py [--seeds 0,1,2,3,4] [--preset full] [--keep DIR] [--no-write]

A generator calibrated on one seed can miss its targets on another when a few global draws (the
map, the biggest cities' placement...) move aggregate statistics; this benchmark is the check that
every row passes whatever the seed. Margins come from :func:`nextdest.data.calibrate.row_margin`
(1 = on target, 0 = on the edge of the tolerance, < 0 = failing). Prints the per-seed table, the
rows with the smallest margin over all seeds, and writes them into the ``calibration-seeds``
section of BENCHMARKS.md. Generates one dataset at a time (full: about 2.5 GB peak, ~40 s on 2
cores) and deletes it unless ``--keep`` is given. Exit status 0 iff every row passes for every seed.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nextdest.data.calibrate import calibration_table, row_margin  # noqa: E402
from nextdest.data.synthetic import PRESETS, generate  # noqa: E402

# Rows shown for every seed (the ones the map and the walk move most).
WATCH = {
    "trips within one hotel country (%)": "one country %",
    "distinct countries per trip": "countries/trip",
    "previous-city baseline (acc@4)": "prev-city",
    "last-two-cities minus previous-city baseline": "last-two gain",
    "ceiling (expected, oracle top-4 mass)": "ceiling",
}


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def run_seed(preset: str, seed: int, keep: Path | None) -> dict:
    out = (keep / f"{preset}_{seed}") if keep else Path(tempfile.mkdtemp(prefix=f"nextdest-cal-{seed}-"))
    try:
        t0 = time.perf_counter()
        info = generate(preset, seed, out)
        gen_s = time.perf_counter() - t0
        rows = calibration_table(out, scale=preset)
    finally:
        if keep is None:
            shutil.rmtree(out, ignore_errors=True)
    for r in rows:
        r["margin"] = row_margin(r)
    checked = [r for r in rows if r["margin"] is not None]
    worst = min(checked, key=lambda r: r["margin"])
    return {"seed": seed, "gen_s": gen_s, "rows": rows, "n_ok": sum(r["pass"] for r in rows),
            "worst": worst, "cross_scale": info.get("cross_scale")}


def report(preset: str, results: list[dict]) -> str:
    buf = io.StringIO()
    seeds = ", ".join(str(r["seed"]) for r in results)
    n_rows = len(results[0]["rows"])
    all_ok = sum(r["n_ok"] == n_rows for r in results)
    buf.write(f"### Calibration across seeds: preset `{preset}`, seeds {seeds}\n\n")
    buf.write(f"- every row passes for **{all_ok}/{len(results)}** seeds "
              f"(`python benchmarks/calibration_seeds.py --preset {preset} --seeds "
              f"{','.join(str(r['seed']) for r in results)}`)\n")
    buf.write("- margin = share of a row's tolerance left (1 on target, 0 on the edge, < 0 fails); "
              "worst row = the smallest margin of the seed\n")
    gen = [r["gen_s"] for r in results]
    buf.write(f"- generation: {min(gen):.1f}-{max(gen):.1f} s per seed\n\n")
    short = list(WATCH.values())
    buf.write("| seed | rows passed | worst row | its value (target, margin) | "
              + " | ".join(short) + " | cross scale | gen s |\n")
    buf.write("|---:|---:|---|---|" + "---:|" * len(short) + "---:|---:|\n")
    for r in results:
        w = r["worst"]
        vals = {row["statistic"]: row["value"] for row in r["rows"]}
        watch = " | ".join(_fmt(vals.get(k, "n/a")) for k in WATCH)
        cs = r["cross_scale"]
        buf.write(f"| {r['seed']} | {r['n_ok']}/{n_rows} | {w['statistic']} | {_fmt(w['value'])} "
                  f"({w['target']}, {w['margin']:.2f}) | {watch} | "
                  f"{'n/a' if cs is None else f'{cs:.3f}'} | {r['gen_s']:.1f} |\n")
    # rows with the smallest margin over all seeds
    by_row: dict[str, list[tuple[float, int, object]]] = {}
    for r in results:
        for row in r["rows"]:
            if row["margin"] is not None:
                by_row.setdefault(row["statistic"], []).append((row["margin"], r["seed"], row["value"]))
    tight = sorted(by_row.items(), key=lambda kv: min(m for m, _, _ in kv[1]))[:8]
    buf.write("\nTightest rows over all seeds (min margin, the seed, its value; then the range of values):\n\n")
    buf.write("| statistic | target | tolerance | min margin | at seed | value | values over seeds |\n")
    buf.write("|---|---:|---|---:|---:|---:|---|\n")
    spec = {row["statistic"]: row for row in results[0]["rows"]}
    for stat, items in tight:
        m, s, v = min(items, key=lambda x: x[0])
        values = [x[2] for x in items]
        rng = f"{_fmt(min(values))} - {_fmt(max(values))}"
        buf.write(f"| {stat} | {spec[stat]['target']} | {spec[stat]['tolerance']} | {m:.2f} | {s} | "
                  f"{_fmt(v)} | {rng} |\n")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    ap.add_argument("--keep", type=Path, default=None, help="keep each dataset in KEEP/<preset>_<seed>")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows of every seed here")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    results = []
    for seed in seeds:
        r = run_seed(args.preset, seed, args.keep)
        w = r["worst"]
        print(f"seed {seed}: {r['n_ok']}/{len(r['rows'])} rows pass; worst: {w['statistic']} = "
              f"{_fmt(w['value'])} (target {w['target']}, margin {w['margin']:.2f}); "
              f"generation {r['gen_s']:.1f} s", flush=True)
        results.append(r)
    text = report(args.preset, results)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "worst"} for r in results],
                                        indent=1, default=str) + "\n")
    if not args.no_write:
        from bench import write_section

        path = write_section("calibration-seeds", text)
        print(f"wrote section 'calibration-seeds' of {path}")
    n_rows = len(results[0]["rows"])
    return 0 if all(r["n_ok"] == n_rows for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
