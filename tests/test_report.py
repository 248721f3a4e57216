"""The report's accuracy@4 per bucket of the true city's train frequency, and the rule that picks
the submission (a model built from other models' outputs must earn its place), on hand-computed cases."""

import polars as pl
import pytest

from nextdest.metrics import accuracy4_by_bucket, bucket_labels, city_frequency, trips_by_bucket
from nextdest.registry import components
from nextdest.report import bucket_markdown, choose_submission, model_inputs

EDGES = [5, 20, 100, 2000]


def topk(rows):
    """(utrip_id, city_id, rank) rows -> a top-k table."""
    return pl.DataFrame(rows, schema={"utrip_id": pl.Utf8, "city_id": pl.Int64, "rank": pl.Int32}, orient="row")


def test_bucket_labels_and_edges():
    assert bucket_labels(EDGES) == ["<=5", "6-20", "21-100", "101-2000", ">2000"]
    assert bucket_labels([0, 1, 3]) == ["<=0", "1", "2-3", ">3"]
    # a city's bucket by its exact count: 5 | 6, 20 | 21, 2000 | 2001; absent from train = 0
    freq = city_frequency(pl.Series([1] * 5 + [2] * 6 + [3] * 20 + [4] * 21 + [5] * 2000 + [6] * 2001))
    truth = pl.DataFrame({"utrip_id": list("abcdefg"), "city_id": [1, 2, 3, 4, 5, 6, 99]})
    assert trips_by_bucket(truth, freq, EDGES) == {"<=5": 2, "6-20": 2, "21-100": 1, "101-2000": 1, ">2000": 1}


def test_accuracy_by_bucket_hand_computed():
    # train rows: city 1 three times (<=5), city 2 ten (6-20), city 3 fifty (21-100), city 4 3,000 (>2000);
    # city 9 never (frequency 0: <=5); nothing in 101-2000.
    freq = city_frequency(pl.Series([1] * 3 + [2] * 10 + [3] * 50 + [4] * 3000, dtype=pl.Int64))
    assert dict(freq.sort("city_id").iter_rows()) == {1: 3, 2: 10, 3: 50, 4: 3000}
    truth = pl.DataFrame({"utrip_id": ["t1", "t2", "t3", "t4", "t5", "t6", "t7"], "city_id": [1, 9, 2, 2, 3, 4, 4]})
    pred = topk([
        ("t1", 7, 1), ("t1", 1, 3),                    # hit (<=5)
        ("t2", 1, 1), ("t2", 2, 2),                    # miss: unseen city 9 not proposed (<=5)
        ("t3", 5, 1), ("t3", 6, 2), ("t3", 7, 3), ("t3", 8, 4), ("t3", 2, 5),  # miss: rank 5 (6-20)
        ("t4", 5, 1), ("t4", 6, 2), ("t4", 7, 3), ("t4", 2, 4),                # hit at rank 4 (6-20)
        ("t5", 3, 1),                                  # hit (21-100)
                                                       # t6: no prediction at all -> miss (>2000)
        ("t7", 1, 1), ("t7", 4, 2),                    # hit (>2000)
    ])
    got = accuracy4_by_bucket(pred, truth, freq, EDGES)
    assert list(got) == ["<=5", "6-20", "21-100", "101-2000", ">2000"]
    assert got == {
        "<=5": {"acc4": 0.5, "n": 2},
        "6-20": {"acc4": 0.5, "n": 2},
        "21-100": {"acc4": 1.0, "n": 1},
        "101-2000": {"acc4": None, "n": 0},  # empty bucket
        ">2000": {"acc4": 0.5, "n": 2},
    }
    # the trips a model has OOF for: scored on t1, t3, t5 only
    own = truth.join(pred.select("utrip_id").unique(), on="utrip_id", how="semi").filter(pl.col("utrip_id").is_in(["t1", "t3", "t5"]))
    assert accuracy4_by_bucket(pred, own, freq, EDGES)["6-20"] == {"acc4": 0.0, "n": 1}

    # the markdown table gives each bucket's trips and, for a model scored on fewer, its own n
    b = {"cv": got, "test": None}
    fewer = {**got, "<=5": {"acc4": 1.0, "n": 1}}
    summary = {
        "models": {"m1": {"buckets": b}, "m2": {"buckets": {"cv": fewer, "test": None}}},
        "oracle": {"buckets": b},
        "frequency_buckets": {"labels": bucket_labels(EDGES), "frequency": "rows", "trips": {"cv": trips_by_bucket(truth, freq, EDGES), "test": None}},
    }
    md = "\n".join(bucket_markdown(summary))
    assert "| trips (n) | 2 | 2 | 1 | 0 | 2 |" in md
    assert "| m1 | 0.5000 | 0.5000 | 1.0000 | n/a | 0.5000 |" in md
    assert "| m2 | 1.0000 (n=1) | 0.5000 |" in md
    assert "| oracle | 0.5000 |" in md and "test (every" not in md  # no test truth: no test table


# --------------------------------------------------------------------------- the submission rule
MODELS = [c.name for c in components("model")]
RANKERS = [c.name for c in components("ranker")]


def stages_of(names):
    """name -> metrics with the stage each model comes from (the baselines share one stage)."""
    return {n: {"stage": "baselines" if n in ("popular", "prev_city") else n} for n in names}


def test_model_inputs_come_from_the_stage_graph():
    gru, mlp, xgb = MODELS[0], MODELS[-1], RANKERS[0]
    names = ["popular", "prev_city", gru, mlp, xgb, "blend"]
    inputs = model_inputs(stages_of(names))
    assert inputs["popular"] == inputs["prev_city"] == inputs[gru] == inputs[mlp] == []
    assert inputs[xgb] == ["popular", "prev_city", gru, mlp]  # a ranker: through the candidates
    assert inputs["blend"] == ["popular", "prev_city", gru, mlp, xgb]


# Every model is built from those before it in the stage graph: rankers from the baselines and the
# neural models, the blend from all of them.
INPUTS = {"popular": [], "prev_city": [], "gru": [], "mlp": [],
          "xgb_ranker": ["popular", "prev_city", "gru", "mlp"], "lgb_ranker": ["popular", "prev_city", "gru", "mlp"],
          "blend": ["popular", "prev_city", "gru", "mlp", "xgb_ranker", "lgb_ranker"]}


def cv(gru, mlp, xgb, lgb, blend):
    return {"popular": 0.05, "prev_city": 0.45, "gru": gru, "mlp": mlp, "xgb_ranker": xgb, "lgb_ranker": lgb, "blend": blend}


def test_blend_earns_its_place():
    name, why, steps = choose_submission(cv(0.50, 0.51, 0.540, 0.545, 0.5500), INPUTS, 0.003)
    assert name == "blend"
    assert why == "blend CV 0.5500 beats lgb_ranker 0.5450 by +0.0050 >= 0.003: blend chosen"
    assert steps == [{"model": "blend", "cv_acc4": 0.55, "best_input": "lgb_ranker", "best_input_cv_acc4": 0.545,
                      "gain": pytest.approx(0.005), "chosen": True}]


def test_blend_that_does_not_beat_its_best_input_by_min_gain_is_passed_over():
    # the README's medium run: blend 0.5439, LightGBM 0.5435, XGBoost 0.5424, GRU 0.5094, MLP 0.5069
    name, why, steps = choose_submission(cv(0.5094, 0.5069, 0.5424, 0.5435, 0.5439), INPUTS, 0.003)
    assert name == "lgb_ranker"
    assert why == ("blend CV 0.5439 beats lgb_ranker 0.5435 by +0.0004 < 0.003: not chosen; "
                   "lgb_ranker CV 0.5435 beats gru 0.5094 by +0.0341 >= 0.003: lgb_ranker chosen")
    assert [s["chosen"] for s in steps] == [False, True]
    # a blend below its best input is never considered; a min_gain of 0 takes the best CV as before
    assert choose_submission(cv(0.50, 0.51, 0.540, 0.545, 0.5440), INPUTS, 0.003)[1] == (
        "lgb_ranker CV 0.5450 beats mlp 0.5100 by +0.0350 >= 0.003: lgb_ranker chosen")
    assert choose_submission(cv(0.5094, 0.5069, 0.5424, 0.5435, 0.5439), INPUTS, 0.0)[0] == "blend"


def test_rankers_that_do_not_beat_the_neural_models_leave_the_best_neural_model():
    # blend +0.0015 over xgb; xgb +0.0020 and lgb +0.0010 over mlp: none earns its place
    name, why, steps = choose_submission(cv(0.500, 0.510, 0.512, 0.511, 0.5135), INPUTS, 0.003)
    assert name == "mlp"
    assert [s["model"] for s in steps] == ["blend", "xgb_ranker", "lgb_ranker", "mlp"]
    assert why == ("blend CV 0.5135 beats xgb_ranker 0.5120 by +0.0015 < 0.003: not chosen; "
                   "xgb_ranker CV 0.5120 beats mlp 0.5100 by +0.0020 < 0.003: not chosen; "
                   "lgb_ranker CV 0.5110 beats mlp 0.5100 by +0.0010 < 0.003: not chosen; "
                   "mlp chosen (best CV of the rest, 0.5100)")


def test_submission_rule_edge_cases():
    # a gain of exactly min_gain earns the place (float rounding aside: 0.5465 - 0.5435 < 0.003 in binary)
    assert choose_submission(cv(0.50, 0.51, 0.540, 0.5435, 0.5465), INPUTS, 0.003)[0] == "blend"
    # a plain model with the best CV is chosen outright; ties go to the earlier model
    scores = {"popular": 0.05, "gru": 0.52, "mlp": 0.52, "blend": None}
    assert choose_submission(scores, {"blend": ["popular", "gru", "mlp"]}, 0.003)[:2] == ("gru", "gru chosen (best CV, 0.5200)")
    # inputs without a CV score are left out of the comparison
    assert choose_submission({"a": None, "b": 0.3}, {"b": ["a"]}, 0.003)[0] == "b"


def test_real_data_without_oracle_or_truth_skips_those_rows(tmp_path):
    """The real dataset has no oracle files (and maybe no ground truth): no oracle row, no test
    table, and the figure is still drawn."""
    from nextdest.artifacts import read_oracle
    from nextdest.report import summary_buckets_plot

    assert read_oracle(tmp_path, "test") is None and read_oracle(tmp_path, "train") is None
    freq = city_frequency(pl.Series([1, 1, 2], dtype=pl.Int64))
    truth = pl.DataFrame({"utrip_id": ["a", "b"], "city_id": [1, 3]})
    cells = accuracy4_by_bucket(topk([("a", 1, 1)]), truth, freq, EDGES)
    summary = {
        "experiment": "official",
        "models": {"m": {"buckets": {"cv": cells, "test": None}}},
        "oracle": None,
        "frequency_buckets": {"labels": bucket_labels(EDGES), "frequency": "rows",
                              "trips": {"cv": trips_by_bucket(truth, freq, EDGES), "test": None}},
    }
    md = "\n".join(bucket_markdown(summary))
    assert "| m | 0.5000 | n/a | n/a | n/a | n/a |" in md and "oracle" not in md and "test (" not in md
    summary_buckets_plot(summary, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0
