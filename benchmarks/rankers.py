"""Benchmark: every model, ranker and the blend of a finished experiment, side by side.

    python benchmarks/rankers.py                       # artifacts/medium
    python benchmarks/rankers.py --exp artifacts/base --no-write

Reads the experiment's ``*/metrics.json`` (baselines, gru, transformer, mlp, xgb_ranker,
lgb_ranker, blend), ``data/generator.json`` (``ceiling_expected``: the generator's own
distribution's expected accuracy@4 on test) and ``candidates/recall.json``, prints a table of CV
accuracy@4, test accuracy@4, headroom share = (x - prev_city) / (ceiling - prev_city) (on test
and on CV, each against prev_city's own figure) and seconds, plus the candidate pool's recall;
writes it to BENCHMARKS.md (section "rankers") unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from bench import write_section  # noqa: E402
from nextdest.metrics import headroom  # noqa: E402
from nextdest.stages import STAGE_LIST  # noqa: E402

MARGIN = 0.005  # accuracy@4 a ranker must gain over the best neural model, and the blend over every component
HEADROOM_TARGET = 0.60
STAGES = tuple(s.name for s in STAGE_LIST if s.topk)
KIND = {s.name: s.kind for s in STAGE_LIST}


def fmt(x, pct=False):
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def collect(exp: Path) -> dict:
    models = {}
    for stage in STAGES:
        path = exp / stage / "metrics.json"
        if path.exists():
            for name, m in json.loads(path.read_text())["models"].items():
                models[name] = {**m, "stage": stage}
    return models


def targets(models: dict, base: dict, ceiling) -> list[str]:
    """The quality targets of the rankers/blend issue, each checked on these figures: every ranker
    beats the best neural model, and the blend every component, by >= MARGIN on CV with the same
    order on test; the blend captures >= HEADROOM_TARGET of the headroom on test."""
    nn = {n: m for n, m in models.items() if KIND[m["stage"]] == "model"}
    rankers = {n: m for n, m in models.items() if KIND[m["stage"]] == "ranker"}
    blend = models.get("blend")
    out = ["Targets (CV decides; test must keep the order):", ""]
    if nn:
        best = max(nn, key=lambda n: nn[n]["cv_acc4"])
        for r, m in rankers.items():
            gain = m["cv_acc4"] - nn[best]["cv_acc4"]
            same = m.get("test_acc4") is None or m["test_acc4"] > nn[best].get("test_acc4", 0)
            ok = gain >= MARGIN and same
            out.append(f"- {r} vs best neural model ({best}): CV {gain:+.4f}, test "
                       f"{(m.get('test_acc4') or 0) - (nn[best].get('test_acc4') or 0):+.4f} -> {'met' if ok else 'NOT met'}")
    if blend:
        comps = {n: m for n, m in models.items() if n != "blend"}
        top = max(comps, key=lambda n: comps[n]["cv_acc4"])
        gain = blend["cv_acc4"] - comps[top]["cv_acc4"]
        best_test = max((m.get("test_acc4") or 0) for m in comps.values())
        ok = gain >= MARGIN and (blend.get("test_acc4") or 0) > best_test
        out.append(f"- blend vs best component ({top}): CV {gain:+.4f}, test vs best component on test "
                   f"{(blend.get('test_acc4') or 0) - best_test:+.4f} -> {'met' if ok else 'NOT met'}")
        h = headroom(blend.get("test_acc4"), base.get("test_acc4"), ceiling)
        out.append(f"- blend headroom on test {fmt(h, True)} (target {HEADROOM_TARGET:.0%}) -> "
                   f"{'met' if h is not None and h >= HEADROOM_TARGET else 'NOT met'}")
    return out


def table(exp: Path) -> str:
    models = collect(exp)
    if not models:
        raise SystemExit(f"no metrics.json under {exp}: run the pipeline first")
    gen_path = exp / "data" / "generator.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    ceiling = gen.get("ceiling_expected")
    ceiling_cv = gen.get("ceiling_expected_train", ceiling)
    base = models.get("prev_city", {})
    lines = [
        f"Experiment `{exp.name}`. Ceiling (generator, expected acc@4): test {fmt(ceiling)}, CV {fmt(ceiling_cv)}.",
        "",
        "| model | CV acc@4 | test acc@4 | headroom (CV) | headroom (test) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        lines.append(
            f"| {name} | {fmt(m.get('cv_acc4'))} | {fmt(m.get('test_acc4'))} "
            f"| {fmt(headroom(m.get('cv_acc4'), base.get('cv_acc4'), ceiling_cv), True)} "
            f"| {fmt(headroom(m.get('test_acc4'), base.get('test_acc4'), ceiling), True)} | {m.get('seconds', 0):.1f} |"
        )
    rec_path = exp / "candidates" / "recall.json"
    if rec_path.exists():
        rec = json.loads(rec_path.read_text())
        caps = {m.get("max_candidates") for m in models.values() if m["stage"].endswith("_ranker")}
        cap = ", ".join(str(c) for c in sorted(c for c in caps if c is not None)) or None
        cuts = [k for k in rec["oof"] if k.startswith("recall@")]
        lines += ["", f"Candidate pool (models: {', '.join(rec['models'])}; ranker cap: {cap}):", "",
                  "| split | trips | mean pool | " + " | ".join(cuts) + " | all |",
                  "|---|---|---|" + "---|" * (len(cuts) + 1)]
        for split in ("oof", "test"):
            r = rec.get(split)
            if r:
                lines.append(f"| {split} | {r['trips']:,} | {r['mean_pool_size']:.1f} | "
                             + " | ".join(f"{r[c]:.3f}" for c in cuts) + f" | {r['recall_all']:.3f} |")
    lines += ["", *targets(models, base, ceiling)]
    blend_w = exp / "blend" / "weights.json"
    if blend_w.exists():
        w = json.loads(blend_w.read_text())
        lines += ["", "Blend weights (fitted on OOF): " + ", ".join(
            f"{n} {v['weight']:.3f} ({v['transform']})" for n, v in w["weights"].items() if v["weight"])
            + f"; OOF acc@4 in-sample {w['oof_acc4_in_sample']:.4f}, cross-fitted {w['oof_acc4_crossfit']:.4f}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", default=str(HERE.parent / "artifacts" / "medium"), help="experiment folder")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    exp = Path(args.exp).resolve()
    shown = exp.relative_to(HERE.parent) if exp.is_relative_to(HERE.parent) else exp
    md = (f"Commands: `./run.sh --config configs/{exp.name}.yaml`, then `python benchmarks/rankers.py --exp {shown}`.\n\n"
          + table(exp))
    print(md)
    if not args.no_write:
        write_section("rankers", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
