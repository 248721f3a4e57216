"""MLP over the concatenated step embeddings and the context encoding, tied output head.

    [first, lag5 .. lag1] city + country embeddings (concatenated) ++ ContextEncoder(ctx)
      --> Linear --> 2 x residual [Linear, BatchNorm, PReLU, Dropout] --> Linear --> h (d)
    logits = h @ E.T + b
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .context import ContextEncoder, StepEncoder, embedding
from .head import TiedHead


@dataclass
class MLPNetConfig:
    n_cities: int
    n_countries: int
    seq_len: int
    ctx_sizes: tuple[int, ...]
    emb_dim: int = 128
    hidden: int = 512
    ctx_dim: int = 32
    dropout: float = 0.2


class ResidualLayer(nn.Module):
    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.PReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)  # (B, d)


class MLPNet(nn.Module):
    def __init__(self, config: MLPNetConfig):
        super().__init__()
        c = self.config = config
        self.city_emb = embedding(c.n_cities, c.emb_dim)
        self.country_emb = embedding(c.n_countries, c.emb_dim)
        self.steps = StepEncoder(self.city_emb, self.country_emb, c.seq_len, positions=False, dropout=c.dropout)
        self.context = ContextEncoder(c.ctx_sizes, c.ctx_dim, c.hidden // 2, dropout=c.dropout)
        self.inp = nn.Sequential(
            nn.Linear(c.seq_len * c.emb_dim + c.hidden // 2, c.hidden),
            nn.BatchNorm1d(c.hidden),
            nn.PReLU(),
            nn.Dropout(c.dropout),
        )
        self.layers = nn.Sequential(ResidualLayer(c.hidden, c.dropout), ResidualLayer(c.hidden, c.dropout))
        self.out = nn.Linear(c.hidden, c.emb_dim)
        self.head = TiedHead(self.city_emb, self.country_emb)
        self.copy = nn.Linear(c.emb_dim, c.seq_len)  # copy score of each input step

    def encode(self, cities: torch.Tensor, countries: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        steps = self.steps(cities, countries).flatten(1)  # (B, L*d)
        z = torch.cat([steps, self.context(ctx)], dim=-1)  # (B, L*d + hidden/2)
        return self.out(self.layers(self.inp(z)))  # (B, d)

    def forward(self, cities: torch.Tensor, countries: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        h = self.encode(cities, countries, ctx)  # (B, d)
        return self.head(h, cities, self.copy(h))  # (B, V)
