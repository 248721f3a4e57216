"""XGBoost learning-to-rank behind the :class:`~nextdest.rankers.base.Ranker` interface.

``rankers.xgb.objective`` picks ``rank:ndcg`` (LambdaMART), ``rank:pairwise``, ``rank:map``,
``binary:logistic`` (pointwise) or ``softmax`` (listwise: the softmax cross-entropy of the true city
against its trip's other candidates, :func:`~nextdest.rankers.listwise.softmax_gradients`, as a custom
objective); the fold loop stops on NDCG@4 pooled over the held-out groups (with one relevant city per trip,
NDCG@4 is accuracy@4 weighted by position). ``device="cuda"`` when
:func:`nextdest.device.resolve_device` says so, else the CPU ``hist`` tree method. The quantile
cuts are sketched once per cross-fit (:meth:`XGBRanker.prepare`) and every fold's matrix is binned
against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..sections import at_least
from .base import GBDTConfig, RankData, Ranker, register_ranker, resolve_threads
from .listwise import softmax_objective


def RowBlocks(data: RankData, rows: np.ndarray, block: int = 1 << 19):
    """An ``xgboost.DataIter`` over rows ``rows`` of ``data``, ``block`` rows at a time: XGBoost
    bins each block as it comes, so only one block's copy of the features exists at once."""
    import xgboost as xgb

    class _Blocks(xgb.DataIter):
        def __init__(self):
            self.at = 0
            super().__init__(release_data=True)

        def next(self, input_data) -> bool:
            if self.at >= len(rows):
                return False
            r = rows[self.at:self.at + block]
            input_data(data=data.X[r], label=data.y[r], feature_names=data.names)
            self.at += block
            return True

        def reset(self) -> None:
            self.at = 0

    return _Blocks()


@dataclass(frozen=True)
class XGBConfig(GBDTConfig):
    objective: Literal["rank:ndcg", "rank:pairwise", "rank:map", "binary:logistic", "softmax"]
    max_depth: int = at_least(1)


@register_ranker("xgb_ranker", "xgb", XGBConfig)
class XGBRanker(Ranker):
    @classmethod
    def runtime(cls, cfg) -> dict:
        """XGBoost's hist trees are deterministic for a given thread count only."""
        return {"xgb_threads": resolve_threads(cfg.rankers.n_threads)}
    def _params(self) -> dict:
        p = self.params
        softmax = p.objective == "softmax"
        return {
            # softmax: the gradients come from self._fobj (start); squared error only names a margin
            # objective (no link) and base_score 0 a zero start (a constant shift is lost in a softmax)
            "objective": "reg:squarederror" if softmax else p.objective,
            **({"base_score": 0.0, "disable_default_eval_metric": True} if softmax else {}),
            "eta": p.learning_rate,
            "max_depth": p.max_depth,
            "subsample": p.subsample,
            "colsample_bytree": p.colsample_bytree,
            "max_bin": p.max_bin,
            "tree_method": "hist",
            "device": "cuda" if self.device == "cuda" else "cpu",
            "nthread": self.n_threads,
            "seed": self.seed,
        }

    def _dmatrix(self, data: RankData, ref=None):
        return self._binned(data.X, data.sizes, ref, label=data.y, feature_names=data.names)

    def _binned(self, source, sizes: np.ndarray, ref=None, **info):
        """A ``QuantileDMatrix`` of ``source`` (an array, with its ``info``, or a ``DataIter``
        that carries them) with ``sizes`` rows per query, binned against ``ref``'s cuts if given."""
        import xgboost as xgb

        d = xgb.QuantileDMatrix(source, ref=ref, max_bin=self.params.max_bin, nthread=self.n_threads, **info)
        d.set_group(sizes)
        return d

    def prepare(self, data: RankData, rows: np.ndarray):
        """The histogram cuts, sketched once from every trainable row (features only, no labels):
        each fold's matrices are binned against them instead of sketching their own."""
        return self._dmatrix(data.take(rows))

    def start(self, prepared, data: RankData, rows: np.ndarray):
        """Bin rows ``rows`` against the cuts of ``prepared`` (streamed in blocks: no copy of the
        fold's rows) and hand this fold's matrix on as the next fold's reference (same cuts), so
        the all-rows matrix of :meth:`prepare` is freed after the first fold."""
        import xgboost as xgb

        sizes = data.sizes_of(rows)
        self._dtrain = self._binned(RowBlocks(data, rows), sizes, prepared)
        self.booster = xgb.Booster(self._params(), [self._dtrain])
        self._fobj = softmax_objective(data.y[rows], sizes) if self.params.objective == "softmax" else None
        return self._dtrain

    def boost(self, rounds: int) -> None:
        for _ in range(rounds):
            self.booster.update(self._dtrain, self.n_trees, fobj=self._fobj)
            self.n_trees += 1

    def finish(self, n_trees: int) -> None:
        self.booster = self.booster[:n_trees]  # the kept trees only (predictions and importances)
        self.best_iteration = n_trees
        self._dtrain = self._fobj = None

    def predict(self, X: np.ndarray, first: int = 0, last: int | None = None, sizes: np.ndarray | None = None) -> np.ndarray:
        last = self.best_iteration if last is None else last
        if last <= first:  # XGBoost reads an empty range as "every tree"
            return np.zeros(len(X))
        out = self.booster.inplace_predict(X, iteration_range=(first, last), predict_type="margin")
        return np.asarray(out, dtype=np.float64)

    def importance(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.booster.get_score(importance_type="total_gain").items()}

    def describe(self) -> dict:
        import xgboost as xgb

        return {"device": self.device, "tree_method": "hist", "objective": self.params.objective, "xgboost": xgb.__version__}
