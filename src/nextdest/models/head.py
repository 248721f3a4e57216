"""The tied-embedding output head shared by every model (session matrix factorisation).

A model reduces its inputs to a trip vector ``h`` (B, d); the score of city c is
``h . (E[c] + C[country(c)]) + b[c]`` where ``E`` and ``C`` are the model's *input* city and
country embedding tables: an output city looks like the input token of that city, and cities of
one country share the country part (which generalises to cities seen only a few times). The city
table covers the full target vocabulary, so cities that are rare-bucketed at the input still own
an output row. Indices 0 (padding) and 1 (rare bucket) are never predicted.

Copy scores: the model also emits one score per input step (B, L), added to the logit of that
step's city. This lets it learn revisit patterns directly (a trip rarely returns to a city it just
left, but often ends where it started) instead of rebuilding a city's embedding inside ``h``.
Input steps carry rare-bucketed indices, so a rare city gets no copy score (index 1 is masked).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

N_MASKED = 2  # indices 0 (pad) and 1 (rare) are not cities


class TiedHead(nn.Module):
    def __init__(self, city_emb: nn.Embedding, country_emb: nn.Embedding):
        super().__init__()
        self.city_emb = city_emb
        self.country_emb = country_emb
        n = city_emb.num_embeddings
        self.bias = nn.Parameter(torch.zeros(n))
        # city_idx -> its country_idx: data, not learned; saved with the weights (set_city_country).
        self.register_buffer("city_country", torch.zeros(n, dtype=torch.long))
        mask = torch.zeros(n)
        mask[:N_MASKED] = float("-inf")
        self.register_buffer("mask", mask, persistent=False)

    @torch.no_grad()
    def set_city_country(self, city_country: torch.Tensor) -> None:
        self.city_country.copy_(city_country.to(self.city_country))

    def weights(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Output vectors of cities ``ids`` (all cities when None): (n, d)."""
        if ids is None:
            return self.city_emb.weight + self.country_emb(self.city_country)  # (V, d)
        return self.city_emb(ids) + self.country_emb(self.city_country[ids])  # (n, d)

    def forward(self, h: torch.Tensor, cities: torch.Tensor, copy: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits, float32, padding/rare masked to -inf.

        ``cities`` (B, L) input steps, ``copy`` (B, L) their copy scores.
        """
        logits = (h @ self.weights().t() + self.bias).float()  # (B, V)
        logits = logits.scatter_add(1, cities, copy.float())  # (B, V): + copy score of each input city
        return logits + self.mask  # (B, V)

    def sampled_loss(
        self, h: torch.Tensor, cities: torch.Tensor, copy: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor,
        log_correction: torch.Tensor,
    ) -> torch.Tensor:
        """Sampled softmax: the target against a shared set of negatives, logits corrected.

        ``negatives`` (M,) sorted, duplicate-free city indices shared by the batch;
        ``log_correction`` (V,) subtracted from each logit (log of the proposal's inclusion
        probability; see :mod:`nextdest.models.step`). A negative that is the row's own target
        (an accidental hit) is masked out. An input city's copy score reaches its logit through a
        sorted lookup of the input steps in ``negatives`` (no (B, L, M) comparison).
        """
        B, M = target.shape[0], negatives.shape[0]
        copy = copy.float()
        pos = (h * self.weights(target)).sum(-1).float() + self.bias[target] - log_correction[target]  # (B,)
        pos = pos + (copy * (cities == target[:, None])).sum(-1)  # (B,)
        neg = (h @ self.weights(negatives).t()).float() + (self.bias[negatives] - log_correction[negatives])  # (B, M)
        # copy scores: column of each input step's city among the negatives, or the spare column M
        col = torch.searchsorted(negatives, cities).clamp_(max=M - 1)  # (B, L)
        col = torch.where(negatives[col] == cities, col, M)  # (B, L)
        neg = neg + copy.new_zeros(B, M + 1).scatter_add_(1, col, copy)[:, :M]  # (B, M)
        # accidental hits: the target's own column
        tcol = torch.searchsorted(negatives, target).clamp_(max=M - 1)  # (B,)
        tcol = torch.where(negatives[tcol] == target, tcol, M)  # (B,)
        hit = torch.zeros(B, M + 1, dtype=torch.bool, device=h.device).scatter_(1, tcol[:, None], True)[:, :M]  # (B, M)
        neg = neg.masked_fill(hit, float("-inf"))  # (B, M)
        return (torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos).mean()  # log(e^pos + sum e^neg) - pos
