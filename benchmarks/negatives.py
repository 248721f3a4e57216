"""How many sampled negatives, and how many epochs: a cross-validation ablation of the training
step on the medium preset (fold 0 trained, validation = fold 0's held-out last cities).

Each variant is its own experiment (``abl-<variant>``: configs written under
``artifacts/_ablation_configs/``), trained from data to the model stage with one thread per
training process, so the figures do not depend on the machine's load. The test accuracy is
reported, never used to choose.

    python benchmarks/negatives.py [--model gru] [--variants full-e6,s2048-e6,s2048-e10] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS = {
    "full-e6": {"sampled_softmax": 0, "epochs": 6},
    "s1024-e10": {"sampled_softmax": 1024, "epochs": 10},
    "s2048-e6": {"sampled_softmax": 2048, "epochs": 6},
    "s2048-e10": {"sampled_softmax": 2048, "epochs": 10},
    "s4096-e10": {"sampled_softmax": 4096, "epochs": 10},
}


def config_file(name: str, v: dict) -> Path:
    path = ROOT / "artifacts" / "_ablation_configs" / f"abl-{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "data:\n  preset: medium\ncv:\n  train_folds: [0]\n"
        f"train:\n  num_threads: 1\n  sampled_softmax: {v['sampled_softmax']}\n  epochs: {v['epochs']}\n"
    )
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gru")
    p.add_argument("--variants", default="full-e6,s2048-e6,s2048-e10")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    from nextdest.config import load_config
    from nextdest.stages import experiment_dir, run_pipeline

    rows = []
    for name in args.variants.split(","):
        cfg = load_config(config_file(name, VARIANTS[name]), [])
        run_pipeline(cfg, ["data", "folds", "features", "baselines", args.model])
        m = json.loads((experiment_dir(cfg) / args.model / "metrics.json").read_text())["models"][args.model]
        rows.append(f"| {name} | {VARIANTS[name]['sampled_softmax'] or 'full'} | {VARIANTS[name]['epochs']} | "
                    f"{m['cv_acc4']:.4f} | {m['test_acc4']:.4f} | {m['best_epochs']['0']} | {m.get('epoch_seconds') or 0:.1f} | {m['seconds']:.0f} |")
        print(rows[-1], flush=True)
    md = "\n".join([
        f"### Sampled negatives and epochs: `python benchmarks/negatives.py --model {args.model} --variants {args.variants}`",
        "",
        f"{args.model}, medium preset, fold 0 trained, one thread per training process (CV = fold 0's held-out trips).",
        "",
        "| variant | negatives | epochs | CV acc@4 | test acc@4 | best epoch | s/epoch | stage s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    if not args.no_write:
        from bench import write_section

        write_section("negatives", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
