"""The networks on hand-made tensors: shapes, gradients, capacity, determinism, sampled softmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nextdest.models import MODELS, Batch, Dims, NextCityModel
from nextdest.models.head import N_MASKED
from nextdest.models.step import Negatives
from netsizes import small_model

DIMS = Dims(n_cities=60, n_countries=9, seq_len=6, ctx_sizes=(13, 7, 4, 31, 5))
SMALL = {"emb_dim": 16, "hidden": 32, "ctx_dim": 4, "n_heads": 2, "n_layers": 1, "dropout": 0.0}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest (and immune to a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def batch(n: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cities = torch.randint(2, DIMS.n_cities, (n, DIMS.seq_len), generator=g)
    cities[: n // 2, 1:3] = 0  # short histories: padded lags
    countries = torch.randint(1, DIMS.n_countries, (n, DIMS.seq_len), generator=g) * (cities > 0)
    ctx = torch.stack([torch.randint(0, s, (n,), generator=g) for s in DIMS.ctx_sizes], dim=1)
    target = torch.randint(N_MASKED, DIMS.n_cities, (n,), generator=g)
    return Batch(cities, countries, ctx, target)


def make(name: str, **over) -> torch.nn.Module:
    model = small_model(name, DIMS, **{**SMALL, **over})
    model.head.set_city_country(torch.arange(DIMS.n_cities) % DIMS.n_countries)
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    model = make(name)
    b = batch(8)
    logits = model(b)
    assert logits.shape == (8, DIMS.n_cities)
    assert logits.dtype == torch.float32
    assert torch.isinf(logits[:, :N_MASKED]).all() and torch.isfinite(logits[:, N_MASKED:]).all()
    model.loss(b).backward()
    assert model.city_emb.weight.grad is not None and model.city_emb.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), "a parameter got no gradient"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_head_is_tied_to_the_input_table(name):
    model = make(name)
    assert model.head.city_emb is model.city_emb
    names = [n for n, _ in model.named_parameters()]
    assert sum("city_emb.weight" in n for n in names) == 1  # one table, not two


@pytest.mark.parametrize("name", sorted(MODELS))
def test_overfits_a_handful_of_trips(name):
    torch.manual_seed(0)
    model = make(name)
    b = batch(24, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(100):
        loss = model.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(b).argmax(-1) == b.target).float().mean().item()
    assert acc == 1.0, f"{name} could not memorise 24 examples (train acc@1 {acc:.2f}, loss {loss.item():.3f})"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_model_and_steps(name):
    def run():
        torch.manual_seed(123)
        model = make(name, dropout=0.2)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        b = batch(16)
        for _ in range(3):
            loss = model.loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            return model(b)

    assert torch.equal(run(), run())


def test_sampled_softmax_matches_full_softmax_with_every_city_sampled():
    """With every real city sampled and an equal correction for all, the sampled loss (the target
    against every other city) equals the full-softmax loss over the real cities."""
    torch.manual_seed(0)
    for name in MODELS:
        model = make(name).eval()
        b = batch(8)
        b.cities[:, -1] = b.target  # copy scores reach the target and the negatives alike
        b.cities[0, 2] = b.target[1]
        negatives = Negatives(torch.arange(N_MASKED, DIMS.n_cities), torch.full((DIMS.n_cities,), -3.0))  # equal correction: it cancels
        sampled = model.loss(b, negatives)
        full = model.loss(b)  # the model's own loss, over every city
        assert torch.allclose(sampled, full, atol=1e-5), name
        if type(model).loss is NextCityModel.loss:  # the base loss: the cross-entropy of the logits prediction uses
            assert torch.allclose(full, F.cross_entropy(model(b), b.target), atol=1e-5), name


def test_sampled_softmax_by_hand():
    """h . w + b - correction, copy scores on the sampled columns, the accidental hit removed."""
    torch.manual_seed(0)
    model = make("mlp")
    b = batch(4)
    cities, target = b.cities, b.target
    target[0] = 7
    cities[0] = torch.tensor([0, 0, 5, 9, 7, 5])  # 5 twice, 9 once, the target 7 once
    h = model.encode(b)[:1]
    copy = model.copy(h)
    negatives = torch.tensor([3, 5, 7, 11])  # 7 = the target: an accidental hit
    corr = torch.linspace(-4, -1, DIMS.n_cities)
    got = model.head.sampled_loss(h, cities[:1], copy, target[:1], negatives, corr)
    w = model.head.weights()
    b = model.head.bias

    def logit(c: int) -> torch.Tensor:
        return h[0] @ w[c] + b[c] - corr[c] + copy[0][cities[0] == c].sum()

    pos = logit(7)
    logits = torch.stack([pos, logit(3), logit(5), logit(11)])
    want = torch.logsumexp(logits, 0) - pos
    assert torch.allclose(got, want, atol=1e-5)


def test_transformer_last_block_computes_only_the_last_token_exactly():
    """The final block's last-token shortcut gives the same trip vector as running every token."""
    torch.manual_seed(0)
    for causal in (False, True):
        model = make("transformer", n_layers=2, causal=causal).eval()
        b = batch(16)
        cities = b.cities
        with torch.no_grad():
            fast = model.encode(b)
            steps = model.steps(cities, b.countries)
            x = torch.cat([model.context(b.ctx)[:, None, :], steps], dim=1)
            keep = torch.cat([torch.ones_like(cities[:, :1], dtype=torch.bool), cities > 0], dim=1)
            mask = keep[:, None, None, :]
            if causal:
                mask = mask & model.causal_mask
            for block in model.blocks:
                x = block(x, mask)
            slow = model.out(model.ln_f(x[:, -1]))
        assert torch.allclose(fast, slow, atol=1e-5), causal


def test_validation_accuracy_at_4_is_the_top_4_of_every_city_by_hand():
    """The epoch's validation score (top 4 of the logits, no softmax) counts the trips whose
    target is among the 4 cities the averaged-softmax prediction ranks first, over batches."""
    from nextdest.train import accuracy_at_4, predict_topk

    torch.manual_seed(0)
    model = make("gru")
    b = batch(23, seed=3)
    idx, prob = predict_topk([model], b, 4, "cpu", batch_size=5)
    logits = model.eval()(b)
    by_hand = sum(int(t) in torch.topk(row, 4).indices.tolist() for row, t in zip(logits, b.target)) / 23
    assert accuracy_at_4(model, b, "cpu", False, batch_size=5) == by_hand
    assert by_hand == float((torch.from_numpy(idx) == b.target[:, None]).any(dim=1).double().mean())
    assert torch.allclose(torch.from_numpy(prob), torch.topk(torch.softmax(logits, -1), 4).values, atol=1e-6)
    b.target[:] = torch.from_numpy(idx[:, 0])  # every target first-ranked: 1.0
    assert accuracy_at_4(model, b, "cpu", False, batch_size=7) == 1.0
