"""Benchmark: the polars feature build (nextdest.features) against a plain pandas implementation.

    python benchmarks/features.py --preset full        # 1.55M rows; data cached in /tmp
    python benchmarks/features.py --preset small --repeat 3 --reverse

Generates (or reuses) the synthetic official files with ``nextdest.data.synthetic.generate``,
reads them with ``nextdest.data.official.load_official``, assigns folds, then times
``build_features`` (polars, on the engine ``features.engine=auto`` resolves to) and
``build_features_pandas`` (benchmarks/features_pandas.py) on the same inputs, checks that both
produce the same feature and city tables, measures the peak resident memory of each run (RSS
sampled by a thread, above the level before the run), writes the figures to BENCHMARKS.md
(section "features") and prints as its last line ``polars=<s>s pandas=<s>s speedup=<x>x``.

Timings are the best of ``--repeat`` runs (the machine may be shared); the inputs are converted
to pandas before the pandas clock starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from polars.testing import assert_frame_equal  # noqa: E402

from features_pandas import build_features_pandas, to_pandas, to_polars  # noqa: E402
from bench import write_section  # noqa: E402
from nextdest.config import load_config  # noqa: E402
from nextdest.data.official import load_official  # noqa: E402
from nextdest.device import resolve_polars_engine  # noqa: E402
from nextdest.features import build_features  # noqa: E402
from nextdest.folds import assign_folds  # noqa: E402
from nextdest.schema import CITIES, FEATURES  # noqa: E402

CACHE = Path(os.environ.get("NEXTDEST_BENCH_CACHE", "/tmp/nextdest_bench"))


class PeakRSS:
    """Peak resident set size of this process while the block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def added_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def dataset(preset: str, seed: int) -> Path:
    """The generator's files for (preset, seed), generated once into the cache folder."""
    out = CACHE / f"{preset}-{seed}"
    if (out / "train_set.csv").exists() and (out / "test_set.csv").exists():
        print(f"reusing {out}", flush=True)
        return out
    from nextdest.data.synthetic import generate

    tmp = CACHE / f".{preset}-{seed}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generating preset {preset!r} (seed {seed}) into {out} ...", flush=True)
    t0 = time.perf_counter()
    generate(preset, seed, tmp)
    tmp.rename(out)
    print(f"generated in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def timed(fn, repeat: int):
    """(best wall seconds, best CPU seconds, peak added RSS MiB over the runs, last result)."""
    best_wall = best_cpu = float("inf")
    peak = 0.0
    result = None
    for _ in range(repeat):
        result = None
        with PeakRSS() as mem:
            w, c = time.perf_counter(), time.process_time()
            result = fn()
            wall, cpu = time.perf_counter() - w, time.process_time() - c
        best_wall, best_cpu, peak = min(best_wall, wall), min(best_cpu, cpu), max(peak, mem.added_mib)
    return best_wall, best_cpu, peak, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="full", choices=["tiny", "small", "medium", "full"])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each implementation; the best is reported")
    ap.add_argument("--reverse", action="store_true", help="also add reversed trips (features.reverse_augment)")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = ap.parse_args(argv)

    raw = dataset(args.preset, args.seed)
    t0 = time.perf_counter()
    train, test, truth, _ = load_official(raw / "train_set.csv", raw / "test_set.csv", raw / "ground_truth.csv")
    folds = assign_folds(train["utrip_id"], test["utrip_id"], 5, args.seed)
    t_load = time.perf_counter() - t0
    n_rows = train.height + test.height
    print(f"loaded {train.height:,} train + {test.height:,} test rows in {t_load:.1f}s", flush=True)

    engine, why = resolve_polars_engine("auto")
    fcfg = dataclasses.replace(load_config(None).features, engine=engine, reverse_augment=args.reverse)  # base.yaml's defaults
    pl_wall, pl_cpu, pl_mem, (feats, cities, vocab) = timed(
        lambda: build_features(train, test, folds, fcfg, engine=engine), args.repeat
    )
    print(f"polars ({vocab['engine']['ran']}): {pl_wall:.2f}s wall, {pl_cpu:.2f}s CPU, +{pl_mem:.0f} MiB peak RSS", flush=True)

    ptrain, ptest, pfolds = to_pandas(train), to_pandas(test), to_pandas(folds)
    pd_wall, pd_cpu, pd_mem, (pdf, pvoc) = timed(
        lambda: build_features_pandas(
            ptrain, ptest, pfolds, n_lags=fcfg.n_lags, rare_city_min_count=fcfg.rare_city_min_count,
            rare_affiliate_min_count=fcfg.rare_affiliate_min_count, reverse_augment=args.reverse,
        ),
        args.repeat,
    )
    print(f"pandas: {pd_wall:.2f}s wall, {pd_cpu:.2f}s CPU, +{pd_mem:.0f} MiB peak RSS", flush=True)

    assert_frame_equal(feats, to_polars(pdf, FEATURES))
    assert_frame_equal(cities, to_polars(pvoc["cities"], CITIES))
    print(f"outputs equal: {feats.height:,} feature rows x {feats.width} columns, {cities.height:,} cities", flush=True)

    speedup = pd_wall / pl_wall
    md = "\n".join([
        "## Feature build: polars vs pandas",
        "",
        f"`python benchmarks/features.py --preset {args.preset}{' --reverse' if args.reverse else ''} --repeat {args.repeat}`: "
        f"synthetic preset `{args.preset}` (seed {args.seed}), {n_rows:,} reservations "
        f"({train.height:,} train, {test.height:,} test) -> {feats.height:,} feature rows; "
        f"reversed trips {'on' if args.reverse else 'off'}. Best of {args.repeat} runs; memory is the peak RSS "
        "above the level before the run. Both implementations produce identical feature and city tables (checked).",
        "",
        "| implementation | wall s | CPU s | peak RSS added MiB |",
        "|---|---:|---:|---:|",
        f"| polars `build_features` (engine: {vocab['engine']['ran']}) | {pl_wall:.2f} | {pl_cpu:.2f} | {pl_mem:.0f} |",
        f"| pandas `benchmarks/features_pandas.py` | {pd_wall:.2f} | {pd_cpu:.2f} | {pd_mem:.0f} |",
        "",
        f"Speedup (wall): **{speedup:.1f}x**. Engine: {why}. CSV load + validation (not timed above): {t_load:.1f}s. "
        f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(the machine is shared; CPU seconds are the steadier figure).",
    ])
    if not args.no_write:
        write_section("features", md)
    print(f"polars={pl_wall:.2f}s pandas={pd_wall:.2f}s speedup={speedup:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
