"""Command line: ``python -m nextdest COMMAND``.

  evaluate             --submission S --truth T          official accuracy@4 of a submission
  validate-submission  S --test T                        check a submission against the test trips
  generate             --preset P --seed S --out DIR     write the synthetic official files
  calibrate            --data DIR [--scale S]            calibration table (synthetic or real files)
  recommend            --model M --trip FILE.csv [--k 4] top cities for a partial trip
  stages               [--plain]                         the pipeline's stages, in order (--plain: name and command, for run.sh)
  lock                 [--stages] [--config C] [key=value ...]  check the config, take the experiment's lock (run.sh)
  unlock               [--config C]                      release it (run.sh, on exit)
  run                  [--config C] [--force] [--isolate] STAGE... [key=value ...]
                                                         run those stages in order (run.sh)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _evaluate(args) -> int:
    import polars as pl

    from .data.official import read_truth
    from .metrics import accuracy_at_4_submission
    from .submission import validate_submission

    truth = read_truth(args.truth)
    sub = validate_submission(args.submission, truth.select("utrip_id"))
    acc = accuracy_at_4_submission(sub, truth)
    n = truth.height
    print(f"accuracy@4 = {acc!r}  ({round(acc * n)} of {n} trips)")
    del pl
    return 0


def _validate(args) -> int:
    from .submission import validate_submission

    df = validate_submission(args.submission, args.test)
    print(f"{args.submission}: valid ({df.height} trips, header and cities OK)")
    return 0


def _generate(args) -> int:
    from .data.synthetic import generate

    info = generate(args.preset, args.seed, Path(args.out))
    print(f"wrote train_set.csv, test_set.csv, ground_truth.csv, oracle files to {args.out}")
    for key in ("ceiling_expected", "ceiling_realized"):
        if key in info:
            print(f"{key}: {info[key]:.4f}")
    return 0


def _calibrate(args) -> int:
    from .artifacts import read_generator
    from .data.calibrate import run_calibration

    scale = args.scale
    if scale == "auto":  # a synthetic folder says its preset; real files are full scale
        scale = read_generator(Path(args.data)).get("preset", "full")
    return run_calibration(Path(args.data), scale=scale)


def _recommend(args) -> int:
    if args.k < 1:
        raise ValueError(f"--k {args.k}: the number of cities to list must be at least 1")
    from .recommend import recommend

    for rank, (city, score) in enumerate(recommend(Path(args.model), Path(args.trip), k=args.k), 1):
        print(f"{rank}. city_id {city}  score {score:.4f}")
    return 0


def _stages(args) -> int:
    from .stages import STAGE_LIST

    for s in STAGE_LIST:
        if args.plain:
            print(s.name, *s.command)
        else:
            print(f"{s.name:12s} {' '.join(s.command):38s} after: {', '.join(s.deps) or '-'}")
    return 0


def _lock(args) -> int:
    """Check the whole config (one-line error, exit 2) and take the experiment's lock for the
    holder process (run.sh: its own shell, $NEXTDEST_LOCK_HOLDER), so a second run of the same
    experiment is refused before any stage starts. With ``--stages``, then print the stage list as
    ``stages --plain`` does (run.sh: one process instead of two)."""
    from .config import load_config
    from .lock import acquire
    from .stages import experiment_dir

    cfg = load_config(args.config, args.overrides)
    acquire(experiment_dir(cfg))
    return _stages(argparse.Namespace(plain=True)) if args.stages else 0


def _unlock(args) -> int:
    from .config import BASE_CONFIG
    from .lock import release
    from .stages import artifacts_root

    release(artifacts_root() / Path(args.config or BASE_CONFIG).stem)
    return 0


def _release_memory() -> None:
    """Hand the memory of the stage that just ended back to the OS before the next one starts: a
    garbage collection, then glibc's ``malloc_trim`` (the tuned allocator keeps freed blocks)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def isolate_stages(cfg) -> bool:
    """Real-size data (the official files, or the synthetic ``full`` preset) runs every stage in its
    own process: a stage's peak RSS is then its own, and its memory is back with the OS before the
    next stage starts."""
    return cfg.data.source == "official" or cfg.data.preset == "full"


def source_hashes() -> dict[str, str]:
    """SHA-256 of every module of the package and every stage script, by path."""
    import hashlib

    from .config import ROOT

    files = sorted(Path(__file__).resolve().parent.rglob("*.py")) + sorted((ROOT / "pipelines").glob("*.py"))
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def changed_sources(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files whose content differs between two :func:`source_hashes` (added or removed included)."""
    return sorted(f for f in set(before) | set(now) if before.get(f) != now.get(f))


def _run(args) -> int:
    """Run the named stages in order, each through its ``pipelines/`` script's ``main`` with the
    same arguments as ``python pipelines/NN_x.py ...``. By default one Python process runs them all
    (imports once: about 2 s of CPU saved per stage); ``--isolate`` (or real-size data) starts a
    process per stage. The first stage that fails ends the run with its exit code.

    One process keeps the modules it imported, while a stage's cache key hashes the files as they
    are when it starts: if the code is edited during a long run, a later stage would run the old
    code under the new code's key. So before each stage the package's files are compared with the
    run's start, and once they differ every remaining stage runs in its own process (new imports)."""
    import importlib.util
    import subprocess
    import time

    from .config import ROOT, load_config
    from .stages import STAGES

    names = [a for a in args.items if "=" not in a]
    overrides = [a for a in args.items if "=" in a]
    for name in names:
        if name not in STAGES:
            print(f"unknown stage '{name}' (stages: {' '.join(STAGES)})", file=sys.stderr)
            return 2
    isolate = args.isolate or isolate_stages(load_config(args.config, overrides))
    options = [*(["--config", args.config] if args.config else []), *(["--force"] if args.force else [])]
    print(f"[run] {len(names)} stage(s), {'a process per stage' if isolate else 'in one process'}", flush=True)
    start = time.perf_counter()
    at_start = source_hashes() if not isolate else {}
    for name in names:
        script, *rest = STAGES[name].command
        argv = [*options, *rest, *overrides]  # options first: a component's name and the overrides are one run of positionals
        if not isolate and (changed := changed_sources(at_start, source_hashes())):
            shown = ", ".join(str(Path(f).relative_to(ROOT)) if Path(f).is_relative_to(ROOT) else f for f in changed[:5])
            shown += " ..." if len(changed) > 5 else ""
            print(f"[run] the code changed since this run started ({shown}): '{name}' and every later stage "
                  "run in their own processes, so each runs the code its cache key records", flush=True)
            isolate = True
        if isolate:
            rc = subprocess.run([sys.executable, str(ROOT / script), *argv]).returncode
        else:
            spec = importlib.util.spec_from_file_location(f"nextdest_stage_{Path(script).stem}", ROOT / script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            rc = module.main(argv)
            _release_memory()
        if rc:
            return rc
    print(f"[run] {len(names)} stage(s) finished in {time.perf_counter() - start:.0f}s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nextdest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate", help="official accuracy@4 of a submission")
    e.add_argument("--submission", required=True)
    e.add_argument("--truth", required=True)
    e.set_defaults(fn=_evaluate)
    v = sub.add_parser("validate-submission", help="check a submission file")
    v.add_argument("submission")
    v.add_argument("--test", required=True, help="test_set.csv (or a test parquet)")
    v.set_defaults(fn=_validate)
    g = sub.add_parser("generate", help="write the synthetic dataset")
    g.add_argument("--preset", default="small", choices=["tiny", "small", "medium", "full"])
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--out", required=True)
    g.set_defaults(fn=_generate)
    c = sub.add_parser("calibrate", help="calibration report of a data folder")
    c.add_argument("--data", required=True)
    c.add_argument("--scale", default="auto", choices=["auto", "tiny", "small", "medium", "full"],
                   help="scale the counts are checked at (auto: generator.json's preset, else full)")
    c.set_defaults(fn=_calibrate)
    r = sub.add_parser("recommend", help="top cities for a partial trip")
    r.add_argument("--model", required=True, help="a model stage folder (artifacts/EXP/MODEL) or a model.pt")
    r.add_argument("--trip", required=True, help="CSV in the official row format")
    r.add_argument("--k", type=int, default=4)
    r.set_defaults(fn=_recommend)
    s = sub.add_parser("stages", help="list the pipeline stages")
    s.add_argument("--plain", action="store_true", help="one line per stage: its name, then its script and arguments")
    s.set_defaults(fn=_stages)
    lk = sub.add_parser("lock", help="check the config and take the experiment's lock (run.sh does this)")
    lk.add_argument("--config", default=None)
    lk.add_argument("--stages", action="store_true", help="then print the stage list (as stages --plain)")
    lk.add_argument("overrides", nargs="*")
    lk.set_defaults(fn=_lock)
    ul = sub.add_parser("unlock", help="release the experiment's lock (run.sh does this on exit)")
    ul.add_argument("--config", default=None)
    ul.set_defaults(fn=_unlock)
    rn = sub.add_parser("run", help="run stages in order (run.sh does this)")
    rn.add_argument("--config", default=None)
    rn.add_argument("--force", action="store_true", help="rerun the stages even when cached")
    rn.add_argument("--isolate", action="store_true", help="every stage in its own process")
    rn.add_argument("items", nargs="*", help="stage names, then dotted overrides (key.sub=value)")
    rn.set_defaults(fn=_run)
    args = p.parse_args(argv)
    from .data.official import DataError
    from .lock import LockError
    from .submission import SubmissionError

    try:
        return args.fn(args)
    except (DataError, SubmissionError, LockError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
