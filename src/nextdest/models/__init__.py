"""Next-city models, all ending in the tied city-embedding head (:mod:`.base`).

A model is one module in this folder that registers its network (:func:`register_model`); importing
this package imports every module in it, so :data:`MODELS` lists them all. A model is built from
its config section (``models.<name>``) and the data's :class:`Dims`.

Torch only (no polars, no yaml): ``scripts/gpu_check.sh`` imports these on a bare machine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..registry import Component, discover
from .base import ModelConfig, NextCityModel, register_model
from .batch import Batch, Dims

MODELS: dict[str, Component] = discover("model")  # name -> registered model, every module of this package imported


def build_model(name: str, section: Any, dims: Dims | dict) -> NextCityModel:
    """Model ``name`` built from its config section (its dataclass, or a dict of its keys) and the
    data sizes ``dims``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    entry = MODELS[name]
    if not dataclasses.is_dataclass(section):
        # seeds (a training key, models.<name>.seeds) is absent from model files written before it existed
        section = entry.config(**{"seeds": (), **section})
    return entry.cls(section, dims if isinstance(dims, Dims) else Dims(**dims))


__all__ = ["Batch", "Dims", "MODELS", "ModelConfig", "NextCityModel", "build_model", "register_model"]
