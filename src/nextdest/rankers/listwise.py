"""The listwise softmax objective for the tree rankers (``objective: softmax`` in ``rankers.xgb`` and
``rankers.lgb``): the trip's candidates compete in one softmax and the loss is the cross-entropy of
the true city, the form of the generator's own last step (a choice among the last city's
candidates) and the neural ranker's loss (:mod:`nextdest.rankers.nn`). The libraries take it as a
custom objective: per row, the gradient and the diagonal of the Hessian.
"""

from __future__ import annotations

import numpy as np


def softmax_gradients(margin: np.ndarray, y: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and diagonal Hessian, per row, of the listwise softmax cross-entropy
    ``-sum_q log softmax(margin[q])[true row of q]`` over queries that start at rows ``starts``
    (rows contiguous by query, one relevant row each): ``p - y`` and ``p (1 - p)``, with ``p`` the
    softmax of the margins within the row's query. The Hessian is floored at 1e-6 so that a leaf
    of near-certain rows stays finite."""
    margin = np.asarray(margin, dtype=np.float64)
    top = np.maximum.reduceat(margin, starts)
    sizes = np.diff(np.r_[starts, len(margin)])
    e = np.exp(margin - np.repeat(top, sizes))
    p = e / np.repeat(np.add.reduceat(e, starts), sizes)
    return p - y, np.maximum(p * (1.0 - p), 1e-6)


def softmax_objective(y: np.ndarray, sizes: np.ndarray):
    """The custom objective of a fold's training rows (labels ``y``, ``sizes`` rows per query, in row
    order) in the form both libraries call: ``(margin, dataset) -> (gradient, hessian)``."""
    y = np.asarray(y, dtype=np.float64)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    return lambda margin, _dataset: softmax_gradients(margin, y, starts)
