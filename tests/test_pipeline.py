"""A tiny end-to-end run of every stage (CPU), as ./run.sh does it; then the cache: a forced
rebuild with identical output reruns nothing after it, and a full forced rebuild is byte-identical."""

import json
import os

import polars as pl
import pytest

from tiny import tiny_config
from nextdest.stages import STAGE_LIST, experiment_dir, read_manifest, run_pipeline

pytestmark = pytest.mark.slow


def enabled(cfg):
    """The stages a run of ``cfg`` runs (a registered model may be switched off by default)."""
    return [s for s in STAGE_LIST if s.enabled(cfg)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Every stage run once on the tiny preset, in a private artifacts root (module scope)."""
    root = tmp_path_factory.mktemp("pipeline")
    saved = {k: os.environ.get(k) for k in ("NEXTDEST_ARTIFACTS", "NEXTDEST_SUBMISSIONS")}
    os.environ["NEXTDEST_ARTIFACTS"] = str(root / "artifacts")
    os.environ["NEXTDEST_SUBMISSIONS"] = str(root / "submissions")
    try:
        cfg = tiny_config()
        yield cfg, run_pipeline(cfg), root
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def n_test_trips(exp):
    return pl.read_parquet(exp / "data" / "truth.parquet").height


def test_end_to_end_tiny(tiny_run, capsys):
    from nextdest.report import print_summary
    from nextdest.submission import validate_submission

    cfg, paths, root = tiny_run
    assert set(paths) == {s.name for s in enabled(cfg)}
    exp = experiment_dir(cfg)
    print_summary(cfg, paths["report"])
    out = capsys.readouterr().out
    assert "| model | CV acc@4 | test acc@4 |" in out

    summary = json.loads((exp / "summary.json").read_text())
    assert set(summary["models"]) == {"popular", "prev_city", "gru", "transformer", "mlp", "xgb_ranker", "lgb_ranker", "blend"}
    for m in summary["models"].values():
        assert 0.0 <= m["cv_acc4"] <= 1.0 and 0.0 <= m["test_acc4"] <= 1.0 and m["seconds"] >= 0
    assert 0.3 < summary["ceiling"] <= 1.0
    # the popular baseline is far below the transition baseline even on tiny data
    assert summary["models"]["popular"]["test_acc4"] < summary["models"]["prev_city"]["test_acc4"]

    # accuracy@4 per bucket of the true city's train frequency: every model and the oracle, CV and test
    labels = ["<=5", "6-20", "21-100", "101-2000", ">2000"]
    info = summary["frequency_buckets"]
    assert info["labels"] == labels and sum(info["trips"]["test"].values()) == n_test_trips(exp)
    rows = {**{n: m["buckets"] for n, m in summary["models"].items()}, "oracle": summary["oracle"]["buckets"]}
    for name, buckets in rows.items():
        for split in ("cv", "test"):
            assert list(buckets[split]) == labels, (name, split)
            for label, cell in buckets[split].items():
                assert cell["n"] <= info["trips"][split][label] and (cell["acc4"] is None) == (cell["n"] == 0), (name, split, label)
        # on test every ground-truth trip counts: the buckets add up to the model's test accuracy@4
        hits = sum(c["acc4"] * c["n"] for c in buckets["test"].values() if c["n"])
        expected = summary["ceiling_realized"] if name == "oracle" else summary["models"][name]["test_acc4"]
        assert hits / n_test_trips(exp) == pytest.approx(expected, abs=1e-9), name
    assert rows["oracle"]["cv"] and all(rows["oracle"]["cv"][b]["n"] == info["trips"]["cv"][b] for b in labels)
    assert "| model | <=5 | 6-20 | 21-100 | 101-2000 | >2000 |" in out and "| oracle |" in out
    # the submission rule is said, and its last step is the model submitted
    assert summary["submit_rule"].startswith("auto") and f"{summary['submit_model']} chosen" in out
    assert summary["submit_steps"][-1]["model"] == summary["submit_model"]
    assert [s["chosen"] for s in summary["submit_steps"]] == [False] * (len(summary["submit_steps"]) - 1) + [True]

    sub_path = root / "submissions" / "base.csv"
    test = pl.read_parquet(exp / "data" / "test.parquet")
    sub = validate_submission(sub_path, test)
    assert sub.height == test["utrip_id"].n_unique()
    assert (exp / "summary.png").stat().st_size > 0 and (exp / "summary.md").exists()
    assert (exp / "summary_buckets.png").stat().st_size > 0

    # rerunning the whole pipeline skips every stage
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "running" not in out and out.count("up to date") == len(enabled(cfg))


def test_forced_rebuild_with_identical_output_reruns_nothing_after_it(tiny_run, capsys):
    """`./run.sh --force --only features`, then `./run.sh`: the feature table is the same, its
    report's timings are not content, so no later stage reruns."""
    cfg, _paths, _root = tiny_run
    exp = experiment_dir(cfg)
    before = json.loads((exp / "features" / "features_report.json").read_text())
    run_pipeline(cfg, ["features"], force=True)
    assert "[features] running" in capsys.readouterr().out
    after = json.loads((exp / "features" / "features_report.json").read_text())
    assert before["rows_out"] == after["rows_out"]
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "running" not in out and out.count("up to date") == len(enabled(cfg))


def test_full_forced_rebuild_is_byte_identical(tiny_run, capsys):
    """Same config, seed and thread counts: the same content in every stage and the same submission bytes."""
    cfg, _paths, _root = tiny_run
    exp = experiment_dir(cfg)
    digests = {s.name: read_manifest(exp / s.name)["outputs_digest"] for s in enabled(cfg)}
    submission = (exp / "report" / "submission.csv").read_bytes()
    run_pipeline(cfg, force=True)
    assert capsys.readouterr().out.count("running") == len(enabled(cfg))
    assert {s.name: read_manifest(exp / s.name)["outputs_digest"] for s in enabled(cfg)} == digests
    assert (exp / "report" / "submission.csv").read_bytes() == submission
