"""A small Transformer encoder over the trip's tokens, pooled at the last city, tied output head.

Tokens (T = 1 + L): [context, first, lag5 .. lag1]; a city token is city emb + country emb +
learned position, the context token is the ContextEncoder's output. Padding steps (no such lag)
are masked out of attention; attention is bidirectional (``causal: true`` restricts it to earlier
tokens). The last token (lag1, always present) is pooled into the trip vector; logits as in
NextCityModel (tied head + copy scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sections import at_least
from .base import ModelConfig, NextCityModel, register_model
from .batch import Batch
from .context import ContextEncoder, StepEncoder


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    n_layers: int = at_least(1)
    n_heads: int = at_least(1)
    ctx_dim: int = at_least(1)  # per context field
    causal: bool  # true: each token attends to earlier tokens only

    def problems(self, at: str):
        if self.emb_dim % self.n_heads:
            yield "n_heads", self.n_heads, f"a divisor of {at}emb_dim ({self.emb_dim})"


class SelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        assert d % n_heads == 0, f"emb_dim {d} must be divisible by n_heads {n_heads}"
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, T, d) -> (B, T, d); with ``last_only`` only the last token queries: (B, 1, d)."""
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, d)
        if last_only:
            q, attn_mask = q[:, -1:], attn_mask[..., -1:, :]  # (B, 1, d), (B, 1, 1|1, T)
        Tq = q.shape[1]
        q = q.reshape(B, Tq, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, Tq, d/H)
        k, v = (t.reshape(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (k, v))  # (B, H, T, d/H)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, Tq, d)  # (B, Tq, d)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-norm Transformer block."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``last_only``: compute only the last token's output (keys and values still come from every
        token), which is all the final block needs: (B, 1, d)."""
        res = x[:, -1:] if last_only else x
        x = res + self.attn(self.ln1(x), attn_mask, last_only)  # (B, T|1, d)
        return x + self.mlp(self.ln2(x))  # (B, T|1, d)


@register_model("transformer", TransformerConfig)
class TransformerNet(NextCityModel):
    def build(self) -> None:
        c, d = self.cfg, self.cfg.emb_dim
        self.steps = StepEncoder(self.city_emb, self.country_emb, self.dims.seq_len, positions=True, dropout=c.dropout)
        self.context = ContextEncoder(self.dims.ctx_sizes, c.ctx_dim, d, dropout=c.dropout)
        self.blocks = nn.ModuleList(Block(d, c.n_heads, c.dropout) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.out = nn.Linear(d, d)
        T = 1 + self.dims.seq_len
        self.register_buffer("causal_mask", torch.ones(T, T, dtype=torch.bool).tril(), persistent=False)

    def encode(self, batch: Batch) -> torch.Tensor:
        cities = batch.cities
        steps = self.steps(cities, batch.countries)  # (B, L, d)
        x = torch.cat([self.context(batch.ctx)[:, None, :], steps], dim=1)  # (B, T, d)
        keep = torch.cat([torch.ones_like(cities[:, :1], dtype=torch.bool), cities > 0], dim=1)  # (B, T)
        mask = keep[:, None, None, :]  # (B, 1, 1, T): attend to real tokens only
        if self.cfg.causal:
            mask = mask & self.causal_mask  # (B, 1, T, T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only=i == len(self.blocks) - 1)  # (B, T, d); the last block (B, 1, d)
        return self.out(self.ln_f(x[:, -1]))  # (B, d)
