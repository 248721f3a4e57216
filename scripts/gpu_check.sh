#!/usr/bin/env bash
# Full-scale GPU check of the neural models: needs only python3 with torch (+ numpy), no data.
#
# Trains the GRU and the Transformer for a fixed number of steps on random tensors shaped like the
# full dataset (V = 40k cities, 195 countries, 1.7M training rows per epoch, the default model
# sizes), on CUDA with mixed precision (bf16), and the same models on the CPU for a few steps; prints
# samples/s, the projected seconds per full-scale epoch and the loss after the steps. The targets
# are a fixed function of the last city, so a falling loss shows the models learn.
#
#   scripts/gpu_check.sh                  CUDA (falls back to CPU-only when no GPU is visible)
#   DEVICE=cpu scripts/gpu_check.sh       CPU only
#   STEPS=300 CPU_STEPS=3 BATCH=1024 V=40000 ROWS=1700000 SAMPLED=0 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec python3 - "$@" <<'PY'
import os, sys, time

import torch
import torch.nn.functional as F

from nextdest.models import Dims, build_model, net_config

env = os.environ.get
want = env("DEVICE", "auto")
has_cuda = torch.cuda.is_available()
if want == "cuda" and not has_cuda:
    sys.exit("DEVICE=cuda but torch.cuda.is_available() is False")
gpu = has_cuda and want != "cpu"
STEPS, CPU_STEPS = int(env("STEPS", "300")), int(env("CPU_STEPS", "3"))
B, V, ROWS = int(env("BATCH", "1024")), int(env("V", "40000")), int(env("ROWS", "1700000"))
SAMPLED = int(env("SAMPLED", "0"))  # >0: sampled softmax with this many negatives
dims = Dims(n_cities=V, n_countries=195, seq_len=6, ctx_sizes=(13, 7, 7, 2, 4, 31, 32, 61, 61, 31, 31, 31, 7, 5, 1100))
HPARAMS = {
    "gru": {"emb_dim": 128, "hidden": 256, "ctx_dim": 16, "dropout": 0.1},
    "transformer": {"emb_dim": 128, "n_layers": 2, "n_heads": 4, "ctx_dim": 16, "dropout": 0.1},
}

print(f"torch {torch.__version__}; CUDA: {torch.cuda.get_device_name(0) if has_cuda else 'none'}; "
      f"CPU threads {torch.get_num_threads()}; V={V:,} batch={B} rows/epoch={ROWS:,} sampled_softmax={SAMPLED}")


def data(n, device, g):
    """n random rows: cities (n, 6) with padded early lags, countries, context, target."""
    cities = torch.randint(2, V, (n, 6), generator=g)
    short = torch.rand(n, generator=g) < 0.4
    cities[short, 1:3] = 0
    countries = (cities % 193 + 2) * (cities > 0)
    ctx = torch.stack([torch.randint(0, s, (n,), generator=g) for s in dims.ctx_sizes], 1)
    target = (cities[:, -1] * 7 + 3) % (V - 2) + 2  # a learnable function of the last city
    return [t.to(device) for t in (cities, countries, ctx, target)]


def run(name, device, steps, rows):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model(name, net_config(name, HPARAMS[name], dims))
    model.head.set_city_country(torch.arange(V) % 193 + 2)
    model.to(device).train()
    cities, countries, ctx, target = data(rows, device, g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    log_q = torch.full((V,), -float(torch.log(torch.tensor(float(V - 2)))), device=device)
    log_q[:2] = -1e9
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    warm = min(5, max(steps // 10, 1)) if device == "cuda" else 1
    t0 = None
    for step in range(steps + warm):
        if step == warm:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        idx = torch.randint(0, rows, (B,), device=device)
        with amp:
            if SAMPLED:
                neg = torch.randint(2, V, (SAMPLED,), device=device)
                loss = model.head.sampled_loss(model.encode(cities[idx], countries[idx], ctx[idx]), target[idx], neg, log_q)
            else:
                loss = F.cross_entropy(model(cities[idx], countries[idx], ctx[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    rate = steps * B / sec
    mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
    print(f"  {name:12s} {device:4s} {steps:5d} steps: {rate:12,.0f} samples/s, {ROWS / rate:9.1f} s per {ROWS:,}-row epoch, "
          f"loss after {steps + warm} steps {loss.item():.3f} (start ~{torch.log(torch.tensor(float(V))).item():.2f}){mem}")
    return rate


results = {}
for name in HPARAMS:
    if gpu:
        results[(name, "cuda")] = run(name, "cuda", STEPS, ROWS)
    results[(name, "cpu")] = run(name, "cpu", CPU_STEPS, min(ROWS, 200_000))
if gpu:
    for name in HPARAMS:
        print(f"  {name}: GPU/CPU speed-up x{results[(name, 'cuda')] / results[(name, 'cpu')]:.0f}")
else:
    print("  (no GPU used: CPU figures only)")
PY
