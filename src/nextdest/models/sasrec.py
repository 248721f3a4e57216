"""SASRec-style model: causal self-attention over the trip, a loss on every position.

Tokens (L = 1 + n_lags): [first, lag_n .. lag_1], each city emb + country emb + learned position;
token i attends to the real tokens at or before it (causal, padding masked). Each position's
output, through the tied head, predicts the next step of the trip:

    position i (a lag)   -> the city of position i + 1          (training only; rare/padding skipped)
    position L-1 (lag_1) -> the row's own city (batch.target)   (+ the target row's context)

Training averages the cross-entropy over every position with a target (``loss``); prediction
(``forward``, from NextCityModel) scores the last position only. With one example per row, the
step a lag predicts is also another row's own target, so the earlier positions mostly repeat
targets: ``aux_share`` < 1 keeps each earlier position's loss with that probability per step (a
fresh draw every step; the last position always counts), which cuts the cost of the head. Copy scores of a position reach
only the steps it can see. Blocks are the Transformer's (pre-norm, attention + MLP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..sections import at_least, rule
from .base import ModelConfig, NextCityModel, register_model
from .batch import Batch
from .context import ContextEncoder, StepEncoder
from .transformer import Block


@dataclass(frozen=True)
class SASRecConfig(ModelConfig):
    n_layers: int = at_least(1)
    n_heads: int = at_least(1)
    ctx_dim: int = at_least(1)  # per context field (added at the last position)
    aux_share: float = rule(lambda v: 0.0 <= v <= 1.0, "a fraction in [0, 1]")  # earlier positions' losses kept per step

    def problems(self, at: str):
        if self.emb_dim % self.n_heads:
            yield "n_heads", self.n_heads, f"a divisor of {at}emb_dim ({self.emb_dim})"


@register_model("sasrec", SASRecConfig)
class SASRec(NextCityModel):
    def build(self) -> None:
        c, d, L = self.cfg, self.cfg.emb_dim, self.dims.seq_len
        self.steps = StepEncoder(self.city_emb, self.country_emb, L, positions=True, dropout=c.dropout)
        self.blocks = nn.ModuleList(Block(d, c.n_heads, c.dropout) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.out = nn.Linear(d, d)
        self.context = ContextEncoder(self.dims.ctx_sizes, c.ctx_dim, d, dropout=c.dropout)
        self.register_buffer("causal", torch.ones(L, L, dtype=torch.bool).tril(), persistent=False)

    def positions(self, batch: Batch) -> torch.Tensor:
        """The output of every position: (B, L, d); the last one carries the row's context."""
        cities = batch.cities  # (B, L)
        x = self.steps(cities, batch.countries)  # (B, L, d)
        self_or_real = (cities > 0)[:, None, :] | torch.eye(cities.shape[1], dtype=torch.bool, device=cities.device)  # (B, L, L)
        mask = (self_or_real & self.causal)[:, None]  # (B, 1, L, L): earlier real tokens (and itself)
        for block in self.blocks:
            x = block(x, mask)  # (B, L, d)
        h = self.out(self.ln_f(x))  # (B, L, d)
        last = h[:, -1] + self.context(batch.ctx)  # (B, d)
        return torch.cat([h[:, :-1], last[:, None]], dim=1)  # (B, L, d)

    def encode(self, batch: Batch) -> torch.Tensor:
        return self.positions(batch)[:, -1]  # (B, d)

    def loss(self, batch: Batch, negatives=None) -> torch.Tensor:
        h = self.positions(batch)  # (B, L, d)
        cities = batch.cities  # (B, L)
        B, L = cities.shape
        target = torch.cat([cities[:, 2:], batch.target[:, None]], dim=1)  # (B, L-1): the step after positions 1..L-1
        target = torch.cat([torch.zeros_like(cities[:, :1]), target], dim=1)  # (B, L): the first city predicts nothing
        keep = (cities > 0) & (target > 1)  # (B, L): a real step followed by a real (not rare) city
        keep[:, -1] = batch.target > 1  # the row's own city: full vocabulary
        if self.training and self.cfg.aux_share < 1:
            keep[:, :-1] &= torch.rand(B, L - 1, device=cities.device) < self.cfg.aux_share  # (B, L-1): a sample of the earlier positions
        copy = self.copy(h) * self.causal  # (B, L, L): position i copies only steps <= i
        steps = cities[:, None, :].expand(B, L, L)  # (B, L, L)
        return self.head_loss(h[keep], steps[keep], target[keep], negatives, copy=copy[keep])  # over (n,) positions
