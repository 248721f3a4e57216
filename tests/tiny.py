"""The tiny CPU configuration the tests (and quick manual checks) run the real stages with."""

from __future__ import annotations

import dataclasses

from nextdest.config import Config, load_config
from nextdest.registry import components

# Small sizes for every registered model that has such a key (a new model gets them too).
SMALL_MODEL = {"emb_dim": 32, "hidden": 64, "ctx_dim": 8}

TINY = [
    "data.preset=tiny",
    "device=cpu",
    "features.engine=cpu",
    "cv.train_folds=[0,1]",
    "train.epochs=2",
    "train.batch_size=256",
    "train.num_threads=1",
    "train.workers=1",
    "rankers.n_threads=1",
    *(f"{c.section}.{key}={value}" for c in components("model") for key, value in SMALL_MODEL.items()
      if key in {f.name for f in dataclasses.fields(c.config)}),
    *(f"{c.section}.n_estimators=30" for c in components("ranker")),
    "rankers.n_folds=3",
]


def tiny_config(*overrides: str) -> Config:
    """The tiny CPU config used by the tests (experiment name 'base')."""
    return load_config(None, [*TINY, *overrides])
