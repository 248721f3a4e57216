"""Next-city models: GRU, Transformer and MLP, all ending in the tied city-embedding head.

Torch only (no polars, no yaml): ``scripts/gpu_check.sh`` imports these on a bare machine.
A model is built from its name, its hyperparameters (the ``models.<name>`` config section, extra
keys such as ``enabled``/``epochs`` ignored) and the data's :class:`Dims`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch.nn as nn

from .context import Dims
from .gru import GRUNet, GRUNetConfig
from .mlp import MLPNet, MLPNetConfig
from .transformer import TransformerNet, TransformerNetConfig

MODELS: dict[str, tuple[type, type]] = {
    "gru": (GRUNet, GRUNetConfig),
    "transformer": (TransformerNet, TransformerNetConfig),
    "mlp": (MLPNet, MLPNetConfig),
}


def net_config(name: str, hparams: Any, dims: Dims | dict) -> Any:
    """The network config of model ``name``: ``hparams`` (a config dataclass or dict; keys the
    network does not take are ignored) plus the data sizes ``dims``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    _, cfg_cls = MODELS[name]
    h = dataclasses.asdict(hparams) if dataclasses.is_dataclass(hparams) else dict(hparams)
    d = dataclasses.asdict(dims) if dataclasses.is_dataclass(dims) else dict(dims)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    kwargs = {k: v for k, v in {**h, **d}.items() if k in fields}
    kwargs["ctx_sizes"] = tuple(kwargs["ctx_sizes"])
    return cfg_cls(**kwargs)


def build_model(name: str, config: Any) -> nn.Module:
    """Instantiate model ``name`` from its network config (dataclass or dict)."""
    net_cls, cfg_cls = MODELS[name]
    if not isinstance(config, cfg_cls):
        config = cfg_cls(**{**dict(config), "ctx_sizes": tuple(dict(config)["ctx_sizes"])})
    return net_cls(config)


__all__ = ["Dims", "MODELS", "build_model", "net_config", "GRUNet", "TransformerNet", "MLPNet"]
