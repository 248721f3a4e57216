"""A tiny end-to-end run of every stage (CPU), as ./run.sh does it."""

import json

import polars as pl

from nextdest.testing import tiny_config
from nextdest.stages import STAGE_LIST, experiment_dir, run_pipeline


def test_end_to_end_tiny(artifacts, tmp_path, capsys):
    from nextdest.report import print_summary
    from nextdest.submission import validate_submission

    cfg = tiny_config()
    paths = run_pipeline(cfg)
    assert set(paths) == {s.name for s in STAGE_LIST}
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

    sub_path = tmp_path / "submissions" / "base.csv"
    test = pl.read_parquet(exp / "data" / "test.parquet")
    sub = validate_submission(sub_path, test)
    assert sub.height == test["utrip_id"].n_unique()
    assert (exp / "summary.png").stat().st_size > 0 and (exp / "summary.md").exists()

    # rerunning the whole pipeline skips every stage
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "running" not in out and out.count("up to date") == len(STAGE_LIST)
