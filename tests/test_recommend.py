"""`python -m nextdest recommend`: a top-k for a good trip; a one-line error and exit 2 for every
bad input (no traceback)."""

from __future__ import annotations

import os
import shutil

import polars as pl
import pytest

from nextdest.__main__ import main
from nextdest.stages import run_stage
from tiny import tiny_config


@pytest.fixture(scope="module")
def model_dir(tiny_upstream, tmp_path_factory):
    """The MLP stage trained on the tiny preset (fast settings), and the tiny raw test file."""
    from nextdest.train import run_model_stage

    _cfg, exp = tiny_upstream
    root = tmp_path_factory.mktemp("recommend")
    shutil.copytree(exp, root / exp.name)
    old = os.environ.get("NEXTDEST_ARTIFACTS")
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        out = run_stage("mlp", tiny_config("train.epochs=1", "train.batch_size=128"), run_model_stage)
    finally:
        os.environ.pop("NEXTDEST_ARTIFACTS") if old is None else os.environ.__setitem__("NEXTDEST_ARTIFACTS", old)
    return out, root / exp.name / "data" / "raw" / "test_set.csv"


def recommend_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["recommend", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_trip(test_csv, n_trips: int = 1) -> pl.DataFrame:
    raw = pl.read_csv(test_csv, infer_schema=False)
    trips = raw["utrip_id"].unique(maintain_order=True)[:n_trips]
    return raw.filter(pl.col("utrip_id").is_in(trips.implode()))


def test_good_trip_lists_k_cities(model_dir, tmp_path, capsys):
    model, test_csv = model_dir
    trip = tmp_path / "trip.csv"
    one_trip(test_csv).write_csv(trip)
    rc, out, err = recommend_cli(capsys, "--model", str(model), "--trip", str(trip), "--k", "3")
    assert rc == 0 and err == ""
    assert [line.split(".")[0] for line in out.splitlines()] == ["1", "2", "3"]


@pytest.mark.parametrize("case,message", [
    ("empty", "trip.csv: file is empty"),
    ("header", "trip.csv: the file has a header but no rows"),
    ("two_trips", "trip.csv: column 'utrip_id': the file holds the rows of 2 trips"),
    ("extra_field", "trip.csv: line 3: 10 fields, but the header has 9"),
    ("not_a_model", "not a nextdest model file"),
    ("parquet_model", "not a nextdest model file"),
    ("no_model", "no such model file or folder"),
    ("k_negative", "--k -1: the number of cities to list must be at least 1"),
    ("k_zero", "--k 0: the number of cities to list must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(model_dir, tmp_path, capsys, case, message):
    model, test_csv = model_dir
    trip = tmp_path / "trip.csv"
    rows = one_trip(test_csv, 2 if case == "two_trips" else 1)
    rows.write_csv(trip)
    args = ["--model", str(model), "--trip", str(trip)]
    if case == "empty":
        trip.write_text("")
    elif case == "header":
        trip.write_text(",".join(rows.columns) + "\n")
    elif case == "extra_field":
        lines = trip.read_text().splitlines()
        lines[2] += ",7"
        trip.write_text("\n".join(lines) + "\n")
    elif case == "not_a_model":
        args[1] = str(trip)
    elif case == "parquet_model":
        args[1] = str(model / "test_topk.parquet")
    elif case == "no_model":
        args[1] = str(tmp_path / "nope")
    elif case.startswith("k_"):
        args += ["--k", "-1" if case == "k_negative" else "0"]
    rc, out, err = recommend_cli(capsys, *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
