"""Small networks for the model tests: each model's base.yaml section with small sizes."""

from __future__ import annotations

import dataclasses
import functools

from nextdest.models import Dims, NextCityModel, build_model


@functools.lru_cache(maxsize=1)
def base_models():
    from nextdest.config import load_config

    return load_config(None).models


def small_model(name: str, dims: Dims, **sizes) -> NextCityModel:
    """Model ``name`` from its base.yaml section with every key of ``sizes`` it has replaced."""
    section = getattr(base_models(), name)
    keys = {f.name for f in dataclasses.fields(section)}
    return build_model(name, dataclasses.replace(section, **{k: v for k, v in sizes.items() if k in keys}), dims)
