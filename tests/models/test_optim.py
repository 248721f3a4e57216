"""RowSparseAdamW against torch's AdamW, and the sparse-aware gradient clip."""

from __future__ import annotations

import torch
import torch.nn as nn

from nextdest.models.optim import RowSparseAdamW, clip_grad_norm, make_optimizer, sparse_tables

KW = {"lr": 0.05, "betas": (0.9, 0.98), "weight_decay": 0.1}


def two_tables(sparse: bool, seed: int = 0) -> nn.Embedding:
    torch.manual_seed(seed)
    return nn.Embedding(6, 3, sparse=sparse)


def run(opt_cls, sparse: bool, ids_per_step, steps: int = 4) -> torch.Tensor:
    emb = two_tables(sparse)
    opt = opt_cls(emb.parameters(), **KW)
    for s in range(steps):
        opt.zero_grad()
        ids = torch.tensor(ids_per_step(s))
        (emb(ids) ** 2).sum().backward()
        opt.step()
    return emb.weight.detach().clone()


def test_dense_gradients_match_torch_adamw():
    want = run(torch.optim.AdamW, False, lambda s: [0, 1, 2, 3, 4, 5, 1])
    got = run(RowSparseAdamW, False, lambda s: [0, 1, 2, 3, 4, 5, 1])
    assert torch.allclose(got, want, atol=1e-6)


def test_sparse_gradients_touching_every_row_match_torch_adamw():
    """When every row has a gradient every step, lazy Adam is Adam."""
    want = run(torch.optim.AdamW, False, lambda s: [0, 1, 2, 3, 4, 5, 1])
    got = run(RowSparseAdamW, True, lambda s: [0, 1, 2, 3, 4, 5, 1])
    assert torch.allclose(got, want, atol=1e-6)


def test_untouched_rows_are_left_alone():
    """Rows 4 and 5 never get a gradient: no weight decay, no moment update, unchanged."""
    start = two_tables(True).weight.detach().clone()
    got = run(RowSparseAdamW, True, lambda s: [0, 1, 2, 3] if s % 2 else [1, 2])
    assert torch.equal(got[4:], start[4:])
    assert not torch.equal(got[:4], start[:4])


def test_a_row_touched_once_gets_one_adam_step_with_global_bias_correction():
    """Row 0 is touched only at step 3 (t = 3): m = (1-b1) g, v = (1-b2) g^2, and the update is
    lr * m/(1-b1^3) / (sqrt(v/(1-b2^3)) + eps), after decoupled decay."""
    emb = two_tables(True)
    w0 = emb.weight.detach().clone()
    opt = RowSparseAdamW(emb.parameters(), **KW)
    for s in range(3):
        opt.zero_grad()
        ids = torch.tensor([1] if s < 2 else [0, 1])
        (emb(ids) ** 2).sum().backward()
        opt.step()
    lr, (b1, b2), wd = KW["lr"], KW["betas"], KW["weight_decay"]
    g = 2 * w0[0]
    m, v = (1 - b1) * g, (1 - b2) * g * g
    want = w0[0] * (1 - lr * wd) - lr * (m / (1 - b1 ** 3)) / ((v / (1 - b2 ** 3)).sqrt() + 1e-8)
    assert torch.allclose(emb.weight[0].detach(), want, atol=1e-6)


def test_clip_matches_torch_on_mixed_sparse_and_dense_gradients():
    torch.manual_seed(0)
    table = nn.Embedding(10, 4, sparse=True)
    lin = nn.Linear(4, 2)
    ids = torch.tensor([1, 3, 3, 7])
    lin(table(ids)).pow(2).sum().mul(10).backward()
    dense = [table.weight.grad.to_dense().clone(), lin.weight.grad.clone(), lin.bias.grad.clone()]
    ps = [nn.Parameter(torch.zeros_like(d)) for d in dense]
    for p, d in zip(ps, dense):
        p.grad = d
    want = torch.nn.utils.clip_grad_norm_(ps, 0.5)
    got = clip_grad_norm([table.weight, lin.weight, lin.bias], 0.5)
    assert torch.allclose(got, want)
    assert torch.allclose(table.weight.grad.to_dense(), ps[0].grad, atol=1e-6)
    assert torch.allclose(lin.weight.grad, ps[1].grad, atol=1e-6)


def test_only_large_tables_become_sparse():
    model = nn.Module()
    model.city_emb = nn.Embedding(10_000, 4)
    model.ctx = nn.Embedding(50, 4)
    assert sparse_tables(model) == ["city_emb"]
    assert model.city_emb.sparse and not model.ctx.sparse
    assert isinstance(make_optimizer(model, "adamw", 0.1, 0.0), torch.optim.AdamW)
