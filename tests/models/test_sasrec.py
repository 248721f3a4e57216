"""The SASRec-style model: its per-position loss by hand, causality, and a tiny run of the whole
pipeline with it switched on (it reaches the candidates, the blend, the report and the summary
through the registry alone)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from nextdest.models import Batch, Dims
from nextdest.models.head import N_MASKED
from netsizes import small_model
from tiny import tiny_config

DIMS = Dims(n_cities=40, n_countries=7, seq_len=6, ctx_sizes=(13, 7, 4))


def make():
    torch.manual_seed(0)
    model = small_model("sasrec", DIMS, emb_dim=16, n_heads=2, n_layers=1, ctx_dim=4, dropout=0.0)
    model.head.set_city_country(torch.arange(DIMS.n_cities) % DIMS.n_countries)
    return model.eval()


def batch() -> Batch:
    cities = torch.tensor([[3, 0, 0, 3, 5, 7],     # a short trip: padded lags, the first city is lag 3
                           [4, 9, 1, 6, 8, 10]])   # a rare city (1) at lag 4
    ctx = torch.tensor([[1, 2, 3], [0, 1, 2]])
    return Batch(cities, (cities % DIMS.n_countries) * (cities > 0), ctx, torch.tensor([11, 12]))


def test_loss_is_the_mean_over_every_position_with_a_next_city():
    model, b = make(), batch()
    h = model.positions(b)  # (2, 6, d)
    logits = lambda i, j: model.head(h[i, j][None], b.cities[i][None], (model.copy(h[i, j]) * (torch.arange(6) <= j))[None])[0]  # noqa: E731
    # row 0: positions 3 -> 5, 4 -> 7, 5 -> 11 (the target); the first city and padding predict nothing
    # row 1: position 1 is followed by a rare city (skipped); the rare step 2 -> 6, 3 -> 8, 4 -> 10, 5 -> 12
    pairs = [(0, 3, 5), (0, 4, 7), (0, 5, 11), (1, 2, 6), (1, 3, 8), (1, 4, 10), (1, 5, 12)]
    want = torch.stack([F.cross_entropy(logits(i, j)[None], torch.tensor([t])) for i, j, t in pairs]).mean()
    assert torch.allclose(model.loss(b), want, atol=1e-5)
    # prediction scores the last position only, with every step's copy score
    assert torch.allclose(model(b), model.head(h[:, -1], b.cities, model.copy(h[:, -1])), atol=1e-6)


def test_aux_share_keeps_a_fresh_sample_of_the_earlier_positions():
    """aux_share 0: the last position alone; 0.5: the positions whose fresh draw is below 0.5 (the
    last always); in eval mode, or at 1.0, every position counts."""
    model, b = make(), batch()
    h = model.positions(b)
    logits = lambda i, j: model.head(h[i, j][None], b.cities[i][None], (model.copy(h[i, j]) * (torch.arange(6) <= j))[None])[0]  # noqa: E731
    pairs = [(0, 3, 5), (0, 4, 7), (0, 5, 11), (1, 2, 6), (1, 3, 8), (1, 4, 10), (1, 5, 12)]
    ce = {(i, j): F.cross_entropy(logits(i, j)[None], torch.tensor([t])) for i, j, t in pairs}
    full = model.loss(b)
    model.train()  # dropout is 0: training mode only turns the sampling on
    model.cfg = dataclasses.replace(model.cfg, aux_share=0.0)
    assert torch.allclose(model.loss(b), (ce[0, 5] + ce[1, 5]) / 2, atol=1e-5)
    model.cfg = dataclasses.replace(model.cfg, aux_share=0.5)
    for seed in range(3):
        torch.manual_seed(seed)
        drawn = torch.rand(2, 5) < 0.5  # the draw the loss makes for positions 0..4
        torch.manual_seed(seed)
        kept = [ce[i, j] for i, j, _t in pairs if j == 5 or drawn[i, j]]
        assert torch.allclose(model.loss(b), torch.stack(kept).mean(), atol=1e-5)
    model.cfg = dataclasses.replace(model.cfg, aux_share=1.0)
    assert torch.allclose(model.loss(b), full, atol=1e-5)
    model.eval()
    model.cfg = dataclasses.replace(model.cfg, aux_share=0.0)
    assert torch.allclose(model.loss(b), full, atol=1e-5)


def test_positions_see_only_earlier_steps():
    model, b = make(), batch()
    later = Batch(b.cities.clone(), b.countries.clone(), b.ctx, b.target)
    later.cities[:, 4:] = torch.tensor([[20, 21], [22, 23]])
    h, h2 = model.positions(b), model.positions(later)
    assert torch.allclose(h[:, :4], h2[:, :4], atol=1e-6) and not torch.allclose(h[:, 4], h2[:, 4])


def test_sampled_loss_with_every_city_sampled_is_the_full_loss():
    from nextdest.models.step import Negatives

    model, b = make(), batch()
    negatives = Negatives(torch.arange(N_MASKED, DIMS.n_cities), torch.zeros(DIMS.n_cities))
    assert torch.allclose(model.loss(b, negatives), model.loss(b), atol=1e-5)


@pytest.mark.slow
def test_tiny_pipeline_with_sasrec(tiny_upstream, tmp_path, capsys):
    from nextdest.report import print_summary
    from nextdest.stages import STAGE_LIST, run_pipeline

    _cfg, exp = tiny_upstream
    root = tmp_path / "artifacts"
    shutil.copytree(exp, root / exp.name)
    saved = {k: os.environ.get(k) for k in ("NEXTDEST_ARTIFACTS", "NEXTDEST_SUBMISSIONS")}
    os.environ["NEXTDEST_ARTIFACTS"], os.environ["NEXTDEST_SUBMISSIONS"] = str(root), str(tmp_path / "submissions")
    try:
        others = [f"models.{s.name}.enabled=false" for s in STAGE_LIST if s.kind == "model" and s.name != "sasrec"]
        cfg = tiny_config("models.sasrec.enabled=true", *others)
        paths = run_pipeline(cfg)
        assert "sasrec" in paths
        out = root / exp.name
        assert "sasrec" in json.loads((out / "candidates" / "recall.json").read_text())["models"]
        assert "m_sasrec_score" in json.loads((out / "candidates" / "feature_names.json").read_text())
        assert "sasrec" in json.loads((out / "blend" / "weights.json").read_text())["components"]
        summary = json.loads((out / "report" / "summary.json").read_text())
        assert summary["models"]["sasrec"]["stage"] == "sasrec" and summary["models"]["sasrec"]["cv_acc4"] is not None
        print_summary(cfg, paths["report"])
        assert "| sasrec |" in capsys.readouterr().out
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
