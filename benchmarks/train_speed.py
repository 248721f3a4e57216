"""Training-step speed of the neural models at full-scale shapes: the step as it was before the
fast path (full softmax, dense AdamW, default allocator) against the configured default.

Shapes: 40,000 cities, 195 countries, 6 input steps, the context fields of the full preset, the
model sizes and batch size of ``configs/base.yaml``; 1.7 M training rows per full-scale epoch.
Targets and input cities follow a Zipf(1) popularity over the cities (the synthetic full preset's
final-city top-100 / top-1000 shares are 39 % / 72 %; Zipf(1) gives 46 % / 67 %), which matters
for how many distinct negatives a draw yields. Each (model, mode) runs in its own process, so the
allocator setting of one cannot leak into another; each process times three windows of ``--steps``
steps after a warm-up and keeps the best, and reports user and system CPU seconds.

    python benchmarks/train_speed.py [--steps 10] [--threads 0] [--models gru,transformer,mlp]
                                     [--profile] [--no-write] [key.sub=value ...]

The last line printed is
``gru=<samples/s> transformer=<samples/s> mlp=<samples/s> baseline_gru=<samples/s> speedup=<x>x gru_full_epoch=<s>s``.
The figures go to BENCHMARKS.md (section ``train-speed``). Run it with nothing else busy: the
machine has 2 cores and a second busy process slows these steps several times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FULL_EPOCH_ROWS = 1_700_000
V, N_COUNTRIES, SEQ_LEN = 40_000, 195, 6
CTX_SIZES = (13, 7, 7, 2, 4, 31, 32, 61, 61, 31, 31, 31, 7, 5, 1100)
BASELINE = ["train.sampled_softmax=0", "train.optimizer=adamw", "train.allocator=default"]
MODELS = ("gru", "transformer", "mlp")


def worker(name: str, overrides: list[str], steps: int, threads: int, profile: bool, sync: str | None = None) -> dict:
    """Time ``train_step`` of model ``name`` under the config with ``overrides``; runs in a child."""
    from nextdest.config import load_config

    cfg = load_config(None, overrides)
    tcfg = cfg.train
    from nextdest.perf import tune_allocator

    allocator = tune_allocator() if tcfg.allocator == "tuned" else "default"
    import torch

    from nextdest.models import MODELS, Batch, Dims, build_model
    from nextdest.models.optim import make_optimizer
    from nextdest.models.step import NegativeSampler, train_step, use_sampled_softmax

    torch.set_num_threads(threads or tcfg.num_threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    dims = Dims(n_cities=V, n_countries=N_COUNTRIES, seq_len=SEQ_LEN, ctx_sizes=CTX_SIZES)
    model = build_model(name, cfg.section(MODELS[name].section), dims)
    country = torch.arange(V) % (N_COUNTRIES - 2) + 2
    model.head.set_city_country(country)
    model.train()
    rows = 200_000
    zipf = 1.0 / torch.arange(1, V - 1, dtype=torch.float64)  # popularity of cities 2 .. V-1
    cities = torch.multinomial(zipf, rows * SEQ_LEN, replacement=True, generator=g).view(rows, SEQ_LEN) + 2
    cities[torch.rand(rows, generator=g) < 0.4, 1:3] = 0  # short trips: padded lags
    countries = country[cities] * (cities > 0)
    ctx = torch.stack([torch.randint(0, s, (rows,), generator=g) for s in CTX_SIZES], 1)
    target = torch.multinomial(zipf, rows, replacement=True, generator=g) + 2
    opt = make_optimizer(model, tcfg.optimizer, tcfg.lr, tcfg.weight_decay)
    sampled = use_sampled_softmax(tcfg.sampled_softmax, V)
    sampler = NegativeSampler.from_targets(target, V, tcfg.sampled_softmax, torch.Generator().manual_seed(1)) if sampled else None
    bs = tcfg.batch_size
    perm = torch.randperm(rows, generator=g)
    pos = [0]

    def step():
        b = perm[pos[0]:pos[0] + bs]
        pos[0] = (pos[0] + bs) % (rows - bs)
        return train_step(model, Batch(cities[b], countries[b], ctx[b], target[b]), opt, sampler)

    for _ in range(3):
        step()
    if sync:  # concurrent workers: say ready, then start timing together
        Path(sync, f"ready-{os.getpid()}").touch()
        while not Path(sync, "go").exists():
            time.sleep(0.01)
    best, cpu = 0.0, None
    for _ in range(3):
        t0, c0 = time.perf_counter(), os.times()
        for _ in range(steps):
            loss = step()
        dt, c1 = time.perf_counter() - t0, os.times()
        rate = steps * bs / dt
        if rate > best:
            best, cpu = rate, {"user_s": round(c1.user - c0.user, 2), "sys_s": round(c1.system - c0.system, 2), "wall_s": round(dt, 2)}
    out = {"model": name, "samples_per_s": round(best), "threads": torch.get_num_threads(), "batch": bs,
           "softmax": f"sampled {tcfg.sampled_softmax}" if sampled else "full", "optimizer": tcfg.optimizer,
           "allocator": allocator, "loss": round(float(loss), 3), **cpu}
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(steps):
                step()
        out["profile"] = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return out


def run_children(name: str, overrides: list[str], args, n: int, threads: int) -> dict:
    """``n`` concurrent worker processes of ``threads`` threads each, timed over the same windows
    (as the training stage runs its (fold, seed) jobs); returns the summed rate and the first
    worker's details."""
    import tempfile

    sync = tempfile.mkdtemp(prefix="train-speed-")
    cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--threads", str(threads)]
    cmd += ["--profile"] if args.profile else []
    cmd += ["--sync", sync] if n > 1 else []
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([*cmd, *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    if n > 1:
        while len(list(Path(sync).glob("ready-*"))) < n:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
        Path(sync, "go").touch()
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"worker {name} {overrides} failed:\n{err[-3000:]}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    r = dict(outs[0])
    r["per_process"] = [o["samples_per_s"] for o in outs]
    r["samples_per_s"] = sum(r["per_process"])
    r["processes"] = n
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="steps per timed window (3 windows, best kept)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = train.num_threads (0 = every core)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops for each run")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--sync", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.overrides, args.steps, args.threads, args.profile, args.sync)))
        return 0

    load0 = os.getloadavg()
    models = [m for m in args.models.split(",") if m]
    results: dict[tuple[str, str], dict] = {}
    from nextdest.config import load_config
    from nextdest.perf import resolve_parallelism

    cores = os.cpu_count() or 1
    for name in models:  # baseline and default of one model back to back: the same machine state
        for mode, over in (("baseline", BASELINE), ("default", [])):
            tcfg = load_config(None, [*over, *args.overrides]).train
            if mode == "baseline":  # as the stage ran before: one process, every core
                n, threads = 1, args.threads or tcfg.num_threads or cores
            else:  # as the stage runs now: its (fold, seed) jobs in concurrent workers (full rounds)
                n, plan = resolve_parallelism(tcfg.workers, args.threads or tcfg.num_threads, "cpu", 4)
                threads = plan[0]
            r = run_children(name, [*over, *args.overrides], args, n, threads)
            results[(name, mode)] = r
            print(f"{name:12s} {mode:8s} {r['samples_per_s']:>8,} samples/s  ({n} process(es) x {r['threads']} thread(s)"
                  f"{' ' + str(r['per_process']) if n > 1 else ''}; {r['softmax']}, {r['optimizer']}, "
                  f"allocator {r['allocator']}; user {r['user_s']} s, sys {r['sys_s']} s, wall {r['wall_s']} s for "
                  f"{args.steps} steps; loss {r['loss']})", flush=True)
    load1 = os.getloadavg()

    lines = [
        "### Training step at full-scale shapes (`python benchmarks/train_speed.py"
        + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "") + "`)",
        "",
        f"40,000 cities, batch {results[(models[0], 'default')]['batch']}, base model sizes; best of 3 windows of "
        f"{args.steps} steps after 3 warm-up steps. Baseline = the step before this change, as the stage ran it (one "
        f"process, every core): `{' '.join(BASELINE)}`. Default = the stage's new defaults, as the stage runs them: its "
        f"(fold, seed) jobs in concurrent single-thread workers, timed over the same windows; samples/s is the "
        f"machine's total (per-process rates in brackets), and the epoch column is the machine's time per full-scale "
        f"epoch of training (each of the two concurrent folds takes twice that). {cores} cores. "
        f"Load average before / after: {load0[0]:.2f} / {load1[0]:.2f}.",
        "",
        "| model | mode | processes x threads | softmax | optimizer | allocator | samples/s | full-scale epoch (1.7 M rows) | user s | sys s | speedup |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in models:
        base = results[(name, "baseline")]["samples_per_s"]
        for mode in ("baseline", "default"):
            r = results[(name, mode)]
            per = f" {r['per_process']}" if r["processes"] > 1 else ""
            lines.append(f"| {name} | {mode} | {r['processes']} x {r['threads']} | {r['softmax']} | {r['optimizer']} | "
                         f"{r['allocator']} | {r['samples_per_s']:,}{per} | "
                         f"{FULL_EPOCH_ROWS / r['samples_per_s']:,.0f} s | {r['user_s']} | {r['sys_s']} | "
                         f"{r['samples_per_s'] / base:.1f}x |")
    if args.profile:
        for (name, mode), r in results.items():
            lines += ["", f"torch.profiler, {name} {mode} ({args.steps} steps), top ops by self CPU time:", "", "```",
                      r["profile"].strip(), "```"]
            print(f"\n{name} {mode}\n{r['profile']}")
    rate = {m: results[(m, "default")]["samples_per_s"] for m in models}
    final = " ".join(f"{m}={rate[m]}" for m in models)
    if "gru" in rate:
        base = results[("gru", "baseline")]["samples_per_s"]
        final += f" baseline_gru={base} speedup={rate['gru'] / base:.1f}x gru_full_epoch={FULL_EPOCH_ROWS / rate['gru']:.0f}s"
    lines += ["", f"`{final}`"]
    if not args.no_write:
        from bench import write_section

        write_section("train-speed", "\n".join(lines))
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
