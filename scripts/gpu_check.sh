#!/usr/bin/env bash
# Full-scale GPU check of the neural models: needs only python3 with torch (+ numpy), no data.
#
# Trains the GRU and the Transformer for a fixed number of steps on random tensors shaped like the
# full dataset (V = 40k cities with Zipf popularity, 195 countries, 1.7M training rows per epoch,
# the model sizes of configs/base.yaml), through the same nextdest.models.step.train_step that
# training uses: the full softmax with dense AdamW, and the sampled softmax (2048 negatives) with
# row-sparse AdamW (the default). On CUDA with bf16 autocast, and the same on the CPU for a few
# steps; prints samples/s, the projected seconds per full-scale epoch and the loss after the steps.
# Targets are a fixed function of the last city, so a falling loss shows the models learn.
#
#   scripts/gpu_check.sh                  CUDA (falls back to CPU-only when no GPU is visible)
#   DEVICE=cpu scripts/gpu_check.sh       CPU only
#   STEPS=300 CPU_STEPS=5 BATCH=1024 V=40000 ROWS=1700000 SAMPLED=2048 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec python3 - "$@" <<'PY'
import os, sys, time

import torch

from nextdest.models import Batch, Dims, build_model
from nextdest.models.optim import make_optimizer
from nextdest.models.step import NegativeSampler, train_step
from nextdest.perf import tune_allocator

env = os.environ.get
want = env("DEVICE", "auto")
has_cuda = torch.cuda.is_available()
if want == "cuda" and not has_cuda:
    sys.exit("DEVICE=cuda but torch.cuda.is_available() is False")
gpu = has_cuda and want != "cpu"
STEPS, CPU_STEPS = int(env("STEPS", "300")), int(env("CPU_STEPS", "5"))
B, V, ROWS = int(env("BATCH", "1024")), int(env("V", "40000")), int(env("ROWS", "1700000"))
SAMPLED = int(env("SAMPLED", "2048"))
dims = Dims(n_cities=V, n_countries=195, seq_len=6, ctx_sizes=(13, 7, 7, 2, 4, 31, 32, 61, 61, 31, 31, 31, 7, 5, 1100))
HPARAMS = {  # configs/base.yaml's sections (no yaml here; tests/test_gpu_check.py keeps them equal)
    "gru": {"enabled": True, "emb_dim": 64, "dropout": 0.1, "epochs": 0, "sampled_softmax": -1, "hidden": 128, "ctx_dim": 16,
            "seeds": []},
    "transformer": {"enabled": True, "emb_dim": 64, "dropout": 0.1, "epochs": 0, "sampled_softmax": -1, "n_layers": 2,
                    "n_heads": 4, "ctx_dim": 16, "causal": False, "seeds": []},
}
MODES = {"full": (0, "adamw"), "sampled": (SAMPLED, "sparse_adamw")}
print(f"torch {torch.__version__}; CUDA: {torch.cuda.get_device_name(0) if has_cuda else 'none'}; "
      f"CPU threads {torch.get_num_threads()}; allocator {tune_allocator()}; V={V:,} batch={B} rows/epoch={ROWS:,}")


def data(n, device, g):
    """n random rows: Zipf-popular cities (n, 6) with padded early lags, countries, context, target."""
    zipf = 1.0 / torch.arange(1, V - 1, dtype=torch.float64)
    cities = torch.multinomial(zipf, n * 6, replacement=True, generator=g).view(n, 6) + 2
    cities[torch.rand(n, generator=g) < 0.4, 1:3] = 0
    countries = (cities % 193 + 2) * (cities > 0)
    ctx = torch.stack([torch.randint(0, s, (n,), generator=g) for s in dims.ctx_sizes], 1)
    target = (cities[:, -1] * 7 + 3) % (V - 2) + 2  # a learnable function of the last city
    return [t.to(device) for t in (cities, countries, ctx, target)]


def run(name, mode, device, steps, rows):
    n_neg, opt_kind = MODES[mode]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model(name, HPARAMS[name], dims)
    model.head.set_city_country(torch.arange(V) % 193 + 2)
    model.to(device).train()
    cities, countries, ctx, target = data(rows, device, g)
    opt = make_optimizer(model, opt_kind, 3e-3, 1e-4)
    sampler = NegativeSampler.from_targets(target, V, n_neg, torch.Generator(device=device).manual_seed(1)) if n_neg else None
    warm = min(5, max(steps // 10, 1)) if device == "cuda" else 1
    t0 = None
    for step in range(steps + warm):
        if step == warm:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        idx = torch.randint(0, rows, (B,), device=device)
        loss = train_step(model, Batch(cities[idx], countries[idx], ctx[idx], target[idx]), opt, sampler,
                          device=device, amp=device == "cuda")
    if device == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    rate = steps * B / sec
    mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
    print(f"  {name:12s} {mode:8s} {device:4s} {steps:5d} steps: {rate:12,.0f} samples/s, {ROWS / rate:9.1f} s per "
          f"{ROWS:,}-row epoch, loss after {steps + warm} steps {loss.item():.3f} "
          f"(start ~{torch.log(torch.tensor(float(V))).item():.2f}){mem}", flush=True)
    return rate


results = {}
for name in HPARAMS:
    for mode in MODES:
        if gpu:
            results[(name, mode, "cuda")] = run(name, mode, "cuda", STEPS, ROWS)
        results[(name, mode, "cpu")] = run(name, mode, "cpu", CPU_STEPS, min(ROWS, 200_000))
if gpu:
    for name in HPARAMS:
        for mode in MODES:
            print(f"  {name} {mode}: GPU/CPU speed-up x{results[(name, mode, 'cuda')] / results[(name, mode, 'cpu')]:.0f}")
else:
    print("  (no GPU used: CPU figures only)")
PY
