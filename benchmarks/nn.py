"""Benchmark of the neural models: train gru, transformer and mlp through their stages on an
experiment config (default ``configs/medium.yaml``) and write their figures to BENCHMARKS.md
(section ``models``).

Figures per model: CV accuracy@4 (folds cv.train_folds), test accuracy@4 (synthetic ground truth),
gain over the previous-city baseline, headroom share = (model - prev_city) / (ceiling - prev_city)
with the generator's expected ceiling, seconds per epoch, best epochs, stage seconds.

    python benchmarks/nn.py [--config configs/medium.yaml] [--collect-only] [key.sub=value ...]

Stages already up to date are reused (the stage cache), so rerunning only collects.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench import write_section  # noqa: E402
from nextdest.metrics import headroom  # noqa: E402
from nextdest.config import load_config  # noqa: E402
from nextdest.stages import STAGE_LIST, experiment_dir, read_manifest, run_pipeline  # noqa: E402

MODELS = tuple(s.name for s in STAGE_LIST if s.kind == "model")
UPSTREAM = ["data", "folds", "features", "baselines"]


def fmt(x, spec=".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def collect(cfg) -> str:
    exp = experiment_dir(cfg)
    base = json.loads((exp / "baselines" / "metrics.json").read_text())["models"]["prev_city"]
    gen_path = exp / "data" / "generator.json"
    ceiling = json.loads(gen_path.read_text()).get("ceiling_expected") if gen_path.exists() else None
    report = json.loads((exp / "features" / "features_report.json").read_text()) if (exp / "features" / "features_report.json").exists() else {}

    lines = [
        f"Experiment `{cfg.experiment}` (data.preset={cfg.data.preset}, folds {list(cfg.cv.train_folds)}, "
        f"device {cfg.device}, train: epochs {cfg.train.epochs}, batch {cfg.train.batch_size}, lr {cfg.train.lr}, "
        f"seeds {list(cfg.train.seeds)}, sampled_softmax {cfg.train.sampled_softmax}).",
        "",
        f"Feature rows: {report.get('rows_out', {}).get('total', 'n/a')}; generator ceiling (expected acc@4): {fmt(ceiling)}; "
        f"prev_city baseline: CV {fmt(base['cv_acc4'])}, test {fmt(base['test_acc4'])}.",
        "",
        "| model | CV acc@4 | test acc@4 | CV − prev_city | test − prev_city | headroom share (CV / test) | s/epoch | best epochs | stage s | params |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        path = exp / name / "metrics.json"
        if read_manifest(exp / name) is None or not path.exists():
            lines.append(f"| {name} | not run | | | | | | | | |")
            continue
        m = json.loads(path.read_text())["models"][name]
        cv, te = m["cv_acc4"], m["test_acc4"]
        dcv = None if cv is None else cv - base["cv_acc4"]
        dte = None if te is None or base["test_acc4"] is None else te - base["test_acc4"]
        hr = f"{fmt(headroom(cv, base['cv_acc4'], ceiling), '.2f')} / {fmt(headroom(te, base['test_acc4'], ceiling), '.2f')}"
        best = ", ".join(f"f{f}:{'/'.join(map(str, e))}" for f, e in m["best_epochs"].items())
        lines.append(
            f"| {name} | {fmt(cv)} | {fmt(te)} | {fmt(dcv, '+.4f')} | {fmt(dte, '+.4f')} | {hr} | "
            f"{fmt(m.get('epoch_seconds'), '.1f')} | {best} | {m['seconds']:.0f} | {m.get('n_params', 0):,} |"
        )
    lines += ["", "Per-fold CV acc@4: " + "; ".join(
        f"{name} " + ", ".join(f"{f}: {v:.4f}" for f, v in json.loads((exp / name / "metrics.json").read_text())["models"][name]["cv_acc4_folds"].items())
        for name in MODELS if (exp / name / "metrics.json").exists()
    )]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "medium.yaml"))
    p.add_argument("--collect-only", action="store_true", help="do not run stages, only read their metrics")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if not args.collect_only:
        run_pipeline(cfg, UPSTREAM + list(MODELS))
    md = collect(cfg)
    print(md)
    write_section("models", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
