"""Calibration statistics checked by hand on a four-trip dataset, plus a smoke test on tiny."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

from nextdest.data.calibrate import baselines, calibration_table, run_calibration

HEADER = "user_id,checkin,checkout,city_id,device_class,affiliate_id,booker_country,hotel_country,utrip_id\n"
# train: 1_1 = 10,20,30,40 (nights 1,1,1,2; one country; July)
#        2_1 = 10,20,50,60,50 (nights 1,2,1,1,1; a 2-day gap before the 4th stay; countries A, B)
TRAIN = HEADER + """\
1,2016-07-01,2016-07-02,10,desktop,100,Gondal,A,1_1
1,2016-07-02,2016-07-03,20,desktop,100,Gondal,A,1_1
1,2016-07-03,2016-07-04,30,desktop,100,Gondal,A,1_1
1,2016-07-04,2016-07-06,40,desktop,100,Gondal,A,1_1
2,2016-08-01,2016-08-02,10,mobile,200,Elbonia,A,2_1
2,2016-08-02,2016-08-04,20,mobile,200,Elbonia,A,2_1
2,2016-08-04,2016-08-05,50,mobile,200,Elbonia,B,2_1
2,2016-08-07,2016-08-08,60,mobile,200,Elbonia,B,2_1
2,2016-08-08,2016-08-09,50,mobile,200,Elbonia,B,2_1
"""
# test: 1_2 = 10,20,30,[40] (user 1 is also in train); 5_1 = 40,60,50,[70]
TEST = HEADER + """\
1,2016-09-10,2016-09-11,10,desktop,100,Gondal,A,1_2
1,2016-09-11,2016-09-12,20,desktop,100,Gondal,A,1_2
1,2016-09-12,2016-09-13,30,desktop,100,Gondal,A,1_2
1,2016-09-13,2016-09-14,0,desktop,100,Gondal,,1_2
5,2017-01-05,2017-01-06,40,tablet,300,Gondal,A,5_1
5,2017-01-06,2017-01-07,60,tablet,300,Gondal,B,5_1
5,2017-01-07,2017-01-10,50,tablet,300,Gondal,B,5_1
5,2017-01-10,2017-01-11,0,tablet,300,Gondal,,5_1
"""
TRUTH = "utrip_id,city_id,hotel_country\n1_2,40,A\n5_1,70,C\n"


@pytest.fixture()
def hand(tmp_path) -> Path:
    (tmp_path / "train_set.csv").write_text(TRAIN)
    (tmp_path / "test_set.csv").write_text(TEST)
    (tmp_path / "ground_truth.csv").write_text(TRUTH)
    return tmp_path


def _rows(path: Path, scale: str = "full") -> dict[str, dict]:
    return {r["statistic"]: r for r in calibration_table(path, scale=scale)}


def test_trip_statistics(hand):
    r = _rows(hand)
    assert r["train rows"]["value"] == 9
    assert r["train trips"]["value"] == 2 and r["test trips"]["value"] == 2
    assert r["distinct cities in train+test"]["value"] == 6  # 10 20 30 40 50 60 (70 is concealed)
    # lengths over train + test: 4, 5, 4, 4
    assert r["trips of length 4 (%)"]["value"] == pytest.approx(75.0)
    assert r["trips of length 5 (%)"]["value"] == pytest.approx(25.0)
    assert r["trips of length 9+ (%)"]["value"] == pytest.approx(0.0)
    assert r["mean trip length"]["value"] == pytest.approx(4.25)
    # nights: 1,1,1,2 | 1,2,1,1,1 | 1,1,1,1 | 1,1,3,1 -> 21 nights over 17 stays
    assert r["nights per stay: mean"]["value"] == pytest.approx(21 / 17, abs=1e-4)
    assert r["nights per stay: median"]["value"] == 1
    assert r["nights per stay: max"]["value"] == 3
    # spans 5, 8, 4, 6 days; every span occurs once -> the mode is the smallest
    assert r["trip span (days): mean"]["value"] == pytest.approx(5.75)
    assert r["trip span (days): mode"]["value"] == 4
    assert r["trips fully consecutive (%)"]["value"] == pytest.approx(75.0)
    # countries (concealed rows completed from the truth): 1, 2, 1, 3
    assert r["trips within one hotel country (%)"]["value"] == pytest.approx(50.0)
    assert r["distinct countries per trip"]["value"] == pytest.approx(1.75)
    assert r["check-in month Jul (%)"]["value"] == pytest.approx(100 * 4 / 17, abs=1e-4)
    assert r["final city top-1 share (%)"]["value"] == pytest.approx(50.0)
    assert r["test users also in train (%)"]["value"] == pytest.approx(50.0)  # user 1 of {1, 5}
    assert r["device tablet share (%)"]["value"] == pytest.approx(100 * 4 / 17, abs=1e-4)


def test_baselines_by_hand(hand):
    from nextdest.data.calibrate import _load

    b = baselines(*_load(hand))
    # popular-4 over train rows: 10 (2), 20 (2), 50 (2), then 30 (1, smallest id among the 1s)
    # -> neither 40 nor 70 -> 0
    assert b["popular4"] == 0.0
    # 1_2: after 30 comes 40 (train 1_1) -> hit. 5_1: after 50 comes 60 only -> [60, 10, 20, 50]
    # misses 70 -> 1/2
    assert b["prev_city"] == 0.5
    # (20, 30) -> 40 seen in train: hit; (60, 50) unseen -> backs off to the previous-city list
    assert b["last_two"] == 0.5
    r = _rows(hand)
    assert r["popular-4 baseline (acc@4)"]["value"] == 0.0
    assert r["previous-city baseline (acc@4)"]["value"] == 0.5
    assert r["last-two-cities minus previous-city baseline"]["value"] == 0.0


def test_ceiling_rows(hand):
    r = _rows(hand)
    assert r["ceiling (expected, oracle top-4 mass)"]["value"] == "n/a"
    assert r["ceiling (expected, oracle top-4 mass)"]["pass"]
    pl.DataFrame({
        "utrip_id": ["1_2"] * 5 + ["5_1"] * 5,
        "city_id": [40, 10, 20, 30, 50, 60, 50, 10, 20, 70],
        "prob": [0.5, 0.2, 0.1, 0.1, 0.05, 0.3, 0.3, 0.1, 0.1, 0.05],
        "rank": pl.Series([1, 2, 3, 4, 5] * 2, dtype=pl.Int32),
    }).write_parquet(hand / "oracle.parquet")
    r = _rows(hand)
    assert r["ceiling (expected, oracle top-4 mass)"]["value"] == pytest.approx(0.85)
    assert r["ceiling (realized, truth in oracle top-4)"]["value"] == pytest.approx(0.5)
    assert r["ceiling (expected) minus previous-city baseline"]["value"] == pytest.approx(0.35)


def test_scale_marks_count_rows(hand):
    full, small = _rows(hand, "full"), _rows(hand, "small")
    assert not full["train rows"]["pass"]  # 9 rows is not 1,166,835
    assert small["train rows"]["pass"] and "n/a" in small["train rows"]["tolerance"]
    assert small["mean trip length"]["tolerance"] == full["mean trip length"]["tolerance"]


def test_run_calibration_on_tiny(tmp_path):
    from nextdest.data.synthetic import generate

    generate("tiny", 1, tmp_path)
    buf = io.StringIO()
    rc = run_calibration(tmp_path, out=buf, scale="tiny")
    text = buf.getvalue()
    assert rc in (0, 1)
    assert "| statistic | value | target | tolerance | pass |" in text
    rows = calibration_table(tmp_path, scale="tiny")
    assert all(set(r) == {"statistic", "value", "target", "tolerance", "pass"} for r in rows)
    assert rc == (0 if all(r["pass"] for r in rows) else 1)


def test_row_margin_by_hand(hand):
    from nextdest.data.calibrate import row_margin

    def row(value, target, tol, ok=True):
        return {"statistic": "s", "value": value, "target": target, "tolerance": tol, "pass": ok}

    assert row_margin(row(5.36, 5.36, "±0.1")) == pytest.approx(1.0)
    assert row_margin(row(5.41, 5.36, "±0.1")) == pytest.approx(0.5)
    assert row_margin(row(66.0, 72.2, "±4 pts", False)) == pytest.approx(1 - 6.2 / 4)
    assert row_margin(row(1_166_835 * 1.01, 1_166_835, "±2%")) == pytest.approx(0.5)
    assert row_margin(row(30, 30, "±0%")) == 1.0
    assert row_margin(row(48, "30-48", "range")) == 1.0  # anywhere in a range meets the spec
    assert row_margin(row(0.77, "0.62-0.75", "range", False)) == pytest.approx(-0.02 / 0.065)
    assert row_margin(row(9, 7, "6-8", False)) == pytest.approx(-1.0)
    assert row_margin(row(0.03, 0.02, "at least")) == pytest.approx(0.5)
    assert row_margin(row(2, 1, "exact", False)) == -1.0
    assert row_margin(row(0.66, 0.65, "±0.030 of expected")) == pytest.approx(1 - 0.01 / 0.03)
    assert row_margin(row(100, 200, "n/a (scale tiny)")) is None
    assert row_margin(row("n/a", "-", "n/a (no oracle.parquet)")) is None
    # on a real table: a margin for every checked row, negative exactly on the failing ones
    for r in calibration_table(hand, scale="full"):
        m = row_margin(r)
        if m is None:
            assert "n/a" in r["tolerance"]
        else:
            assert (m >= 0) == r["pass"], r
