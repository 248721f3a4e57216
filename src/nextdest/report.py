"""Run summary and submission.

Collects the ``metrics.json`` of every stage before it that writes top-k tables (the baselines,
every registered model and ranker, the blend: its inputs in the stage graph), writes a
table (model, CV accuracy@4, test accuracy@4 where ground truth exists, share of the ceiling
headroom, seconds) as ``summary.md`` / ``summary.json`` / ``summary.png``, picks the submission
model (``report.submit_model``; ``auto`` = best CV accuracy@4 — never the test score), and writes the
validated submission. :func:`print_summary` runs after the stage (also when it was skipped) and
publishes ``artifacts/<exp>/summary.{md,json}`` and ``submissions/<exp>.csv``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl

from . import artifacts
from .baselines import POPULAR, PREV_CITY
from .config import ROOT
from .metrics import headroom
from .stages import STAGE_LIST, StageError
from .submission import build_submission, validate_submission, write_submission

def collect_metrics(ctx) -> dict[str, dict]:
    """Model name -> metrics, with the stage it came from, for every top-k stage that ran, in
    stage order."""
    out = {}
    for spec in STAGE_LIST:
        if not spec.topk or spec.name not in ctx.spec.deps or not ctx.has_input(spec.name):
            continue
        for name, m in (artifacts.read_metrics(ctx.input(spec.name)) or {}).items():
            out[name] = {**m, "stage": spec.name}
    return out


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# Run summary: experiment `{summary['experiment']}`",
        "",
        f"Data: {summary['data']}. CV folds trained: {summary['folds']}. "
        f"Submission: `{summary['submit_model']}` (chosen by {summary['submit_rule']}).",
        "",
        "| model | CV acc@4 | test acc@4 | headroom (test) | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary["models"].items():
        lines.append(
            f"| {name} | {_fmt(m['cv_acc4'])} | {_fmt(m['test_acc4'])} | {_fmt(m.get('headroom_test'), True)} | {m['seconds']:.1f} |"
        )
    c = summary.get("ceiling")
    lines += ["", f"Ceiling (generator's own distribution, expected acc@4 on test): {_fmt(c)}"
              + (f"; realized {_fmt(summary.get('ceiling_realized'))}" if summary.get("ceiling_realized") is not None else "")
              + (f"; on train last cities (CV): {_fmt(summary.get('ceiling_cv'))}" if summary.get("ceiling_cv") is not None else "")]
    lines += ["Headroom = (model - prev_city) / (ceiling - prev_city) on the test ground truth.",
              "The test ground truth stands for the hidden leaderboard: it is reported, never used to choose."]
    return "\n".join(lines) + "\n"


def summary_plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["models"])
    cv = [summary["models"][n]["cv_acc4"] or 0 for n in names]
    te = [summary["models"][n]["test_acc4"] or 0 for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i - 0.2 for i in y], cv, height=0.4, label="CV acc@4")
    ax.barh([i + 0.2 for i in y], te, height=0.4, label="test acc@4")
    if summary.get("ceiling"):
        ax.axvline(summary["ceiling"], color="k", ls="--", lw=1, label="ceiling")
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy@4")
    ax.set_title(f"nextdest: {summary['experiment']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_report_stage(ctx) -> None:
    cfg = ctx.cfg
    models = collect_metrics(ctx)
    if not models:
        raise StageError("no model stage has produced metrics.json: run the model stages first")
    data_dir = ctx.input("data")
    gen = artifacts.read_generator(data_dir)
    dreport = artifacts.read_data_report(data_dir)
    ceiling = gen.get("ceiling_expected")
    base = models.get(PREV_CITY, {}).get("test_acc4")
    for m in models.values():
        m["headroom_test"] = headroom(m.get("test_acc4"), base, ceiling)
    # Choose the submission model on CV only.
    if cfg.report.submit_model == "auto":
        scored = {n: m for n, m in models.items() if m.get("cv_acc4") is not None}
        order = list(models)  # ties go to the earlier model
        submit = max(scored, key=lambda n: (scored[n]["cv_acc4"], -order.index(n)))
        rule = "best CV accuracy@4"
    else:
        submit = cfg.report.submit_model
        if submit not in models:
            raise StageError(f"report.submit_model = {submit!r} did not run; available: {', '.join(models)}")
        rule = "report.submit_model"
    stage_dir = ctx.input(models[submit]["stage"])
    topk = artifacts.read_topk(stage_dir, "test").filter(pl.col("model") == submit)
    popular = artifacts.read_topk(ctx.input("baselines"), "test").filter(pl.col("model") == POPULAR)
    first = popular["utrip_id"].min()
    fallback = popular.filter(pl.col("utrip_id") == first).sort("rank")["city_id"].to_list()
    test = artifacts.read_reservations(data_dir, "test", columns=["utrip_id"])
    sub = build_submission(topk, test["utrip_id"].unique(), fallback)
    write_submission(sub, artifacts.submission_path(ctx.out), test)
    n_filled = topk.filter(pl.col("rank") <= 4).group_by("utrip_id").len().filter(pl.col("len") >= 4).height
    summary = {
        "experiment": cfg.experiment,
        "data": f"{dreport['source']}" + (f" preset {dreport['preset']}" if dreport.get("preset") else "")
        + f", {dreport['train_trips']:,} train trips, {dreport['test_trips']:,} test trips",
        "folds": list(cfg.cv.train_folds),
        "submit_model": submit,
        "submit_rule": rule,
        "submission_trips_backfilled": test["utrip_id"].n_unique() - n_filled,
        "models": {
            n: {"cv_acc4": m.get("cv_acc4"), "test_acc4": m.get("test_acc4"), "seconds": m.get("seconds", 0.0),
                "headroom_test": m["headroom_test"], "cv_acc4_folds": m.get("cv_acc4_folds"), "stage": m["stage"]}
            for n, m in models.items()
        },
        "ceiling": ceiling,
        "ceiling_realized": gen.get("ceiling_realized"),
        "ceiling_cv": gen.get("ceiling_expected_train"),
    }
    artifacts.write_json(ctx.out, "summary.json", summary)
    artifacts.summary_path(ctx.out, "md").write_text(summary_markdown(summary))
    summary_plot(summary, artifacts.summary_path(ctx.out, "png"))


def submissions_dir() -> Path:
    """``submissions/`` in the repo, or ``$NEXTDEST_SUBMISSIONS`` (tests)."""
    env = os.environ.get("NEXTDEST_SUBMISSIONS")
    return Path(env) if env else ROOT / "submissions"


def print_summary(cfg, stage_dir: Path) -> None:
    """Publish the summary beside the experiment and the submission in submissions/, then print."""
    exp = stage_dir.parent
    for name in artifacts.SUMMARY_FILES:
        shutil.copyfile(stage_dir / name, exp / name)
    target = submissions_dir() / f"{cfg.experiment}.csv"
    test = artifacts.read_reservations(exp / "data", "test", columns=["utrip_id"])
    validate_submission(artifacts.submission_path(stage_dir), test)
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(artifacts.submission_path(stage_dir), tmp)
    tmp.replace(target)
    print()
    print(artifacts.summary_path(stage_dir, "md").read_text())
    print(f"submission: {target} (validated)")
    print(f"summary:    {exp / 'summary.md'}, {exp / 'summary.json'}, {exp / 'summary.png'}")
