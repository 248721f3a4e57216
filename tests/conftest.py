"""Shared fixtures: a tiny synthetic experiment run through the real stages, on CPU, in a temp
artifacts folder (``NEXTDEST_ARTIFACTS``), so tests never touch the repo's artifacts/."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests run on CPU

from tiny import TINY, tiny_config  # noqa: E402,F401

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
