"""How each stage's cost grows with the data: seconds and peak RSS per stage for the experiments
tiny, base (small), medium and full, against the number of input rows (train + test reservations),
and the fitted exponent b of seconds ~ rows^b per stage (least squares on log-log, over the
presets where the stage ran and took at least 0.5 s). A stage whose exponent is well above 1 grows
faster than rows x log(rows) and is a finding to explain.

    python benchmarks/scaling.py [--run tiny,base] [--experiments tiny,base,medium,full] [--no-write]

``--run`` first runs the whole pipeline of those experiments (``configs/<name>.yaml``; cached
stages are reused). Figures come from each stage's manifest (``seconds``, ``cpu_seconds``,
``peak_rss_mib``, written by the stage runner); a stage reused from an earlier run reports the
figures of the run that built it. Writes BENCHMARKS.md section ``scaling`` and
``docs/scaling.png`` (log-log seconds and peak RSS against rows).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench import write_section  # noqa: E402
from nextdest.stages import STAGE_LIST, experiment_dir, read_manifest  # noqa: E402

EXPERIMENTS = ("tiny", "base", "medium", "full")


def collect(names: list[str]) -> dict[str, dict]:
    from nextdest.config import load_config

    out = {}
    for name in names:
        path = ROOT / "configs" / f"{name}.yaml"
        if not path.exists():
            continue
        exp = experiment_dir(load_config(path, []))
        report = exp / "data" / "data_report.json"
        if not report.exists():
            continue
        rep = json.loads(report.read_text())
        stages = {}
        for spec in STAGE_LIST:
            m = read_manifest(exp / spec.name)
            if m is not None:
                stages[spec.name] = {k: m.get(k) for k in ("seconds", "cpu_seconds", "peak_rss_mib")}
        out[name] = {"rows": rep["train_rows"] + rep["test_rows"], "trips": rep["train_trips"] + rep["test_trips"],
                     "preset": rep.get("preset"), "folds": list(load_config(path, []).cv.train_folds), "stages": stages}
    return out


def exponent(points: list[tuple[float, float]]) -> float | None:
    pts = [(math.log(r), math.log(s)) for r, s in points if s and s >= 0.5]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return None if sxx == 0 else sum((x - mx) * (y - my) for x, y in pts) / sxx


def table(data: dict[str, dict]) -> str:
    names = list(data)
    head = "| stage | " + " | ".join(f"{n} s / MiB" for n in names) + " | exponent (s vs rows) |"
    lines = [
        "| experiment | preset | input rows | trips | folds trained |", "|---|---|---:|---:|---|",
        *(f"| {n} | {d['preset']} | {d['rows']:,} | {d['trips']:,} | {d['folds']} |" for n, d in data.items()),
        "", head, "|---|" + "---:|" * (len(names) + 1),
    ]
    for spec in STAGE_LIST:
        cells, pts = [], []
        for n in names:
            st = data[n]["stages"].get(spec.name)
            if st is None or st["seconds"] is None:
                cells.append("—")
                continue
            rss = f"{st['peak_rss_mib']:,.0f}" if st.get("peak_rss_mib") is not None else "n/a"
            cells.append(f"{st['seconds']:,.1f} / {rss}")
            pts.append((data[n]["rows"], st["seconds"]))
        b = exponent(pts)
        flag = "" if b is None or b <= 1.15 else " (faster than rows log rows)"
        lines.append(f"| {spec.name} | " + " | ".join(cells) + f" | {'—' if b is None else f'{b:.2f}'}{flag} |")
    return "\n".join(lines)


def plot(data: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for spec in STAGE_LIST:
        pts = [(d["rows"], d["stages"][spec.name]) for d in data.values() if spec.name in d["stages"]]
        if not pts:
            continue
        axes[0].plot([r for r, _ in pts], [max(s["seconds"], 1e-2) for _, s in pts], "o-", label=spec.name)
        rss = [(r, s["peak_rss_mib"]) for r, s in pts if s.get("peak_rss_mib")]
        if rss:
            axes[1].plot([r for r, _ in rss], [m for _, m in rss], "o-", label=spec.name)
    rows = sorted(d["rows"] for d in data.values())
    if rows:
        ref = [rows[0], rows[-1]]
        axes[0].plot(ref, [1.0, rows[-1] / rows[0]], "k--", lw=1, label="∝ rows (from 1 s)")
    axes[0].set(xscale="log", yscale="log", xlabel="input rows (train + test)", ylabel="stage seconds", title="time")
    axes[1].set(xscale="log", yscale="log", xlabel="input rows (train + test)", ylabel="peak RSS (MiB)", title="memory")
    axes[1].axhline(16 * 1024, color="r", lw=1, ls=":", label="16 GiB")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="", help="comma list of experiments to run first (configs/<name>.yaml)")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.run:
        from nextdest.config import load_config
        from nextdest.stages import run_pipeline

        for name in args.run.split(","):
            run_pipeline(load_config(ROOT / "configs" / f"{name}.yaml", []), None)
    data = collect(args.experiments.split(","))
    md = table(data)
    print(md)
    if not args.no_write:
        png = ROOT / "docs" / "scaling.png"
        plot(data, png)
        write_section("scaling", "### Scaling: `python benchmarks/scaling.py`\n\n" + md
                      + "\n\nEach cell: the stage's wall seconds / its process's peak RSS (MiB), from the stage's manifest. "
                      "Plot: `docs/scaling.png`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
