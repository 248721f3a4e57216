"""Command line: ``python -m nextdest COMMAND``.

  evaluate             --submission S --truth T          official accuracy@4 of a submission
  validate-submission  S --test T                        check a submission against the test trips
  generate             --preset P --seed S --out DIR     write the synthetic official files
  calibrate            --data DIR [--scale S]            calibration table (synthetic or real files)
  recommend            --model M --trip FILE.csv [--k 4] top cities for a partial trip
  stages               [--plain]                         the pipeline's stages, in order (--plain: name and command, for run.sh)
  lock                 [--stages] [--config C] [key=value ...]  check the config, take the experiment's lock (run.sh)
  unlock               [--config C]                      release it (run.sh, on exit)
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
