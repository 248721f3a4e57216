"""GRU over the trip's recent cities, joined with the target row's context, tied output head.

    [first, lag5 .. lag1] --(city emb + country emb)--> GRU --> last hidden --+
    target-row context --> ContextEncoder --------------------------------------+--> MLP --> h (d)
    logits = h @ E.T + b        (E = the input city table)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .context import ContextEncoder, StepEncoder, embedding
from .head import TiedHead


@dataclass
class GRUNetConfig:
    n_cities: int
    n_countries: int
    seq_len: int
    ctx_sizes: tuple[int, ...]
    emb_dim: int = 128
    hidden: int = 256
    ctx_dim: int = 32
    dropout: float = 0.2


class GRUNet(nn.Module):
    def __init__(self, config: GRUNetConfig):
        super().__init__()
        c = self.config = config
        self.city_emb = embedding(c.n_cities, c.emb_dim)
        self.country_emb = embedding(c.n_countries, c.emb_dim)
        self.steps = StepEncoder(self.city_emb, self.country_emb, c.seq_len, positions=False, dropout=c.dropout)
        self.gru = nn.GRU(c.emb_dim, c.hidden, batch_first=True)
        self.context = ContextEncoder(c.ctx_sizes, c.ctx_dim, c.hidden, dropout=c.dropout)
        self.mlp = nn.Sequential(
            nn.Linear(2 * c.hidden, c.hidden),
            nn.LayerNorm(c.hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.emb_dim),
        )
        self.head = TiedHead(self.city_emb, self.country_emb)
        self.copy = nn.Linear(c.emb_dim, c.seq_len)  # copy score of each input step

    def encode(self, cities: torch.Tensor, countries: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        x = self.steps(cities, countries)  # (B, L, d)
        _, h_last = self.gru(x)  # (1, B, hidden)
        z = torch.cat([h_last[0], self.context(ctx)], dim=-1)  # (B, 2*hidden)
        return self.mlp(z)  # (B, d)

    def forward(self, cities: torch.Tensor, countries: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        h = self.encode(cities, countries, ctx)  # (B, d)
        return self.head(h, cities, self.copy(h))  # (B, V)
