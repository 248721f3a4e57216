"""The one training step: negative sampling, its correction, the full and sampled paths."""

from __future__ import annotations

import math

import torch

from nextdest.models import Dims
from nextdest.models.head import N_MASKED
from nextdest.models.optim import make_optimizer, sparse_tables
from nextdest.models.step import Batch, NegativeSampler, train_step, use_sampled_softmax
from netsizes import small_model

DIMS = Dims(n_cities=60, n_countries=9, seq_len=6, ctx_sizes=(13, 7, 4, 31, 5))


def batch(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cities = torch.randint(N_MASKED, DIMS.n_cities, (n, DIMS.seq_len), generator=g)
    countries = cities % DIMS.n_countries
    ctx = torch.stack([torch.randint(0, s, (n,), generator=g) for s in DIMS.ctx_sizes], dim=1)
    return cities, countries, ctx


def make(name: str) -> torch.nn.Module:
    model = small_model(name, DIMS, emb_dim=16, hidden=32, ctx_dim=4, n_heads=2, n_layers=1, dropout=0.0)
    model.head.set_city_country(torch.arange(DIMS.n_cities) % DIMS.n_countries)
    return model


def test_sampler_draws_unique_sorted_real_cities():
    q = torch.ones(DIMS.n_cities)
    s = NegativeSampler(q, 40, torch.Generator().manual_seed(0))
    for _ in range(5):
        ids = s.draw().ids
        assert torch.equal(ids, torch.unique(ids))
        assert ids.min() >= N_MASKED and len(ids) <= 40


def test_correction_is_the_log_chance_of_being_drawn():
    """q = (0, 0, 1, 3) / 4; n = 2 draws: P(city 2 drawn) = 1 - (3/4)^2 = 7/16."""
    s = NegativeSampler(torch.tensor([5.0, 5.0, 1.0, 3.0]), 2)
    assert math.isclose(s.log_correction[2].exp().item(), 7 / 16, rel_tol=1e-6)
    assert math.isclose(s.log_correction[3].exp().item(), 1 - (1 / 4) ** 2, rel_tol=1e-6)
    assert s.q[:N_MASKED].sum() == 0


def test_sampled_softmax_only_for_large_vocabularies():
    assert use_sampled_softmax(2048, 40_000)
    assert not use_sampled_softmax(2048, 2_300)
    assert not use_sampled_softmax(0, 40_000)


def test_both_paths_learn_a_fixed_mapping():
    """Targets = a function of the last city: both losses fall well below their start."""
    for sampled in (False, True):
        torch.manual_seed(0)
        model = make("gru")
        if sampled:
            sparse_tables(model, min_rows=1)
        opt = make_optimizer(model, "sparse_adamw", 0.02, 0.0)
        cities, countries, ctx = batch(256)
        target = (cities[:, -1] * 7) % (DIMS.n_cities - N_MASKED) + N_MASKED
        b = Batch(cities, countries, ctx, target)
        sampler = NegativeSampler.from_targets(target, DIMS.n_cities, 20, torch.Generator().manual_seed(1)) if sampled else None
        losses = [train_step(model, b, opt, sampler).item() for _ in range(60)]
        assert losses[-1] < 0.3 * losses[0], (sampled, losses[0], losses[-1])


def test_parallel_plan(monkeypatch):
    """One 1-thread worker per core; leftover jobs share the cores; explicit threads win; CUDA: 1."""
    from nextdest.perf import resolve_parallelism

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_parallelism(0, 0, "cpu", 5) == (2, [1, 1, 1, 1, 2])
    assert resolve_parallelism(0, 0, "cpu", 4) == (2, [1, 1, 1, 1])
    assert resolve_parallelism(0, 0, "cpu", 1) == (1, [2])
    assert resolve_parallelism(0, 3, "cpu", 3) == (2, [3, 3, 3])
    assert resolve_parallelism(1, 0, "cpu", 3) == (1, [2, 2, 2])
    assert resolve_parallelism(0, 0, "cuda", 5) == (1, [2] * 5)
