"""GRU over the trip's recent cities, joined with the target row's context, tied output head.

    [first, lag5 .. lag1] --(city emb + country emb)--> GRU --> last hidden --+
    target-row context --> ContextEncoder --------------------------------------+--> MLP --> h (d)
    logits = h @ E.T + b        (E = the input city table; NextCityModel)
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
class GRUConfig(ModelConfig):
    hidden: int = at_least(1)
    ctx_dim: int = at_least(1)  # per context field


@register_model("gru", GRUConfig)
class GRUNet(NextCityModel):
    def build(self) -> None:
        c, d = self.cfg, self.cfg.emb_dim
        self.steps = StepEncoder(self.city_emb, self.country_emb, self.dims.seq_len, positions=False, dropout=c.dropout)
        self.gru = nn.GRU(d, c.hidden, batch_first=True)
        self.context = ContextEncoder(self.dims.ctx_sizes, c.ctx_dim, c.hidden, dropout=c.dropout)
        self.mlp = nn.Sequential(
            nn.Linear(2 * c.hidden, c.hidden),
            nn.LayerNorm(c.hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, d),
        )

    def encode(self, batch: Batch) -> torch.Tensor:
        x = self.steps(batch.cities, batch.countries)  # (B, L, d)
        _, h_last = self.gru(x)  # (1, B, hidden)
        z = torch.cat([h_last[0], self.context(batch.ctx)], dim=-1)  # (B, 2*hidden)
        return self.mlp(z)  # (B, d)
