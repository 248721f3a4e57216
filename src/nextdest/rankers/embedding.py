"""A spectral embedding of the city graph, for candidate features that place rarely seen cities.

``C`` is the symmetric transition-count matrix (out of fold, as every candidate statistic) and
``A = D^-1/2 C D^-1/2`` its normalised form; the embedding of city ``i`` is row ``i`` of ``U * s``
for the ``dim`` leading singular pairs of ``A + I`` (I on the cities with transitions),
unit-normalised. Cities linked to the same
neighbours get close vectors even when they have only a handful of transitions, so a rare city
inherits the position of the places it is seen with (in the generator, travel follows a map:
nearby cities and a country's hubs). Features (:func:`embedding_features`):

  * ``emb_cos_lag1`` / ``emb_cos_first``: cosine of the candidate with the last / the first stay;
  * ``emb_dir``: cosine of the step ``e(cand) - e(last)`` with the trip's last step
    ``e(last) - e(second last)`` (trips keep their direction of travel).

A city without transitions has no embedding: its features are missing (NaN).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.linalg import svds


def city_embedding(trans1: pl.DataFrame, n_index: int, dim: int) -> np.ndarray:
    """(n_index, dim) float32 unit rows (zero rows for cities without transitions) from the
    transition counts ``trans1`` (prev1, next, count); deterministic (fixed start vector)."""
    a = trans1["prev1"].to_numpy().astype(np.int64)
    b = trans1["next"].to_numpy().astype(np.int64)
    w = trans1["count"].to_numpy().astype(np.float64)
    c = sp.coo_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(n_index, n_index)).tocsr()
    deg = np.asarray(c.sum(axis=1)).ravel()
    inv = sp.diags(np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0))
    # + I on the cities with transitions: the leading singular pairs of the (then positive
    # semi-definite) matrix are the smooth eigenvectors, not the alternating ones of eigenvalue -1.
    norm = (inv @ c @ inv + sp.diags((deg > 0).astype(np.float64))).tocsr()
    k = min(dim, n_index - 2)
    if k < 1 or norm.nnz == 0:
        return np.zeros((n_index, max(dim, 1)), dtype=np.float32)
    u, s, _ = svds(norm, k=k, v0=np.full(n_index, 1.0 / np.sqrt(n_index)), random_state=0)
    e = u * s
    e = e * np.sign(e[np.abs(e).argmax(axis=0), np.arange(e.shape[1])])  # a fixed sign per column
    length = np.linalg.norm(e, axis=1, keepdims=True)
    e = np.where(length > 1e-12, e / np.maximum(length, 1e-12), 0.0)
    return e.astype(np.float32)


def _cos(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    ok = (nx > 1e-6) & (ny > 1e-6)
    out = np.full(len(x), np.nan, dtype=np.float32)
    out[ok] = (x[ok] * y[ok]).sum(axis=1) / (nx[ok] * ny[ok])
    return out


def embedding_features(df: pl.DataFrame, emb: np.ndarray) -> pl.DataFrame:
    """Adds ``emb_cos_lag1``, ``emb_cos_first`` and ``emb_dir`` (module docstring) to ``df``, which
    needs ``city_idx``, ``city_lag1``, ``city_lag2``, ``first_city`` (null / 0: no such stay)."""
    n = emb.shape[0]

    def rows(col: str) -> np.ndarray:
        idx = df[col].fill_null(0).to_numpy().astype(np.int64)
        idx = np.where((idx > 0) & (idx < n), idx, 0)
        out = emb[idx]
        out[idx == 0] = 0.0
        return out

    cand, last, last2, first = rows("city_idx"), rows("city_lag1"), rows("city_lag2"), rows("first_city")
    has2 = np.linalg.norm(last2, axis=1) > 1e-6
    step = np.where((has2 & (np.linalg.norm(cand, axis=1) > 1e-6))[:, None], last - last2, 0.0)
    return df.with_columns(
        pl.Series("emb_cos_lag1", _cos(cand, last)),
        pl.Series("emb_cos_first", _cos(cand, first)),
        pl.Series("emb_dir", _cos(cand - last, step)),
    )
