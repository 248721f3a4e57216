"""The tiny CPU configuration the tests (and quick manual checks) run the real stages with."""

from __future__ import annotations

from nextdest.config import Config, load_config

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
    "models.gru.emb_dim=32",
    "models.gru.hidden=64",
    "models.gru.ctx_dim=8",
    "models.transformer.emb_dim=32",
    "models.transformer.ctx_dim=8",
    "models.mlp.emb_dim=32",
    "models.mlp.hidden=64",
    "models.mlp.ctx_dim=8",
    "rankers.xgb.n_estimators=30",
    "rankers.lgb.n_estimators=30",
    "rankers.n_folds=3",
]


def tiny_config(*overrides: str) -> Config:
    """The tiny CPU config used by the tests (experiment name 'base')."""
    return load_config(None, [*TINY, *overrides])
