"""Shared fixtures: a tiny synthetic experiment run through the real stages, on CPU, in a temp
artifacts folder (``NEXTDEST_ARTIFACTS``), so tests never touch the repo's artifacts/."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests run on CPU

from nextdest.config import load_config  # noqa: E402

TINY = [
    "data.preset=tiny",
    "device=cpu",
    "features.engine=cpu",
    "cv.train_folds=[0,1]",
    "train.epochs=2",
    "train.batch_size=256",
    "train.num_threads=2",
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


def tiny_config(*overrides: str):
    """The tiny CPU config used by the tests (experiment name 'base')."""
    return load_config(None, [*TINY, *overrides])


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A private artifacts root for one test."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("NEXTDEST_ARTIFACTS", str(root))
    monkeypatch.setenv("NEXTDEST_SUBMISSIONS", str(tmp_path / "submissions"))
    return root


@pytest.fixture(scope="session")
def tiny_upstream(tmp_path_factory):
    """data -> folds -> features -> baselines on the tiny preset, run once per test session.

    Returns (config, experiment folder). Tests that write must copy what they need elsewhere.
    """
    from nextdest.stages import experiment_dir, run_pipeline

    root = tmp_path_factory.mktemp("tiny_artifacts")
    old = os.environ.get("NEXTDEST_ARTIFACTS")
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        cfg = tiny_config()
        run_pipeline(cfg, ["data", "folds", "features", "baselines"])
        yield cfg, experiment_dir(cfg)
    finally:
        if old is None:
            os.environ.pop("NEXTDEST_ARTIFACTS", None)
        else:
            os.environ["NEXTDEST_ARTIFACTS"] = old
