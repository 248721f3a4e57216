"""Hand-computed cases for the candidate features beside the model scores: final-step statistics,
graph closeness and the same user's other trips."""

from __future__ import annotations

import math

import polars as pl
import numpy as np
import pytest
import scipy.sparse as sp

from nextdest.rankers.candidates import _crossing_features, _final_step_features, _graph_features, _user_features, csr_values


def _rows(rows):
    """Feature-table rows from (utrip_id, user_id, pos, city_idx, country_idx, city_lag1,
    first_city, is_last, is_test, is_concealed, fold)."""
    cols = ["utrip_id", "user_id", "pos", "city_idx", "country_idx", "city_lag1", "first_city",
            "is_last", "is_test", "is_concealed", "fold"]
    df = pl.DataFrame([dict(zip(cols, r)) for r in rows])
    return df.with_columns(pl.lit(False).alias("is_reversed"))


# Two users. u1: train trip a (cities 2 -> 3 -> 4, fold 0) and test trip t (2 -> 3 -> ?);
# u2: train trip b (3 -> 4 -> 2, fold 1). Countries: 2, 3 -> country 10; 4 -> country 11.
FEAT = _rows([
    ("a", 1, 0, 2, 10, 0, 2, False, False, False, 0),
    ("a", 1, 1, 3, 10, 2, 2, False, False, False, 0),
    ("a", 1, 2, 4, 11, 3, 2, True, False, False, 0),
    ("b", 2, 0, 3, 10, 0, 3, False, False, False, 1),
    ("b", 2, 1, 4, 11, 3, 3, False, False, False, 1),
    ("b", 2, 2, 2, 10, 4, 3, True, False, False, 1),
    ("t", 1, 0, 2, 10, 0, 2, False, True, False, 2),
    ("t", 1, 1, 3, 10, 2, 2, False, True, False, 2),
    ("t", 1, 2, 0, 0, 3, 2, True, True, True, 2),
])
CITIES = pl.DataFrame({"city_idx": [2, 3, 4], "country_idx": [10, 10, 11]})


def _cands(trip: str, cities: list[int], **ctx) -> pl.DataFrame:
    return pl.DataFrame({"utrip_id": [trip] * len(cities), "city_idx": cities, **{k: [v] * len(cities) for k, v in ctx.items()}})


def test_user_features_count_other_trips_only_and_respect_the_held_out_fold():
    q = FEAT.filter(pl.col("utrip_id") == "t")
    df = _cands("t", [2, 3, 4])
    out = _user_features(df, FEAT, q.head(1), None, CITIES).sort("city_idx")
    # u1's other trip a: cities 2, 3, 4 once each; countries 10 twice, 11 once (3 stays).
    assert out["user_city_stays"].to_list() == [1.0, 1.0, 1.0]
    assert out["user_country_stays"].to_list() == [2.0, 2.0, 1.0]
    assert out["user_country_share"].to_list() == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert out["ctx_user_trips"].to_list() == [1.0, 1.0, 1.0]
    # With fold 0 held out, trip a's last city (4) is a hidden target: not counted.
    out0 = _user_features(df, FEAT, q.head(1), 0, CITIES).sort("city_idx")
    assert out0["user_city_stays"].to_list() == [1.0, 1.0, 0.0]
    assert out0["user_country_share"].to_list() == pytest.approx([1.0, 1.0, 0.0])
    # A user with no other trip gets zeros, not missing values.
    qb = FEAT.filter(pl.col("utrip_id") == "b").head(1)
    outb = _user_features(_cands("b", [2, 4]), FEAT, qb, None, CITIES)
    assert outb["user_city_stays"].to_list() == [0.0, 0.0] and outb["ctx_user_trips"].to_list() == [0.0, 0.0]


def test_final_step_features_use_only_last_steps():
    df = _cands("t", [2, 4], city_lag1=3, first_city=2, pop_share=0.5)
    out = _final_step_features(df, FEAT, None).sort("city_idx")
    # Final steps known: a (3 -> 4, first 2) and b (4 -> 2, first 3). After last city 3: only 4.
    assert out["fin_t1_share"].to_list()[1] == 1.0 and out["fin_t1_share"].to_list()[0] is None
    assert out["fin_t1_count"].to_list() == [0.0, 1.0]
    assert out["ctx_fin_t1_n"].to_list() == [1.0, 1.0]
    # First city 2 -> final city: trip a ended in 4.
    assert out["fin_first_share"].to_list() == [None, 1.0]
    # Final-city popularity: 2 and 4 once each of two final steps; lift over pop_share 0.5 = 1.
    assert out["fin_pop_share"].to_list() == [0.5, 0.5]
    assert out["fin_pop_lift"].to_list() == [1.0, 1.0]
    # Fold 0 held out: trip a's final step is hidden, so nothing follows 3 on a final step.
    out0 = _final_step_features(df, FEAT, 0).sort("city_idx")
    assert out0["fin_t1_count"].to_list() == [0.0, 0.0]
    assert out0["fin_pop_share"].to_list() == [1.0, 0.0]


def test_crossing_features_by_country_of_the_last_city_and_entry_cities():
    feat = FEAT.with_columns(pl.col("city_lag1").replace_strict({0: 0, 2: 10, 3: 10, 4: 11}).alias("country_lag1"))
    # Known steps: 2 -> 3 (a, t), 3 -> 4 (a), 3 -> 4 (b), 4 -> 2 (b): shares out of 3: {4: 1}.
    t1 = pl.DataFrame({"prev1": [2, 3, 4], "next": [3, 4, 2], "share": [1.0, 1.0, 1.0]})
    df = pl.DataFrame({"utrip_id": ["t", "t", "u", "v"], "city_idx": [2, 4, 4, 3], "city_lag1": [3, 3, 5, 4],
                       "country_lag1": [10, 10, 10, 11], "cand_country": [10, 11, 11, 10],
                       "pop_in_country_share": [0.4, 1.0, 1.0, 0.6]})
    out = _crossing_features(df, feat, None, t1, CITIES)
    # From 3 every next stay lay in country 11; an unseen last city (5) has no share.
    assert out["t1_country_share"].to_list() == [0.0, 1.0, None, 1.0]
    # Crossings 10 -> 11 landed in 4 (twice), 11 -> 10 in 2 (once, so 3 gets 0); same country: null.
    assert out["entry_share"].to_list() == [None, 1.0, 1.0, 0.0]
    # bo_city = t1_country_share x (entry_share across the border, else pop_in_country_share).
    assert out["bo_city"].to_list() == [0.0, 1.0, None, 0.0]


def test_graph_features_one_and_two_hops():
    # Transitions 2 -> 3 (x2) and 3 -> 4 (x1). Symmetric counts: 2-3: 2, 3-4: 1.
    trans1 = pl.DataFrame({"prev1": [2, 3], "next": [3, 4], "count": [2, 1]})
    # Row-normalised P: P[2,3] = 1; P[3,2] = 2/3, P[3,4] = 1/3; P[4,3] = 1.
    df = _cands("t", [2, 3, 4], city_lag1=3, city_lag2=2, city_lag3=None, first_city=2)
    df = df.with_columns(pl.col("city_lag3").cast(pl.Int32))  # typed and null, as in the feature table
    out = _graph_features(df, trans1, 5).sort("city_idx")
    assert out["g1_lag1"].to_list() == pytest.approx([2 / 3, 0.0, 1 / 3])
    assert out["g1_lag2"].to_list() == pytest.approx([0.0, 1.0, 0.0])
    # P2 from 2: 2 -> 3 -> {2: 2/3, 4: 1/3}; from 3: 3 -> 2 -> 3 (2/3) + 3 -> 4 -> 3 (1/3) = 1.
    assert out["g2_lag2"].to_list() == pytest.approx([2 / 3, 0.0, 1 / 3])
    assert out["g2_lag1"].to_list() == pytest.approx([0.0, 1.0, 0.0])
    # No third-last stay: missing, not zero.
    assert all(math.isnan(v) for v in out["g1_lag3"].to_list())



def test_csr_values_matches_dense_lookup():
    # Unsorted column indices and a duplicate entry (row 0: col 2 holds 3 and 4 = 7, col 0 holds 1), an empty row (1), pairs
    # in any order, repeated, and pairs with nothing stored.
    mat = sp.csr_matrix((np.array([3.0, 1.0, 4.0, 2.0]), np.array([2, 0, 2, 1]), np.array([0, 3, 3, 4])), shape=(3, 3))
    dense = mat.toarray()
    rows = np.array([0, 0, 2, 1, 0, 2, 0])
    cols = np.array([2, 0, 1, 1, 1, 0, 2])
    assert csr_values(mat, rows, cols).tolist() == [7.0, 1.0, 2.0, 0.0, 0.0, 0.0, 7.0]
    assert csr_values(mat, rows, cols).tolist() == dense[rows, cols].tolist()
    assert csr_values(mat, np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == []
    assert csr_values(sp.csr_matrix((2, 2)), np.array([1]), np.array([0])).tolist() == [0.0]
