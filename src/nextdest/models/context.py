"""Shared input pieces: the per-step token encoder and the context-feature encoder (the inputs
are described in :mod:`.batch`).

This module imports only torch, so the models run where polars is not installed.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ContextEncoder(nn.Module):
    """Embeds each context field (own table, ``dim`` wide), concatenates, projects to ``out_dim``."""

    def __init__(self, ctx_sizes: tuple[int, ...], dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        offsets = torch.tensor([0, *ctx_sizes[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.emb = nn.Embedding(int(sum(ctx_sizes)), dim)  # all fields in one table, shifted by offsets
        self.proj = nn.Sequential(nn.Linear(len(ctx_sizes) * dim, out_dim), nn.GELU(), nn.Dropout(dropout))
        nn.init.normal_(self.emb.weight, std=0.05)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        e = self.emb(ctx + self.offsets)  # (B, F, dim)
        return self.proj(e.flatten(1))  # (B, out_dim)


class StepEncoder(nn.Module):
    """City embedding + country embedding per step (both tables shared with the output head),
    optionally + a learned position."""

    def __init__(self, city_emb: nn.Embedding, country_emb: nn.Embedding, seq_len: int, positions: bool, dropout: float):
        super().__init__()
        d = city_emb.embedding_dim
        self.city_emb = city_emb
        self.country_emb = country_emb
        self.pos_emb = nn.Parameter(torch.zeros(seq_len, d)) if positions else None
        self.drop = nn.Dropout(dropout)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb, std=0.02)

    def forward(self, cities: torch.Tensor, countries: torch.Tensor) -> torch.Tensor:
        x = self.city_emb(cities) + self.country_emb(countries)  # (B, L, d)
        if self.pos_emb is not None:
            x = x + self.pos_emb  # (B, L, d)
        return self.drop(x)


def embedding(n: int, d: int, std: float = 0.02) -> nn.Embedding:
    """An embedding table with index 0 (padding) fixed at zero."""
    emb = nn.Embedding(n, d, padding_idx=0)
    nn.init.normal_(emb.weight, std=std)
    with torch.no_grad():
        emb.weight[0].zero_()
    return emb
