"""Ablations by cross-validation: variants of one experiment, each its own experiment that shares
(hard links) every cached stage it does not change, and one table of CV and test accuracy@4 per
variant and model. Choose on the CV column; the test column is reported, never used to choose.

    python benchmarks/ablation.py --config configs/medium.yaml --section medium-ablation \\
        --variant folds4="cv.n_folds=4 cv.train_folds=[0,1,2,3]" \\
        --variant aux25="models.sasrec.aux_share=0.25" [--until xgb_ranker] [--no-write]

Variant ``ref`` is the experiment as it is (run first, so its cache is complete). Variant ``v``
is experiment ``<experiment>-<v>``: its config file is a copy of the experiment's under
``artifacts/_ablation_configs/`` and its overrides are applied at run time; its artifacts start as
hard links to the reference's (stages write new folders and rename them, so a linked artifact is
never written through), and the stage cache reruns exactly the stages the overrides change (and
their dependents). Submissions go to a temporary folder. Every stage up to ``--until`` (default:
the whole pipeline) runs in this process.

Prints one row per (variant, model) and writes BENCHMARKS.md section ``--section``: CV and test
accuracy@4, the stage's seconds, and whether the variant rebuilt that stage (``rebuilt``) or shares
the reference's (``shared``), with the thread counts each stage ran with.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--variant {text!r}: expected NAME=\"key.sub=value ...\" (NAME: letters, digits, - or _)")
    items = shlex.split(overrides)
    bad = [i for i in items if "=" not in i]
    if bad:
        raise SystemExit(f"--variant {name}: {bad[0]!r} is not a key=value override")
    return name, items


def variant_config(config: Path, experiment: str) -> Path:
    """A copy of the experiment file named after the variant's experiment (the name is the file's)."""
    path = ROOT / "artifacts" / "_ablation_configs" / f"{experiment}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {experiment}: a copy of {config.name} (benchmarks/ablation.py); overrides are applied at run time\n"
                    + config.read_text())
    return path


def share(src: Path, dst: Path) -> None:
    """``dst`` starts as hard links to ``src``'s artifacts (no lock, no temporary folders)."""
    if dst.exists() or not src.exists():
        return
    ignore = shutil.ignore_patterns(".lock", ".tmp-*", "*.tmp")
    shutil.copytree(src, dst, copy_function=os.link, ignore=ignore)


def stage_rows(exp_dir: Path, ref_dir: Path, names: list[str]) -> list[dict]:
    """One row per model metrics.json of the stages ``names`` in ``exp_dir``."""
    from nextdest.stages import read_manifest

    rows = []
    for stage in names:
        man = read_manifest(exp_dir / stage)
        metrics = exp_dir / stage / "metrics.json"
        if not man or not metrics.exists():
            continue
        ref = read_manifest(ref_dir / stage) or {}
        rebuilt = exp_dir != ref_dir and man.get("key") != ref.get("key")
        for model, m in json.loads(metrics.read_text()).get("models", {}).items():
            runtime = man.get("key_parts", {}).get("runtime") or {}
            threads = ", ".join(f"{k} {v}" for k, v in runtime.items()) or "-"
            rows.append({"model": model, "stage": stage, "cv": m.get("cv_acc4"), "test": m.get("test_acc4"),
                         "seconds": m.get("seconds", man.get("seconds")), "built": "rebuilt" if rebuilt else "shared",
                         "threads": threads})
    return rows


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/medium.yaml")
    p.add_argument("--variant", action="append", default=[], help='NAME="key.sub=value ..." (repeatable)')
    p.add_argument("--until", default=None, help="last stage to run (default: every stage)")
    p.add_argument("--section", default=None, help="BENCHMARKS.md section (default: ablation-<experiment>)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    from nextdest.config import load_config
    from nextdest.stages import STAGE_LIST, artifacts_root, experiment_dir, run_pipeline

    config = Path(args.config).resolve()
    variants = [("ref", [])] + [parse_variant(v) for v in args.variant]
    names = [s.name for s in STAGE_LIST]
    if args.until is not None and args.until not in names:
        raise SystemExit(f"--until {args.until!r}: not a stage ({' '.join(names)})")
    names = names[: names.index(args.until) + 1] if args.until else names
    os.environ.setdefault("NEXTDEST_SUBMISSIONS", tempfile.mkdtemp(prefix="nextdest-ablation-"))
    ref_cfg = load_config(config, [])
    ref_dir = experiment_dir(ref_cfg)
    table = []
    for name, overrides in variants:
        if name == "ref":
            cfg = ref_cfg
        else:
            exp = f"{ref_cfg.experiment}-{name}"
            share(ref_dir, artifacts_root() / exp)
            cfg = load_config(variant_config(config, exp), overrides)
        print(f"== variant {name}: {' '.join(overrides) or '(the experiment as it is)'}", flush=True)
        run_pipeline(cfg, names)
        for row in stage_rows(experiment_dir(cfg), ref_dir, names):
            table.append({"variant": name, "overrides": " ".join(overrides) or "-", **row})
            r = table[-1]
            print(f"{name:12s} {r['model']:12s} CV {fmt(r['cv'])}  test {fmt(r['test'])}  {r['seconds'] or 0:8.1f}s  {r['built']}",
                  flush=True)
    lines = [
        f"### Ablation: `python benchmarks/ablation.py --config {args.config} "
        + " ".join(f"--variant {shlex.quote(v)}" for v in args.variant) + (f" --until {args.until}" if args.until else "") + "`",
        "",
        f"Experiment `{ref_cfg.experiment}` (variant `ref`) and its variants; `shared` = the reference's artifact (same cache key),",
        "`rebuilt` = the variant changed it. CV chooses; test is reported only. Threads: the training jobs' torch threads",
        "(neural stages) or the ranker's threads.",
        "",
        "| variant | overrides | model | CV acc@4 | test acc@4 | seconds | stage | threads |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {r['variant']} | `{r['overrides']}` | {r['model']} | {fmt(r['cv'])} | {fmt(r['test'])} | "
          f"{(r['seconds'] or 0):,.0f} | {r['built']} | {r['threads']} |" for r in table),
    ]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        from bench import write_section

        write_section(args.section or f"ablation-{ref_cfg.experiment}", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
