"""MLP over the concatenated step embeddings and the context encoding, tied output head.

    [first, lag5 .. lag1] city + country embeddings (concatenated) ++ ContextEncoder(ctx)
      --> Linear --> 2 x residual [Linear, BatchNorm, PReLU, Dropout] --> Linear --> h (d)
    logits = h @ E.T + b        (NextCityModel)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..sections import at_least
from .base import ModelConfig, NextCityModel, register_model
from .batch import Batch
from .context import ContextEncoder, StepEncoder


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    hidden: int = at_least(1)
    ctx_dim: int = at_least(1)  # per context field


class ResidualLayer(nn.Module):
    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.PReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)  # (B, d)


@register_model("mlp", MLPConfig)
class MLPNet(NextCityModel):
    def build(self) -> None:
        c, L = self.cfg, self.dims.seq_len
        self.steps = StepEncoder(self.city_emb, self.country_emb, L, positions=False, dropout=c.dropout)
        self.context = ContextEncoder(self.dims.ctx_sizes, c.ctx_dim, c.hidden // 2, dropout=c.dropout)
        self.inp = nn.Sequential(
            nn.Linear(L * c.emb_dim + c.hidden // 2, c.hidden),
            nn.BatchNorm1d(c.hidden),
            nn.PReLU(),
            nn.Dropout(c.dropout),
        )
        self.layers = nn.Sequential(ResidualLayer(c.hidden, c.dropout), ResidualLayer(c.hidden, c.dropout))
        self.out = nn.Linear(c.hidden, c.emb_dim)

    def encode(self, batch: Batch) -> torch.Tensor:
        steps = self.steps(batch.cities, batch.countries).flatten(1)  # (B, L*d)
        z = torch.cat([steps, self.context(batch.ctx)], dim=-1)  # (B, L*d + hidden/2)
        return self.out(self.layers(self.inp(z)))  # (B, d)
