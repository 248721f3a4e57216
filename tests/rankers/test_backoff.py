"""Hand-computed cases for the country back-off features (:mod:`nextdest.rankers.backoff`)."""

from __future__ import annotations

import polars as pl
import pytest

from nextdest.rankers.backoff import backoff_features, country_lifts


def _rows(rows):
    """Feature-table rows from (utrip_id, pos, city_idx, country_idx, checkin_month, booker_idx,
    is_last, is_test, is_concealed, fold)."""
    cols = ["utrip_id", "pos", "city_idx", "country_idx", "checkin_month", "booker_idx",
            "is_last", "is_test", "is_concealed", "fold"]
    return pl.DataFrame([dict(zip(cols, r)) for r in rows]).with_columns(pl.lit(False).alias("is_reversed"))


# Train trip a (fold 0, July, market 1): 2 -> 3 -> 4; train trip b (fold 1, January, market 1):
# 3 -> 4 -> 2; test trip t (July, market 2): 2 -> 3 -> ? (concealed). Cities 2, 3 in country 10,
# city 4 in country 11. Targets (pos >= 1, not concealed): a:3 (10), a:4 (11), b:4 (11),
# b:2 (10), t:3 (10): country 10 three of five, country 11 two of five.
FEAT = _rows([
    ("a", 0, 2, 10, 7, 1, False, False, False, 0),
    ("a", 1, 3, 10, 7, 1, False, False, False, 0),
    ("a", 2, 4, 11, 7, 1, True, False, False, 0),
    ("b", 0, 3, 10, 1, 1, False, False, False, 1),
    ("b", 1, 4, 11, 1, 1, False, False, False, 1),
    ("b", 2, 2, 10, 1, 1, True, False, False, 1),
    ("t", 0, 2, 10, 7, 2, False, True, False, 2),
    ("t", 1, 3, 10, 7, 2, False, True, False, 2),
    ("t", 2, 0, 0, 7, 2, True, True, True, 2),
])


def _lift(tab: pl.DataFrame, by: str) -> dict:
    return {(r[by], r["country_idx"]): r["lift"] for r in tab.iter_rows(named=True)}


def test_country_lifts_by_month_and_out_of_fold():
    m = _lift(country_lifts(FEAT, None, "checkin_month"), "checkin_month")
    # July targets: a:3 (10), a:4 (11), t:3 (10) -> P(10 | July) = 2/3 over P(10) = 3/5.
    assert m[(7, 10)] == pytest.approx(10 / 9) and m[(7, 11)] == pytest.approx(5 / 6)
    # January: b:4 (11), b:2 (10), half each.
    assert m[(1, 10)] == pytest.approx(5 / 6) and m[(1, 11)] == pytest.approx(5 / 4)
    # Fold 0 held out: trip a's last city (4, country 11, July) is hidden; July now all country 10
    # (a:3, t:3) and P(10) = 3/4.
    m0 = _lift(country_lifts(FEAT, 0, "checkin_month"), "checkin_month")
    assert m0[(7, 10)] == pytest.approx(4 / 3) and (7, 11) not in m0


def test_backoff_features_hand_computed():
    df = pl.DataFrame({
        "utrip_id": ["t"] * 4,
        "city_idx": [2, 3, 4, 9],
        "cand_country": [10, 10, 11, 12],  # country 12 has no target at all
        "ctx_month": [7] * 4,
        "ctx_market": [2] * 4,
        "t1_count": [3.0, None, None, None],
        "ctx_last_outdeg": [10.0, 10.0, None, 10.0],
        "tc_share": [0.5, 0.5, 0.25, None],
        "pop_in_country_share": [0.4, 0.1, 1.0, None],
    })
    out = backoff_features(df, FEAT, None, prior=5.0).sort("city_idx")
    # bo_last = tc_share * pop_in_country_share (unknown: 0).
    assert out["bo_last"].to_list() == pytest.approx([0.2, 0.05, 0.25, 0.0])
    # t1_smooth = (t1_count + 5 bo_last) / (outdeg + 5): (3 + 1) / 15; (0 + 0.25) / 15; an unseen
    # last city (outdeg 0) falls back entirely on bo_last; nothing known: 0.
    assert out["t1_smooth"].to_list() == pytest.approx([4 / 15, 0.25 / 15, 0.25, 0.0])
    # Country lifts in July: 10/9 for country 10, 5/6 for 11; country 12 unknown: missing.
    assert out["cpop_month_lift"].to_list()[:3] == pytest.approx([10 / 9, 10 / 9, 5 / 6])
    assert out["cpop_month_lift"].to_list()[3] is None
    # Market 2's targets: t:3 only (country 10): 1 / (3/5); country 11 never in market 2: 0.
    assert out["cpop_market_lift"].to_list()[:3] == pytest.approx([5 / 3, 5 / 3, 0.0])
    assert out["cpop_market_lift"].to_list()[3] is None
    # Prior 0: the raw share, and nothing where the last city has no transitions.
    raw = backoff_features(df, FEAT, None, prior=0.0).sort("city_idx")["t1_smooth"].to_list()
    assert raw[0] == pytest.approx(0.3) and raw[1:] == [0.0, None, 0.0]
