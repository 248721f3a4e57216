"""One training step, in one place: the model's loss on a batch (full or sampled softmax:
:meth:`~.base.NextCityModel.loss`), backward, clip and update. ``nextdest.train.fit``,
``benchmarks/train_speed.py`` and ``scripts/gpu_check.sh`` all call :func:`train_step`.

Sampled softmax (``NegativeSampler``): a batch shares one set of negatives, drawn with replacement
from the proposal Q (the training targets' popularity) and made unique; each sampled logit is
corrected by ``-log E[count]``, with ``E[count] = 1 - (1 - q)^n`` the chance a city is in the set
(TensorFlow's ``sampled_softmax_loss`` with ``unique=True``), so that the sampled loss estimates the
full softmax. A negative that is the row's own target (an accidental hit) is removed. Prediction
always scores every city (``model(batch)``, the full softmax).

Torch only, like the rest of ``nextdest.models``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import NextCityModel
from .batch import Batch
from .head import N_MASKED
from .optim import clip_grad_norm


@dataclass
class Negatives:
    """A shared, sorted, duplicate-free set of negative cities and their log-correction."""

    ids: torch.Tensor  # (M,) sorted city indices
    log_correction: torch.Tensor  # (V,) subtracted from every logit (the positive's too)


class NegativeSampler:
    """Draws ``n`` negatives per batch from ``q`` (V,), real cities only, made unique."""

    def __init__(self, q: torch.Tensor, n: int, generator: torch.Generator | None = None):
        q = q.double().clamp(min=0)
        q[:N_MASKED] = 0
        self.q = (q / q.sum()).float()
        self.n = n
        self.generator = generator
        expected = -torch.expm1(n * torch.log1p(-q / q.sum()))  # (V,) P(city in the unique set)
        self.log_correction = expected.clamp(min=1e-30).log().float()

    @classmethod
    def from_targets(cls, target: torch.Tensor, n_cities: int, n: int, generator: torch.Generator | None = None):
        """Q = target popularity (+1 smoothing) over real cities."""
        counts = torch.bincount(target.cpu(), minlength=n_cities).double() + 1.0
        return cls(counts.to(target.device), n, generator)

    def draw(self) -> Negatives:
        draws = torch.multinomial(self.q, self.n, replacement=True, generator=self.generator)  # (n,)
        return Negatives(torch.unique(draws), self.log_correction)  # unique: sorted


def autocast(device: str, amp: bool):
    """bf16 autocast on CUDA when ``amp`` (fp16 where bf16 is unsupported); a no-op on CPU."""
    if device != "cuda" or not amp:
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def train_step(
    model: NextCityModel,
    batch: Batch,
    opt: torch.optim.Optimizer,
    sampler: NegativeSampler | None = None,
    *,
    device: str = "cpu",
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    clip: float = 1.0,
) -> torch.Tensor:
    """One update on ``batch`` (on the model's device); returns the (detached) loss."""
    negatives = sampler.draw() if sampler is not None else None
    with autocast(device, amp):
        loss = model.loss(batch, negatives)
    opt.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        clip_grad_norm(model.parameters(), clip)
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        clip_grad_norm(model.parameters(), clip)
        opt.step()
    return loss.detach()


def use_sampled_softmax(n_negatives: int, n_cities: int) -> bool:
    """Sampled softmax pays off only for a large vocabulary: more than twice the negatives."""
    return n_negatives > 0 and n_cities - N_MASKED > 2 * n_negatives


__all__ = ["Batch", "Negatives", "NegativeSampler", "train_step", "autocast", "use_sampled_softmax"]
