"""The base of every next-city model: embeddings, the tied head, the copy score and the loss.

A model is one module in this folder::

    @dataclass(frozen=True)
    class MineConfig(ModelConfig):     # its config section, models.mine (values in configs/base.yaml)
        hidden: int = at_least(1)

    @register_model("mine", MineConfig)
    class Mine(NextCityModel):
        def build(self): ...           # its own layers (self.cfg: the section, self.dims: the data's sizes)
        def encode(self, batch): ...   # (B, d): the trip vector of each row

The base class owns the rest: the city and country tables (shared with the output head), the
tied head (:mod:`.head`), the copy score of each input step, ``forward`` (full-vocabulary logits
for prediction), and ``loss`` (full or sampled softmax, :meth:`NextCityModel.head_loss`).
``fit``, prediction, ``recommend`` and ``scripts/gpu_check.sh`` call only ``model(batch)`` and
``model.loss(batch, negatives)``, so a model may override ``loss`` (say, a loss on every position
of the trip) or read extra feature columns (``extra_inputs``, in ``batch.extra``) without any
change there.

Torch only (no polars, no yaml): ``scripts/gpu_check.sh`` builds the models on a bare machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register
from ..sections import at_least, dropout, rule
from .batch import Batch, Dims
from .context import embedding
from .head import TiedHead


@dataclass(frozen=True)
class ModelConfig:
    """The keys of every model's section (``models.<name>``); a model's config adds its own."""

    enabled: bool
    emb_dim: int = at_least(1)  # city/country embedding width = the tied head's width
    dropout: float = dropout()
    epochs: int = at_least(0)  # 0 = train.epochs
    sampled_softmax: int = at_least(-1)  # -1 = train.sampled_softmax; 0 = full softmax; N = N negatives
    seeds: tuple[int, ...] = rule(lambda v: all(x >= 0 for x in v), "a list of integers >= 0 (empty: train.seeds)")


def register_model(name: str, config: type):
    """Class decorator: register a :class:`NextCityModel` as model ``name`` (stage ``name``,
    config section ``models.<name>`` typed by ``config``)."""
    return register("model", name, name, config)


class NextCityModel(nn.Module):
    """Scores every city as the next stay of each row of a :class:`~.batch.Batch`."""

    extra_inputs: tuple[str, ...] = ()  # feature-table columns the model reads from batch.extra

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__()
        self.cfg, self.dims = cfg, dims
        self.city_emb = embedding(dims.n_cities, cfg.emb_dim)
        self.country_emb = embedding(dims.n_countries, cfg.emb_dim)
        self.build()
        self.head = TiedHead(self.city_emb, self.country_emb)
        self.copy = nn.Linear(cfg.emb_dim, dims.seq_len)  # copy score of each input step

    def build(self) -> None:
        """Create the network's own layers (after the embedding tables, before the head)."""
        raise NotImplementedError

    def encode(self, batch: Batch) -> torch.Tensor:
        """The trip vector of each row: (B, d), d = cfg.emb_dim."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        """Full-vocabulary logits (B, V), float32, padding and rare masked (what prediction uses)."""
        h = self.encode(batch)  # (B, d)
        return self.head(h, batch.cities, self.copy(h))  # (B, V)

    def loss(self, batch: Batch, negatives=None) -> torch.Tensor:
        """Mean cross-entropy of the batch's targets: over every city (``negatives`` None) or
        against the shared sampled ``negatives`` (:class:`~.step.Negatives`)."""
        return self.head_loss(self.encode(batch), batch.cities, batch.target, negatives)

    def head_loss(self, h: torch.Tensor, cities: torch.Tensor, target: torch.Tensor, negatives=None,
                  copy: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of trip vectors ``h`` (n, d) with input steps ``cities`` (n, L) and
        targets (n,); ``copy`` (n, L) defaults to the copy scores of ``h``."""
        copy = self.copy(h) if copy is None else copy  # (n, L)
        if negatives is None:
            return F.cross_entropy(self.head(h, cities, copy), target)
        return self.head.sampled_loss(h, cities, copy, target, negatives.ids, negatives.log_correction)
