"""Hand-computed cases for the city-graph embedding features (:mod:`nextdest.rankers.embedding`)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from nextdest.rankers.embedding import city_embedding, embedding_features


def test_embedding_separates_two_components_and_is_deterministic():
    # Two disconnected pairs: 2-3 and 4-5; city 6 has no transition. With two dimensions the
    # leading singular vectors of D^-1/2 C D^-1/2 + I span the two components' indicator vectors
    # (singular value 2 each), so 2 and 3 get the same unit vector, orthogonal to 4's and 5's.
    t = pl.DataFrame({"prev1": [2, 4], "next": [3, 5], "count": [3, 1]})
    e = city_embedding(t, 7, 2)
    assert e.shape == (7, 2) and e.dtype == np.float32
    assert float(e[2] @ e[3]) == pytest.approx(1.0, abs=1e-5)
    assert float(e[4] @ e[5]) == pytest.approx(1.0, abs=1e-5)
    assert float(e[2] @ e[4]) == pytest.approx(0.0, abs=1e-5)
    assert np.all(e[6] == 0) and np.all(e[0] == 0)
    again = city_embedding(t, 7, 2)  # the same cosines (the basis of a repeated singular value is free)
    assert np.allclose(e @ e.T, again @ again.T, atol=1e-6)


def test_embedding_features_hand_computed():
    emb = np.zeros((6, 2), dtype=np.float32)
    emb[2], emb[3], emb[4] = [1, 0], [0, 1], [math.sqrt(0.5), math.sqrt(0.5)]
    # Last stay 3 (0, 1), second last 2 (1, 0): the last step is (-1, 1). First stay 2.
    df = pl.DataFrame({"utrip_id": ["t"] * 3, "city_idx": [2, 4, 5], "city_lag1": [3] * 3,
                       "city_lag2": [2] * 3, "first_city": [2] * 3})
    out = embedding_features(df, emb)
    assert out["emb_cos_lag1"].to_list()[:2] == pytest.approx([0.0, math.sqrt(0.5)])
    assert out["emb_cos_first"].to_list()[:2] == pytest.approx([1.0, math.sqrt(0.5)])
    # Candidate 2 steps (1, -1) from 3: straight back, cosine -1 with the step (-1, 1).
    # Candidate 4 steps (0.707, -0.293): cosine (-0.707 - 0.293) / (|.| sqrt 2).
    step = np.array([math.sqrt(0.5), math.sqrt(0.5) - 1])
    assert out["emb_dir"].to_list()[0] == pytest.approx(-1.0)
    assert out["emb_dir"].to_list()[1] == pytest.approx(float(step @ [-1, 1] / (np.linalg.norm(step) * math.sqrt(2))), rel=1e-5)
    # Candidate 5 has no embedding: every feature missing.
    assert all(math.isnan(out[c].to_list()[2]) for c in ("emb_cos_lag1", "emb_cos_first", "emb_dir"))
    # No second-last stay: no direction, the cosines remain.
    one = embedding_features(df.with_columns(pl.lit(None, pl.Int32).alias("city_lag2")), emb)
    assert math.isnan(one["emb_dir"].to_list()[0]) and one["emb_cos_lag1"].to_list()[1] == pytest.approx(math.sqrt(0.5))
