"""Baselines on a hand-built feature table (hand-computed expected top lists)."""

import polars as pl

from nextdest.baselines import popular_topk, prev_city_topk
from nextdest import folds

# trip, fold, is_test, cities (0 = concealed last row)
TRIPS = [("T1", 0, False, [2, 3, 4]), ("T2", 1, False, [2, 3, 5]), ("T3", 1, False, [3, 4, 2]), ("S1", 0, True, [2, 3, 0])]


def feature_table() -> pl.DataFrame:
    rows = []
    for trip, fold, is_test, cities in TRIPS:
        for pos, c in enumerate(cities):
            rows.append({
                "utrip_id": trip, "fold": fold, "is_test": is_test, "is_concealed": c == 0,
                "is_last": pos == len(cities) - 1, "is_reversed": False, "pos": pos, "city_idx": c,
                "city_lag1": cities[pos - 1] if pos >= 1 else 0, "city_lag2": cities[pos - 2] if pos >= 2 else 0,
            })
    return pl.DataFrame(rows, schema_overrides={"fold": pl.Int8, "pos": pl.Int16, "city_idx": pl.Int32,
                                                "city_lag1": pl.Int32, "city_lag2": pl.Int32})


CITIES = pl.DataFrame({"city_idx": [2, 3, 4, 5], "city_id": [20, 30, 40, 50]}, schema_overrides={"city_idx": pl.Int32})


def lists(topk: pl.DataFrame) -> dict[str, list[int]]:
    return {t: g.sort("rank")["city_id"].to_list() for (t,), g in topk.group_by("utrip_id")}


def test_prev_city_out_of_fold():
    feat = feature_table()
    # fold 0 validates T1 (3 -> 4); its own 3->4 is excluded, T3's 3->4 and T2's 3->5 remain (tie -> lower idx),
    # then backfill by target popularity: 3 (3 times), then 2.
    assert lists(prev_city_topk(feat, feat.filter(folds.valid_mask(0)), 0, 4, CITIES)) == {"T1": [40, 50, 30, 20]}
    # fold 1 validates T2 (3 -> 5, excluded) and T3 (4 -> 2, excluded: no transition from 4 is left).
    got = lists(prev_city_topk(feat, feat.filter(folds.valid_mask(1)), 1, 4, CITIES))
    assert got == {"T2": [40, 30], "T3": [30, 40]}
    # test: every known transition; from 3: 4 (2 of 3), 5 (1 of 3); backfill 3, 2.
    test = prev_city_topk(feat, feat.filter(folds.test_mask()), None, 4, CITIES)
    assert lists(test) == {"S1": [40, 50, 30, 20]}
    scores = test.sort("rank")["score"].to_list()
    assert abs(scores[0] - 2 / 3) < 1e-12 and abs(scores[1] - 1 / 3) < 1e-12 and scores[2] < 1e-2


def test_popular_counts_train_rows_out_of_fold():
    feat = feature_table()
    # fold 0: train rows minus T1's last row: 2 x3, 3 x3, 5 x1, 4 x1 (ties -> lower index first)
    assert lists(popular_topk(feat, feat.filter(folds.valid_mask(0)), 0, 4, CITIES)) == {"T1": [20, 30, 40, 50]}
    # test: all train rows: 2 x3, 3 x3, 4 x2, 5 x1
    assert lists(popular_topk(feat, feat.filter(folds.test_mask()), None, 3, CITIES)) == {"S1": [20, 30, 40]}
