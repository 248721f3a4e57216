"""Run summary and submission.

Collects the ``metrics.json`` of every stage before it that writes top-k tables (the baselines,
every registered model and ranker, the blend: its inputs in the stage graph), writes a
table (model, CV accuracy@4, test accuracy@4 where ground truth exists, share of the ceiling
headroom, seconds) as ``summary.md`` / ``summary.json`` / ``summary.png``, picks the submission
model (``report.submit_model``; ``auto``: :func:`choose_submission`, on CV accuracy@4 only — never
the test score), and writes the validated submission. :func:`print_summary` runs after the stage
(also when it was skipped) and publishes ``artifacts/<exp>/summary.{md,json,png}``,
``summary_buckets.png`` and ``submissions/<exp>.csv``.

Accuracy@4 by the true city's train frequency (:func:`bucket_accuracies`): the frequency of a city
is the number of its rows in ``train.parquet`` (every train reservation row, the last row of each
train trip included: the true city of a CV trip counts its own row; a city absent from train has
0), bucketed by the upper edges ``report.buckets`` (``<=5``, ``6-20``, ``21-100``, ``101-2000``,
``>2000`` by default). For every model and for the generator's own distribution (the *oracle*,
synthetic data only) on test (every ground-truth trip; no prediction = a miss) and on CV (the
validation trips of ``cv.train_folds`` that the model has out-of-fold predictions for; each
bucket's number of trips is given). Written to ``summary.json`` (``models.<name>.buckets`` and
``oracle.buckets``: split -> bucket -> {acc4, n}), ``summary.md`` and ``summary_buckets.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from . import artifacts
from .baselines import POPULAR, PREV_CITY
from .config import ROOT
from .metrics import accuracy4_by_bucket, bucket_labels, city_frequency, headroom, trips_by_bucket
from .stages import STAGE_LIST, StageError, upstream_topk
from .submission import build_submission, validate_submission, write_submission
from .topk import validation_truth

SPLITS = ("cv", "test")
# Tolerance of the min_gain comparison (CV accuracies are shares of trips: float rounding only).
GAIN_EPS = 1e-12

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


def model_inputs(models: dict[str, dict]) -> dict[str, list[str]]:
    """Model name -> the models (among ``models``: name -> metrics with their ``stage``) whose
    outputs it is built from, read off the stage graph: every model of a top-k stage upstream of
    its own (:func:`nextdest.stages.upstream_topk`). Empty for the baselines and the neural models."""
    return {n: [c for c, mc in models.items() if mc["stage"] in upstream_topk(m["stage"])] for n, m in models.items()}


def choose_submission(cv: dict[str, float | None], inputs: dict[str, list[str]], min_gain: float) -> tuple[str, str, list[dict]]:
    """The ``auto`` submission model: the best by CV accuracy@4 (``cv``: name -> score, in stage
    order; ties go to the earlier model), except that a model built from other models' outputs
    (``inputs``: name -> those models; a ranker, the blend) is chosen only when its CV beats every
    one of them by at least ``min_gain``; otherwise it is passed over and the best of the rest is
    considered under the same rule. Returns (model, the reasons in words, one step per model
    considered)."""
    order = list(cv)
    ranked = sorted((n for n in cv if cv[n] is not None), key=lambda n: (-cv[n], order.index(n)))
    said, steps = [], []
    for name in ranked:
        scored = [c for c in inputs.get(name, ()) if cv.get(c) is not None]
        if not scored:
            said.append(f"{name} chosen (best CV{' of the rest' if steps else ''}, {cv[name]:.4f})")
            steps.append({"model": name, "cv_acc4": cv[name], "chosen": True})
            return name, "; ".join(said), steps
        best = max(scored, key=lambda c: (cv[c], -order.index(c)))
        gain = cv[name] - cv[best]
        ok = gain >= min_gain - GAIN_EPS
        # (gain >= 0: an input with a higher CV would have been considered first)
        said.append(f"{name} CV {cv[name]:.4f} beats {best} {cv[best]:.4f} by {gain:+.4f} {'>=' if ok else '<'} {min_gain:g}: "
                    + (f"{name} chosen" if ok else "not chosen"))
        steps.append({"model": name, "cv_acc4": cv[name], "best_input": best, "best_input_cv_acc4": cv[best],
                      "gain": gain, "chosen": ok})
        if ok:
            return name, "; ".join(said), steps
    raise StageError("no model has a CV accuracy@4 to choose the submission by")


def bucket_accuracies(ctx, names: list[str]) -> dict:
    """accuracy@4 per bucket of the true city's train frequency (module docstring) of every model
    of ``names`` that has top-k tables and of the oracle: ``{"edges", "labels", "trips": split ->
    bucket -> trips, "models": name -> split -> bucket -> {acc4, n}, "oracle": split -> ... or None}``;
    the test split is None without ground truth."""
    cfg, data_dir = ctx.cfg, ctx.input("data")
    edges = list(cfg.report.buckets)
    freq = city_frequency(artifacts.read_reservations(data_dir, "train", columns=["city_id"])["city_id"])
    test_truth = artifacts.read_truth(data_dir)
    truth = {"cv": validation_truth(artifacts.scan_features(ctx.input("features")), tuple(cfg.cv.train_folds)), "test": test_truth}

    def per_split(oof: pl.DataFrame, test: pl.DataFrame) -> dict:
        own_cv = truth["cv"].join(oof.select("utrip_id").unique(), on="utrip_id", how="semi")  # the trips it has OOF for
        return {"cv": accuracy4_by_bucket(oof, own_cv, freq, edges),
                "test": None if test_truth is None else accuracy4_by_bucket(test, test_truth, freq, edges)}

    tables = artifacts.read_model_tables(ctx.topk_inputs(), ctx.log, max_rank=4)
    oracle = [artifacts.read_oracle(data_dir, split, max_rank=4) for split in ("train", "test")]
    return {
        "edges": edges,
        "labels": bucket_labels(edges),
        "frequency": "the true city's rows in train, every train row counted",
        "trips": {s: None if t is None else trips_by_bucket(t, freq, edges) for s, t in truth.items()},
        "models": {n: per_split(*tables[n]) for n in names if n in tables},
        "oracle": None if any(o is None for o in oracle) else per_split(*oracle),
    }


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def bucket_rows(summary: dict) -> dict[str, dict]:
    """Row name -> split -> bucket -> {acc4, n} of the bucket tables: every model, then the oracle."""
    rows = {n: m["buckets"] for n, m in summary["models"].items() if m.get("buckets")}
    if summary.get("oracle"):
        rows["oracle"] = summary["oracle"]["buckets"]
    return rows


def bucket_markdown(summary: dict) -> list[str]:
    """One table per split: accuracy@4 per bucket of the true city's train frequency, the number of
    trips per bucket first (a model scored on fewer trips of a bucket says its own n)."""
    info = summary.get("frequency_buckets")
    if not info:
        return []
    labels, rows = info["labels"], bucket_rows(summary)
    lines = []
    for split, what in (("cv", "CV (the validation trips each model has out-of-fold predictions for)"),
                        ("test", "test (every ground-truth trip)")):
        trips = info["trips"].get(split)
        if trips is None:
            continue
        lines += ["", f"accuracy@4 by bucket of the true city's train frequency ({info['frequency']}); {what}:", "",
                  "| model | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|",
                  "| trips (n) | " + " | ".join(str(trips[b]) for b in labels) + " |"]
        for name, buckets in rows.items():
            cells = [_fmt(c["acc4"]) + (f" (n={c['n']})" if c["n"] != trips[b] else "")
                     for b, c in ((b, buckets[split][b]) for b in labels)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# Run summary: experiment `{summary['experiment']}`",
        "",
        f"Data: {summary['data']}. CV folds trained: {summary['folds']}.",
        "",
        f"Submission: `{summary['submit_model']}`. Rule: {summary['submit_rule']}.",
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
    lines += bucket_markdown(summary)
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def summary_plot(summary: dict, path: Path) -> None:
    plt = _pyplot()

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


def summary_buckets_plot(summary: dict, path: Path) -> None:
    """accuracy@4 per bucket of the true city's train frequency, one line per model and the oracle
    (dashed), one panel per split (CV, test where ground truth exists)."""
    plt = _pyplot()
    info, rows = summary["frequency_buckets"], bucket_rows(summary)
    labels = info["labels"]
    splits = [s for s in SPLITS if info["trips"].get(s) is not None]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.5), sharey=True, squeeze=False)
    x = range(len(labels))
    for ax, split in zip(axes[0], splits):
        for name, buckets in rows.items():
            acc = [float("nan") if buckets[split][b]["acc4"] is None else buckets[split][b]["acc4"] for b in labels]
            style = {"color": "k", "ls": "--"} if name == "oracle" else {}
            ax.plot(x, acc, marker="o", ms=3, lw=1.2, label=name, **style)
        ax.set_xticks(list(x), [f"{b}\nn={info['trips'][split][b]}" for b in labels], fontsize=8)
        ax.set_xlabel("train rows of the true city")
        ax.set_title("CV" if split == "cv" else "test")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy@4")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"nextdest: {summary['experiment']}, accuracy@4 by the true city's train frequency")
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
    steps = []
    if cfg.report.submit_model == "auto":
        submit, why, steps = choose_submission({n: m.get("cv_acc4") for n, m in models.items()}, model_inputs(models),
                                               cfg.report.min_gain)
        rule = (f"auto, the best CV accuracy@4, where a model built from other models' outputs must beat each of "
                f"them by report.min_gain = {cfg.report.min_gain:g}: {why}")
    else:
        submit = cfg.report.submit_model
        if submit not in models:
            raise StageError(f"report.submit_model = {submit!r} did not run; available: {', '.join(models)}")
        rule = "report.submit_model"
    ctx.log(f"submission: {submit} ({rule})")
    buckets = bucket_accuracies(ctx, list(models))
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
        "submit_steps": steps,
        "submission_trips_backfilled": test["utrip_id"].n_unique() - n_filled,
        "models": {
            n: {"cv_acc4": m.get("cv_acc4"), "test_acc4": m.get("test_acc4"), "seconds": m.get("seconds", 0.0),
                "headroom_test": m["headroom_test"], "cv_acc4_folds": m.get("cv_acc4_folds"), "stage": m["stage"],
                "buckets": buckets["models"].get(n)}
            for n, m in models.items()
        },
        "oracle": None if buckets["oracle"] is None else {"buckets": buckets["oracle"]},
        "frequency_buckets": {k: buckets[k] for k in ("edges", "labels", "frequency", "trips")},
        "ceiling": ceiling,
        "ceiling_realized": gen.get("ceiling_realized"),
        "ceiling_cv": gen.get("ceiling_expected_train"),
    }
    artifacts.write_json(ctx.out, "summary.json", summary)
    artifacts.summary_path(ctx.out, "md").write_text(summary_markdown(summary))
    summary_plot(summary, artifacts.summary_path(ctx.out, "png"))
    summary_buckets_plot(summary, artifacts.summary_buckets_path(ctx.out))


def submissions_dir() -> Path:
    """``submissions/`` in the repo, or ``$NEXTDEST_SUBMISSIONS`` (tests)."""
    env = os.environ.get("NEXTDEST_SUBMISSIONS")
    return Path(env) if env else ROOT / "submissions"


def print_summary(cfg, stage_dir: Path) -> None:
    """Publish the summary beside the experiment and the submission in submissions/, then print."""
    exp = stage_dir.parent
    for name in artifacts.SUMMARY_FILES:
        artifacts.copy_atomic(stage_dir / name, exp / name)
    target = submissions_dir() / f"{cfg.experiment}.csv"
    test = artifacts.read_reservations(exp / "data", "test", columns=["utrip_id"])
    validate_submission(artifacts.submission_path(stage_dir), test)
    target.parent.mkdir(exist_ok=True)
    artifacts.copy_atomic(artifacts.submission_path(stage_dir), target)
    print()
    print(artifacts.summary_path(stage_dir, "md").read_text())
    print(f"submission: {target} (validated)")
    print(f"summary:    {', '.join(str(exp / name) for name in artifacts.SUMMARY_FILES)}")
