"""AdamW that updates only the rows an embedding table's sparse gradient touches, and a gradient
clip that understands sparse gradients.

The city table is the largest tensor of every model (40,000 x 64 at full scale) and a batch touches
a few thousand of its rows (input steps, targets, sampled negatives). A dense AdamW rewrites the
whole table and both its moment buffers every step. Here an embedding built with ``sparse=True``
hands the optimizer a sparse gradient, and only those rows are updated ("lazy" Adam, as in
TensorFlow's LazyAdam): their moments, decoupled weight decay and step. Dense gradients (every other
parameter, and the city table itself under the full softmax) get the ordinary AdamW update. Bias
correction uses the parameter's global step count.

Torch only, like the rest of ``nextdest.models``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class RowSparseAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid RowSparseAdamW settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            dense: dict[int, list] = {}  # step -> [params, grads, exp_avgs, exp_avg_sqs] (foreach update)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if p.grad.is_sparse:
                    self._sparse_update(p, p.grad, state, lr, b1, b2, eps, wd)
                else:
                    lists = dense.setdefault(state["step"], [[], [], [], []])
                    for lst, t in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"])):
                        lst.append(t)
            for t, (ps, gs, ms, vs) in dense.items():
                step_size, bc2_sqrt = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
                torch._foreach_lerp_(ms, gs, 1 - b1)
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_div_(denom, bc2_sqrt)
                torch._foreach_add_(denom, eps)
                if wd:
                    torch._foreach_mul_(ps, 1 - lr * wd)
                torch._foreach_addcdiv_(ps, ms, denom, -step_size)
        return loss

    @staticmethod
    def _sparse_update(p, g, state, lr, b1, b2, eps, wd) -> None:
        """AdamW on the rows of ``p`` that the sparse gradient ``g`` touches; other rows untouched."""
        t = state["step"]
        step_size, bc2_sqrt = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g = g.coalesce()
        rows, vals = g.indices()[0], g.values()  # (n,), (n, d)
        m_r = m.index_select(0, rows).lerp_(vals, 1 - b1)  # (n, d)
        v_r = v.index_select(0, rows).mul_(b2).addcmul_(vals, vals, value=1 - b2)  # (n, d)
        m.index_copy_(0, rows, m_r)
        v.index_copy_(0, rows, v_r)
        p_r = p.index_select(0, rows)  # (n, d)
        if wd:
            p_r.mul_(1 - lr * wd)
        p_r.addcdiv_(m_r, v_r.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)
        p.index_copy_(0, rows, p_r)


@torch.no_grad()
def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for a mix of dense and sparse gradients (sparse ones are
    coalesced in place, so the optimizer does not coalesce them again). Returns the total norm."""
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad.values())
        else:
            grads.append(p.grad)
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return total


def sparse_tables(model: nn.Module, min_rows: int = 8192) -> list[str]:
    """Switch the model's large embedding tables (``min_rows`` rows or more: the city table of a
    large vocabulary) to sparse gradients; returns their names. Small tables (countries, context
    fields, a small city vocabulary) stay dense: a dense update of them costs less."""
    names = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding) and mod.num_embeddings >= min_rows:
            mod.sparse = True
            names.append(name)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (and embedding tables), not on biases and norm scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, kind: str, lr: float, weight_decay: float, betas=(0.9, 0.98)) -> torch.optim.Optimizer:
    """``kind``: ``sparse_adamw`` (large embedding tables get row-sparse updates) or ``adamw``
    (torch's dense AdamW on every parameter)."""
    groups = param_groups(model, weight_decay)
    if kind == "sparse_adamw":
        sparse_tables(model)
        return RowSparseAdamW(groups, lr=lr, betas=betas)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    raise ValueError(f"unknown optimizer {kind!r} (sparse_adamw | adamw)")
