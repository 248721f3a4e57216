"""LightGBM learning-to-rank behind the :class:`~nextdest.rankers.base.Ranker` interface.

``rankers.lgb.objective`` picks ``lambdarank``, ``rank_xendcg`` (LightGBM's listwise cross-entropy)
or ``softmax`` (the softmax cross-entropy of the true city against its trip's other candidates,
:func:`~nextdest.rankers.listwise.softmax_gradients`, as a custom objective).

The fold loop stops on NDCG@4 pooled over the held-out groups. Every trainable row is binned once
(:meth:`LGBRanker.prepare`) and each fold trains on a subset of that Dataset. On a CUDA machine LightGBM runs on the GPU
only when the installed build supports it (``device_type="cuda"``, else the OpenCL ``"gpu"``);
:func:`lgb_device` probes that once with a tiny training run and falls back to the CPU, saying why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..sections import at_least
from .base import GBDTConfig, RankData, Ranker, register_ranker
from .listwise import softmax_objective


@dataclass(frozen=True)
class LGBConfig(GBDTConfig):
    objective: Literal["lambdarank", "rank_xendcg", "softmax"]
    num_leaves: int = at_least(2)
    min_child_samples: int = at_least(0)


@functools.lru_cache(maxsize=None)
def lgb_device(device: str) -> tuple[str, str]:
    """(LightGBM ``device_type``, why) for the resolved project device ("cuda" or "cpu")."""
    if device != "cuda":
        return "cpu", "device resolved to cpu"
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    X, y = rng.random((64, 3)), (rng.random(64) > 0.5).astype(float)
    for dtype in ("cuda", "gpu"):
        try:
            ds = lgb.Dataset(X, y, group=[16] * 4, params={"verbose": -1})
            lgb.train({"objective": "lambdarank", "device_type": dtype, "verbose": -1, "num_threads": 1}, ds, num_boost_round=1)
            return dtype, f"this LightGBM build trains on device_type={dtype}"
        except Exception as exc:  # LightGBMError: not built with that device
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "cpu", f"this LightGBM build has no GPU support ({why}); using the CPU"


@register_ranker("lgb_ranker", "lgb", LGBConfig)
class LGBRanker(Ranker):
    def _params(self) -> dict:
        p = self.params
        device_type, _why = lgb_device(self.device)
        return {
            "objective": "none" if p.objective == "softmax" else p.objective,  # softmax: gradients from boost()
            "metric": "none",  # the fold loop scores the held-out groups itself
            "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves,
            "min_child_samples": p.min_child_samples,
            "max_bin": p.max_bin,
            "bagging_fraction": p.subsample,
            "bagging_freq": 1 if p.subsample < 1.0 else 0,
            "feature_fraction": p.colsample_bytree,
            "lambdarank_truncation_level": 20,
            "device_type": device_type,
            "num_threads": self.n_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": device_type == "cpu",
            "verbose": -1,
        }

    def _dataset_params(self) -> dict:
        return {"verbose": -1, "max_bin": self.params.max_bin, "num_threads": self.n_threads}

    def prepare(self, data: RankData, rows: np.ndarray):
        """Every trainable row binned once (LightGBM ``Dataset``, raw values freed); each fold
        trains on a subset of it (``Dataset.subset``: bins copied, none recomputed)."""
        import lightgbm as lgb

        full = lgb.Dataset(data.X[rows], data.y[rows], group=data.sizes_of(rows) if len(rows) else None,
                           feature_name=data.names, params=self._dataset_params(), free_raw_data=True)
        return full.construct(), np.asarray(rows)

    def start(self, prepared, data: RankData, rows: np.ndarray):
        import lightgbm as lgb

        full, kept = prepared
        self.booster = lgb.Booster(self._params(), full.subset(np.searchsorted(kept, rows)))
        self._fobj = softmax_objective(data.y[rows], data.sizes_of(rows)) if self.params.objective == "softmax" else None
        return prepared  # every fold subsets the same binned Dataset

    def boost(self, rounds: int) -> None:
        for _ in range(rounds):
            self.booster.update(fobj=self._fobj)
            self.n_trees += 1

    def finish(self, n_trees: int) -> None:
        self.best_iteration = n_trees
        self.booster.free_dataset()
        self._fobj = None

    def predict(self, X: np.ndarray, first: int = 0, last: int | None = None, sizes: np.ndarray | None = None) -> np.ndarray:
        last = self.best_iteration if last is None else last
        if last <= first:
            return np.zeros(len(X))
        out = self.booster.predict(X, start_iteration=first, num_iteration=last - first, raw_score=True)
        return np.asarray(out, dtype=np.float64)

    def importance(self) -> dict[str, float]:
        gain = self.booster.feature_importance(importance_type="gain", iteration=self.best_iteration)
        return {n: float(g) for n, g in zip(self.booster.feature_name(), gain)}

    def describe(self) -> dict:
        import lightgbm as lgb

        device_type, why = lgb_device(self.device)
        return {"device": self.device, "lgb_device_type": device_type, "lgb_device_note": why, "lightgbm": lgb.__version__}
