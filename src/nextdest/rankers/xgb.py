"""XGBoost learning-to-rank behind the :class:`~nextdest.rankers.base.Ranker` interface.

``rankers.xgb.objective`` picks ``rank:ndcg`` (LambdaMART), ``rank:pairwise`` or ``rank:map``;
early stopping watches NDCG@4 on the held-out group (with one relevant city per trip, NDCG@4 is
accuracy@4 weighted by position). ``device="cuda"`` when :func:`nextdest.device.resolve_device`
says so, else the CPU ``hist`` tree method.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from .base import RankData, Ranker


class XGBRanker(Ranker):
    name = "xgb"

    def _params(self) -> dict:
        p = self.params
        return {
            "objective": p.objective,
            "eval_metric": "ndcg@4",
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

    def _dmatrix(self, data: RankData, ref=None) -> xgb.DMatrix:
        d = xgb.QuantileDMatrix(data.X, label=data.y, feature_names=data.names, ref=ref, max_bin=self.params.max_bin,
                                nthread=self.n_threads)
        d.set_group(data.sizes)
        return d

    def prepare(self, data: RankData, rows: np.ndarray):
        """The histogram cuts, sketched once from every trainable row (features only, no labels):
        each fold's matrices are binned against them instead of sketching their own."""
        return self._dmatrix(data.take(rows))

    def fit_rows(self, prepared, data: RankData, train_rows: np.ndarray, valid_rows: np.ndarray) -> "XGBRanker":
        dtrain = self._dmatrix(data.take(train_rows), ref=prepared)
        dvalid = self._dmatrix(data.take(valid_rows), ref=dtrain)  # the same cuts (XGBoost wants dtrain as the ref)
        return self._train(dtrain, dvalid)

    def fit(self, train: RankData, valid: RankData) -> "XGBRanker":
        dtrain = self._dmatrix(train)
        return self._train(dtrain, self._dmatrix(valid, ref=dtrain))

    def _train(self, dtrain, dvalid) -> "XGBRanker":
        self.booster = xgb.train(
            self._params(), dtrain, num_boost_round=self.params.n_estimators, evals=[(dvalid, "valid")],
            early_stopping_rounds=self.params.early_stopping_rounds, verbose_eval=False,
        )
        self.best_iteration = int(self.booster.best_iteration) + 1
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(X, iteration_range=(0, self.best_iteration)), dtype=np.float64)

    def importance(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.booster.get_score(importance_type="total_gain").items()}

    def describe(self) -> dict:
        return {"device": self.device, "tree_method": "hist", "objective": self.params.objective, "xgboost": xgb.__version__}
