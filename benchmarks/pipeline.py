"""End-to-end pipeline benchmark: run ./run.sh for an experiment from scratch (a fresh artifacts
folder, so nothing is cached), time it, and write the stage times and the run summary table to
BENCHMARKS.md (section ``pipeline-<experiment>``).

    python benchmarks/pipeline.py                              # configs/base.yaml (small preset)
    python benchmarks/pipeline.py --config configs/medium.yaml
    python benchmarks/pipeline.py --config configs/medium.yaml --artifacts artifacts   # reuse/keep in the repo

Prints the summary and a last line ``wall=<s>s``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    from bench import write_section
    from nextdest.stages import STAGE_LIST

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/base.yaml")
    ap.add_argument("--artifacts", default=None, help="artifacts root (default: a fresh temp folder)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    exp = Path(args.config).stem
    root = Path(args.artifacts).resolve() if args.artifacts else Path(tempfile.mkdtemp(prefix="nextdest-bench-"))
    env = {**os.environ, "NEXTDEST_ARTIFACTS": str(root), "PYTHON": os.environ.get("PYTHON", sys.executable)}
    cmd = [str(ROOT / "run.sh"), "--config", args.config, *args.overrides]
    print("running:", " ".join(cmd), f"(artifacts in {root})", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    print(proc.stdout)
    skipped = [s.name for s in STAGE_LIST if f"[{s.name}] up to date" in proc.stdout]
    if proc.returncode != 0:
        print(f"run.sh failed with exit code {proc.returncode}", file=sys.stderr)
        return proc.returncode
    rows, total = [], 0.0
    for spec in STAGE_LIST:
        man = root / exp / spec.name / "manifest.json"
        if man.exists():
            note = " (cached from an earlier run)" if spec.name in skipped else ""
            m = json.loads(man.read_text())
            sec = m["seconds"]
            total += sec
            cpu = f"{m['cpu_seconds']:.0f}" if m.get("cpu_seconds") is not None else "n/a"
            rss = f"{m['peak_rss_mib']:,.0f}" if m.get("peak_rss_mib") is not None else "n/a"
            rows.append(f"| {spec.name} | {sec:.1f}{note} | {cpu} | {rss} | {m.get('created', '')[:16]} |")
    rows.append(f"| **sum of stage seconds** | **{total:.0f} ({total / 60:.1f} min)** | | | |")
    summary_md = (root / exp / "summary.md").read_text()
    md = "\n".join([
        f"### Pipeline: `./run.sh --config {args.config}` {' '.join(args.overrides)}".rstrip(),
        "",
        (f"Whole run from scratch (nothing cached): **{wall / 60:.1f} min** wall time."
         if not skipped else
         f"This invocation: {wall / 60:.1f} min wall time; reused from the cache: {', '.join(skipped)} "
         f"(their seconds below are from the run that built them)."),
        "",
        "| stage | seconds (stage's own manifest) | CPU s (workers included) | peak RSS MiB | built (UTC) |",
        "|---|---|---|---|---|",
        *rows,
        f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
        summary_md.replace("# Run summary", "#### Run summary"),
    ])
    write_section(f"pipeline-{exp}", md)
    print(f"wall={wall:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
