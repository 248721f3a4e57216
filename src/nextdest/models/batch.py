"""What the data hands a model: its dimensions and its batches.

Every model gets the same standard tensors (built by :mod:`nextdest.nn_data` from the feature
table, one row per reservation to predict):

* ``cities``    (B, L) rare-bucketed input city indices, L = 1 + n_lags, ordered
  [first_city, lag_n, ..., lag_1] (0 = padding: no such step; 1 = a rare city);
* ``countries`` (B, L) hotel-country indices of the same steps;
* ``ctx``       (B, F) the target row's own context, one small categorical index per field
  (month, weekdays, nights, gap, span, booker, device, affiliate, N, pos, steps_left, ...);
* ``target``    (B,) the row's city in the full vocabulary (0 on concealed test rows);

plus ``extra``: any feature-table columns the model's class lists in ``extra_inputs`` (B,) each.
A real city's input index equals its target index; only rare cities differ (input 1).

Torch only, like the rest of ``nextdest.models``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Dims:
    """Sizes that come from the data, not from the hyperparameters."""

    n_cities: int  # target vocabulary: every city_idx (0 = pad, 1 = rare bucket, real from 2)
    n_countries: int
    seq_len: int  # 1 + n_lags
    ctx_sizes: tuple[int, ...]  # cardinality of each context field, in nn_data.CTX_FIELDS order

    def __post_init__(self) -> None:
        self.ctx_sizes = tuple(self.ctx_sizes)


@dataclass
class Batch:
    """Rows of model inputs and targets; every tensor is indexed by row."""

    cities: torch.Tensor  # (B, L) int64 input indices: [first, lag_n, ..., lag_1]
    countries: torch.Tensor  # (B, L) int64
    ctx: torch.Tensor  # (B, F) int64
    target: torch.Tensor  # (B,) int64 city_idx (0 on concealed rows)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # column -> (B,) (the model's extra_inputs)

    def __len__(self) -> int:
        return self.target.shape[0]

    def _map(self, fn) -> "Batch":
        return Batch(fn(self.cities), fn(self.countries), fn(self.ctx), fn(self.target), {k: fn(v) for k, v in self.extra.items()})

    def take(self, idx: np.ndarray | torch.Tensor | slice) -> "Batch":
        """The rows ``idx`` (row numbers, or a slice)."""
        if not isinstance(idx, (slice, torch.Tensor)):
            idx = torch.as_tensor(idx, dtype=torch.long)
        return self._map(lambda t: t[idx])

    def to(self, device: str | torch.device) -> "Batch":
        return self._map(lambda t: t.to(device))
