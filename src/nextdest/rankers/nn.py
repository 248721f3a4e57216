"""A neural listwise ranker behind the :class:`~nextdest.rankers.base.Ranker` interface.

Each candidate row gets a score from a small MLP over its features; the loss is the softmax
cross-entropy of the true city against every other candidate of its trip (a conditional logit:
the trip's candidates compete, as the next stay's cities do). The gradient-boosted rankers learn
each row on its own (XGBoost) or from pairs (LightGBM); this one normalises over the trip, and
being a different kind of model its mistakes are less correlated with theirs, which is what a
blend needs.

Inputs (:meth:`NNRanker.prepare`, once per cross-fit from every trainable row): each feature
``x -> sign(x) log(1 + |x|)`` (counts and shares both become tame), standardised; a missing value
becomes 0 and sets the feature's missing flag (one flag per feature that has missing values);
with ``one_hot_max``, trip-context features with few integer values (month, market, device) also
enter one-hot. ``n_seeds`` networks (seeds ``seed``, ``seed + 1``, ...) train side by side and their
scores are averaged. With ``context``, a candidate's score also sees the trip's other candidates
(the mean and the max of their first hidden layer: how it compares with the best of them), so
:meth:`NNRanker.predict` needs the rows per trip.

The fold loop's rounds are epochs (:attr:`NNRanker.EVAL_EVERY` = 1: the held-out groups are scored
after every epoch). The weights after every epoch are kept, so the scores of "rounds ``a`` to
``b``" are ``f_b(x) - f_a(x)`` (``f_0 = 0``): they add up over consecutive ranges as boosted trees
do, and :meth:`NNRanker.finish` keeps the early-stopped epoch. Deterministic for a given torch
thread count (part of the stage's cache key).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..sections import at_least, positive
from .base import RankData, Ranker, register_ranker, resolve_threads


@dataclass(frozen=True)
class NNRankerConfig:
    enabled: bool
    n_estimators: int = at_least(1)  # epochs at most (the fold loop's rounds)
    early_stopping_rounds: int = at_least(1)  # epochs without a better pooled held-out NDCG@4
    learning_rate: float = positive()  # AdamW, constant
    weight_decay: float = at_least(0.0)
    hidden: int = at_least(1)  # width of the first hidden layer (the second is half of it)
    dropout: float = at_least(0.0)
    batch_trips: int = at_least(1)  # trips per step (each with all its candidates)
    one_hot_max: int = at_least(0)  # trip-context features (ctx_*) with at most this many distinct integer values
                                    # also enter one-hot (month, market, device...); 0 = none
    n_seeds: int = at_least(1)  # networks per fold model (seeds seed, seed + 1, ...), their scores averaged
    context: bool  # each candidate also sees its trip's other candidates (mean and max of their hidden layer)


def build_net(n_in: int, hidden: int, dropout: float, context: bool):
    """The scoring network (torch imported here, not when this module is): ``net(x, mask)`` maps
    (B, S, F') inputs and the (B, S) mask of real candidates to (B, S) scores."""
    import torch
    import torch.nn as nn

    class ScoreMLP(nn.Sequential):
        """Each candidate on its own."""

        def __init__(self):
            super().__init__(
                nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout),  # (B, S, F') -> (B, S, H)
                nn.Linear(hidden, hidden // 2), nn.GELU(),  # (B, S, H / 2)
                nn.Linear(hidden // 2, 1),  # (B, S, 1): one score per candidate
            )

        def forward(self, x, mask=None):
            return super().forward(x).squeeze(-1)  # (B, S)

    class ContextScorer(nn.Module):
        """Each candidate beside the trip's others: its hidden layer with their mean and max."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout))
            self.head = nn.Sequential(nn.Linear(3 * hidden, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, 1))

        def forward(self, x, mask):
            h = self.embed(x)  # (B, S, H)
            m = mask.unsqueeze(-1)  # (B, S, 1)
            mean = (h * m).sum(1) / m.sum(1).clamp(min=1)  # (B, H)
            top = h.masked_fill(~m, -1e4).max(1).values  # (B, H)
            trip = torch.cat([mean, top], dim=-1).unsqueeze(1).expand(-1, h.shape[1], -1)  # (B, S, 2H)
            return self.head(torch.cat([h, trip], dim=-1)).squeeze(-1)  # (B, S)

    return ContextScorer() if context else ScoreMLP()


@dataclass
class Inputs:
    """How raw feature rows become network inputs (fitted once per cross-fit)."""

    mean: np.ndarray  # (F,) of the signed-log features, over the finite values
    std: np.ndarray  # (F,)
    flagged: np.ndarray  # (M,) indices of the features that get a missing flag
    one_hot: list = field(default_factory=list)  # (feature index, its values (V,)): V more columns, 1 where equal

    @classmethod
    def fit(cls, X: np.ndarray, names: list[str] | None = None, one_hot_max: int = 0, chunk: int = 1 << 18) -> "Inputs":
        n_feat = X.shape[1]
        s, s2, n = np.zeros(n_feat), np.zeros(n_feat), np.zeros(n_feat)
        for a in range(0, len(X), chunk):
            z = _signed_log(X[a:a + chunk].astype(np.float64))
            ok = np.isfinite(z)
            z = np.where(ok, z, 0.0)
            s += z.sum(axis=0)
            s2 += (z * z).sum(axis=0)
            n += ok.sum(axis=0)
        mean = s / np.maximum(n, 1)
        std = np.sqrt(np.maximum(s2 / np.maximum(n, 1) - mean ** 2, 0.0))
        one_hot = []
        for j, name in enumerate(names or []):
            if one_hot_max > 0 and name.startswith("ctx_"):
                v = np.unique(X[:, j][np.isfinite(X[:, j])])
                if 1 < len(v) <= one_hot_max and np.all(v == np.round(v)):
                    one_hot.append((j, v.astype(np.float32)))
        return cls(mean, np.where(std > 1e-9, std, 1.0), np.flatnonzero(n < len(X)), one_hot)

    @property
    def width(self) -> int:
        return len(self.mean) + len(self.flagged) + sum(len(v) for _, v in self.one_hot)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(..., F) raw rows -> (..., F + M + one-hot columns) float32 inputs."""
        z = (_signed_log(X.astype(np.float32)) - self.mean.astype(np.float32)) / self.std.astype(np.float32)
        missing = ~np.isfinite(z)
        hot = [X[..., j, None] == v for j, v in self.one_hot]  # (..., V) each
        return np.concatenate([np.where(missing, 0.0, z), missing[..., self.flagged], *hot], axis=-1).astype(np.float32)


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def slot_index(sizes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` (whole queries of ``sizes`` rows each, in order) as a (queries, max size) matrix
    of row numbers and its mask (False: padding, row number 0)."""
    width = int(sizes.max()) if len(sizes) else 0
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    col = np.arange(width)
    mask = col[None, :] < sizes[:, None]  # (Q, S)
    pos = np.where(mask, starts[:, None] + col[None, :], 0)
    return np.asarray(rows)[pos], mask


@register_ranker("nn_ranker", "nn", NNRankerConfig)
class NNRanker(Ranker):
    EVAL_EVERY = 1

    @classmethod
    def runtime(cls, cfg) -> dict:
        """torch on the CPU is deterministic for a given thread count only."""
        return {"torch_threads": resolve_threads(cfg.rankers.n_threads)}

    def _torch(self):
        import torch

        torch.set_num_threads(self.n_threads)
        return torch

    def prepare(self, data: RankData, rows: np.ndarray):
        """The input transform, fitted once on every trainable row."""
        return Inputs.fit(data.X[rows], data.names, self.params.one_hot_max)

    def start(self, prepared, data: RankData, rows: np.ndarray):
        torch = self._torch()
        self.inputs: Inputs = prepared
        self.dev = "cuda" if self.device == "cuda" else "cpu"
        self._data, self._names = data, list(data.names)
        self._cache = None  # (key of X and epoch, scores): the fold loop asks for an epoch's scores twice
        self._slots, self._mask = slot_index(data.sizes_of(rows), rows)  # (T, S)
        y = np.where(self._mask, data.y[self._slots], 0.0)
        self._target = y.argmax(axis=1)  # (T,) slot of the true city (every training trip has one)
        p = self.params
        self.nets, self.opts, self.gens = [], [], []
        for k in range(p.n_seeds):
            torch.manual_seed(self.seed + k)
            self.nets.append(build_net(self.inputs.width, p.hidden, p.dropout, p.context).to(self.dev))
            self.opts.append(torch.optim.AdamW(self.nets[k].parameters(), lr=p.learning_rate, weight_decay=p.weight_decay))
            self.gens.append(torch.Generator().manual_seed(self.seed + k))
        self.snapshots = [None]  # every network's weights after each epoch; f_0 = 0
        self.losses: list[float] = []
        return prepared

    def boost(self, rounds: int) -> None:
        torch = self._torch()
        F = torch.nn.functional
        p = self.params
        n = len(self._slots)
        for _ in range(rounds):
            total = 0.0
            for net, opt, gen in zip(self.nets, self.opts, self.gens):
                net.train()
                for j in torch.randperm(n, generator=gen).split(p.batch_trips):
                    j = j.numpy()
                    x = torch.from_numpy(self.inputs(self._data.X[self._slots[j]])).to(self.dev)  # (B, S, F')
                    mask = torch.from_numpy(self._mask[j]).to(self.dev)  # (B, S)
                    z = net(x, mask).masked_fill(~mask, -1e9)  # (B, S)
                    loss = F.cross_entropy(z, torch.from_numpy(self._target[j]).to(self.dev))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(j)
            self.losses.append(round(total / max(n * len(self.nets), 1), 5))
            self.snapshots.append([{k: v.detach().clone() for k, v in net.state_dict().items()} for net in self.nets])
            self.n_trees += 1

    def _scores(self, X: np.ndarray, epoch: int, sizes: np.ndarray | None, chunk: int = 1 << 16) -> np.ndarray:
        if epoch == 0:
            return np.zeros(len(X))
        key = (X.__array_interface__["data"][0], X.shape, X.strides, epoch)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        torch = self._torch()
        if self.params.context:
            if sizes is None or int(np.sum(sizes)) != len(X):
                raise ValueError("nn_ranker with context: predict needs the rows per trip (sizes) of X")
            slots, mask = slot_index(np.asarray(sizes), np.arange(len(X)))  # (T, S) whole trips
        else:  # every row on its own: trips of one row
            slots, mask = np.arange(len(X))[:, None], np.ones((len(X), 1), dtype=bool)
        step = max(1, chunk // slots.shape[1])
        out = np.zeros(len(X))
        for net, state, latest in zip(self.nets, self.snapshots[epoch], self.snapshots[-1]):
            net.load_state_dict(state)
            net.eval()
            with torch.no_grad():
                for a in range(0, len(slots), step):
                    s, m = slots[a:a + step], mask[a:a + step]
                    x = torch.from_numpy(self.inputs(np.asarray(X[s]))).to(self.dev)  # (T, S, F')
                    z = net(x, torch.from_numpy(m).to(self.dev)).double().cpu().numpy()  # (T, S)
                    out[s[m]] += z[m] / len(self.nets)
            net.load_state_dict(latest)  # training goes on from the latest epoch
        self._cache = (key, out)
        return out

    def predict(self, X: np.ndarray, first: int = 0, last: int | None = None, sizes: np.ndarray | None = None) -> np.ndarray:
        last = self.best_iteration if last is None else last
        if last <= first:
            return np.zeros(len(X))
        return self._scores(X, last, sizes) - self._scores(X, first, sizes)

    def finish(self, n_trees: int) -> None:
        self.snapshots = self.snapshots[:n_trees + 1]
        self.best_iteration = n_trees
        self._data = self._slots = self._mask = self._target = self._cache = None

    def importance(self) -> dict[str, float]:
        """Not a gain: the summed absolute first-layer weight of each (standardised) feature, its
        missing flag and its one-hot columns, in the kept epoch's weights (summed over the networks)."""
        first = "embed.0.weight" if self.params.context else "0.weight"
        w = sum(np.abs(s[first].cpu().numpy()).sum(axis=0) for s in self.snapshots[self.best_iteration])  # (F',)
        n_feat, n_flag = len(self.inputs.mean), len(self.inputs.flagged)
        imp = w[:n_feat].copy()
        np.add.at(imp, self.inputs.flagged, w[n_feat:n_feat + n_flag])
        at = n_feat + n_flag
        for j, v in self.inputs.one_hot:
            imp[j] += w[at:at + len(v)].sum()
            at += len(v)
        return {n: float(v) for n, v in zip(self._names, imp)}

    def describe(self) -> dict:
        import torch

        return {"device": self.device, "torch": torch.__version__, "epoch_losses": self.losses}
