"""Benchmark the synthetic generator: time one generation, run the calibration, record both.

    python benchmarks/generate.py --preset full [--seed 42] [--out DIR] [--no-write]

Prints the timing and the calibration table and writes them into the "generator" section of
BENCHMARKS.md (benchmarks/bench.py: write_section). Only one full-scale generation should run at a
time (about 2.5 GB of peak memory, 1-1.5 min on 2 shared cores).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

from nextdest.data.calibrate import calibration_table, format_table
from nextdest.data.synthetic import PRESETS, generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temp dir)")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix=f"nextdest-gen-{args.preset}-"))
    t0 = time.perf_counter()
    info = generate(args.preset, args.seed, out)
    gen_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows = calibration_table(out, scale=args.preset)
    cal_s = time.perf_counter() - t1
    n_ok = sum(r["pass"] for r in rows)

    c = info["counts"]
    buf = io.StringIO()
    buf.write(f"### Synthetic generator: preset `{args.preset}`, seed {args.seed}\n\n")
    buf.write(f"- generation: **{gen_s:.1f} s** wall (writes the 3 CSVs, 2 oracle parquets, "
              f"generator.json); calibration table: {cal_s:.1f} s\n")
    buf.write(f"- train {c['train_trips']:,} trips / {c['train_rows']:,} rows; test "
              f"{c['test_trips']:,} trips / {c['test_rows']:,} rows; {c['users']:,} users; pools: "
              f"{c['cities']:,} cities, {c['countries']} countries, {c['affiliates']:,} affiliates\n")
    buf.write(f"- oracle ceiling on test: expected {info['ceiling_expected']:.4f}, realized "
              f"{info['ceiling_realized']:.4f}; on train last rows: expected "
              f"{info['ceiling_expected_train']:.4f}, realized {info['ceiling_realized_train']:.4f}\n")
    buf.write(f"- calibration: {n_ok}/{len(rows)} rows pass"
              + ("" if args.preset == "full" else f" (count-like rows n/a at scale {args.preset})")
              + "\n\n")
    buf.write("Preset sizes (train trips / test trips / city pool / countries / affiliate pool):\n\n")
    for p in PRESETS.values():
        buf.write(f"- `{p.name}`: {p.n_train_trips:,} / {p.n_test_trips:,} / {p.n_cities:,} / "
                  f"{p.n_countries} / {p.n_affiliates:,}\n")
    buf.write("\n" + format_table(rows) + "\n")
    text = buf.getvalue()
    print(text)
    print(f"(files in {out})")
    if not args.no_write:
        from bench import write_section

        path = write_section("generator", text)
        print(f"wrote section 'generator' of {path}")
    return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
