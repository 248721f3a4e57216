"""One training loop for every neural model, and the model stage (one per registered model).

For each fold in ``cv.train_folds`` and each seed (:func:`model_seeds`: ``models.<name>.seeds``, or
``train.seeds`` when that is empty) a model is trained on the
fold's training targets (:func:`nextdest.folds.target_mask`), early-stopped on the accuracy@4 of
the fold's validation rows, and kept at its best epoch. The stage then writes

* ``oof_topk.parquet``: each fold's validation trips, scored by that fold's models (softmax
  probabilities averaged over seeds);
* ``test_topk.parquet``: every test trip, softmax probabilities averaged over all folds and seeds;
* ``metrics.json``: CV / test scores plus per-epoch timings, best epochs and training curves;
* ``fold{k}/model.pt`` (and ``fold{k}/model_seed{s}.pt`` for further seeds): self-describing model
  files (weights, network config, resolved config, fold, best score, the vocabulary) that
  :mod:`nextdest.recommend` loads.

Training resumes after a kill: every finished epoch rewrites a checkpoint in ``ctx.work`` (model,
optimiser, scheduler and RNG states, best weights so far, history); a rerun with the same stage key
continues at the next epoch and reproduces the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import artifacts
from .device import resolve_device
from .models import MODELS, Batch, NextCityModel, build_model
from .models.optim import make_optimizer
from .models.step import NegativeSampler, autocast, train_step, use_sampled_softmax
from .nn_data import NNData, load
from .perf import resolve_parallelism, tune_allocator

MODEL_FORMAT = "nextdest.model/2"
PREDICT_BATCH = 2048


# --------------------------------------------------------------------------- model files
def vocab_payload(data: NNData, features_dir: Path | None) -> dict:
    """What inference needs besides the weights: the city maps and the features' vocab.json."""
    vocab_json = artifacts.read_vocab(features_dir) if features_dir is not None else None
    return {
        "city_id": torch.from_numpy(data.city_ids.copy()),  # city_idx -> raw city id
        "input_idx": torch.from_numpy(data.input_lut.copy()),  # city_idx -> input index
        "city_country": torch.from_numpy(data.city_country.copy()),  # city_idx -> country_idx
        "vocab_json": vocab_json,
    }


def save_model_file(path: Path, model: NextCityModel, name: str, meta: dict) -> None:
    """Write a self-describing model file (atomic): the model's name, its config section and the
    data sizes it was built with, its weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "model": name,
        "section": dataclasses.asdict(model.cfg),
        "dims": dataclasses.asdict(model.dims),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **meta,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model_file(path: Path, device: str = "cpu") -> tuple[NextCityModel, dict]:
    """Rebuild a model from its file; returns (model in eval mode, the file's other entries)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a nextdest model file (format {payload.get('format')!r}, expected {MODEL_FORMAT!r})")
    model = build_model(payload["model"], payload["section"], payload["dims"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


# --------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict_topk(
    models: list[NextCityModel], x: Batch, k: int, device: str, amp: bool = False, batch_size: int = PREDICT_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` city indices and probabilities, softmax averaged over ``models``. (n, k) each."""
    n = len(x)
    k = min(k, models[0].dims.n_cities - 2)
    idx_out = np.zeros((n, k), dtype=np.int64)
    prob_out = np.zeros((n, k), dtype=np.float32)
    for m in models:
        m.eval()
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        batch = x.take(sl).to(device)
        prob = None
        for m in models:
            with autocast(device, amp):
                logits = m(batch)  # (b, V)
            p = torch.softmax(logits.float(), dim=-1)  # (b, V)
            prob = p if prob is None else prob.add_(p)
        top = torch.topk(prob, k, dim=-1)  # (b, k); the mean's order is the sum's
        idx_out[sl] = top.indices.cpu().numpy()
        prob_out[sl] = (top.values / len(models)).cpu().numpy()
    return idx_out, prob_out


@torch.no_grad()
def accuracy_at_4(model: NextCityModel, x: Batch, device: str, amp: bool, batch_size: int = PREDICT_BATCH) -> float:
    """Accuracy@4 over every city (the validation score of each epoch): the top 4 of the logits,
    which the softmax would not reorder, so it is skipped (at 40,000 cities it and the division
    after it cost as much as the top-k itself)."""
    n = len(x)
    if n == 0:
        return float("nan")
    model.eval()
    hits = 0
    for start in range(0, n, batch_size):
        batch = x.take(slice(start, min(start + batch_size, n))).to(device)
        with autocast(device, amp):
            logits = model(batch)  # (b, V)
        top = torch.topk(logits.float(), 4, dim=-1).indices  # (b, 4)
        hits += int((top == batch.target[:, None]).any(dim=1).sum())
    return hits / n


# --------------------------------------------------------------------------- training
@dataclass
class FitResult:
    model: NextCityModel  # at its best epoch
    best_score: float
    best_epoch: int  # 1-based
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this run started


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def negatives(cfg, name: str) -> int:
    """Sampled-softmax negatives of model ``name``: its own ``sampled_softmax``, or
    ``train.sampled_softmax`` when that is -1 (0 = the full softmax)."""
    own = cfg.section(MODELS[name].section).sampled_softmax
    return cfg.train.sampled_softmax if own < 0 else own


def model_seeds(cfg, name: str) -> tuple[int, ...]:
    """Bagging seeds of model ``name``: its own ``seeds``, or ``train.seeds`` when that is empty
    (one model trained per fold and seed; softmax probabilities averaged)."""
    own = tuple(cfg.section(MODELS[name].section).seeds)
    return own or tuple(cfg.train.seeds)


def fit(
    name: str,
    data: NNData,
    fold: int,
    seed: int,
    cfg,
    device: str,
    checkpoint: Path | None = None,
    log=print,
) -> FitResult:
    """Train one model on fold ``fold`` with seed ``seed``; resume from ``checkpoint`` if it exists."""
    tcfg = cfg.train
    section = cfg.section(MODELS[name].section)
    epochs = section.epochs or tcfg.epochs
    amp = tcfg.amp and device == "cuda"
    run_seed = cfg.seed * 10_007 + seed * 101 + fold
    torch.manual_seed(run_seed)
    model = build_model(name, section, data.dims)
    model.head.set_city_country(torch.from_numpy(data.city_country))
    model.to(device)

    train_x = data.batch.take(data.train_rows(fold, tcfg.max_train_rows, run_seed))
    valid_x = data.batch.take(data.valid_rows(fold))
    n = len(train_x)
    if n == 0:
        raise RuntimeError(f"{name}: fold {fold} has no training rows")
    bs = min(tcfg.batch_size, n)
    steps = max(1, n // bs)  # the last partial batch is dropped (a fresh shuffle each epoch)
    dev_x = train_x.to(device)

    opt = make_optimizer(model, tcfg.optimizer, tcfg.lr, tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=epochs * steps, pct_start=0.25)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported()) if device == "cuda" else None
    gen = torch.Generator().manual_seed(run_seed)
    sampler = None
    n_neg = negatives(cfg, name)
    if use_sampled_softmax(n_neg, data.dims.n_cities):
        neg_gen = torch.Generator(device=device).manual_seed(run_seed + 1)
        sampler = NegativeSampler.from_targets(dev_x.target, data.dims.n_cities, n_neg, neg_gen)

    history: list[dict] = []
    best_score, best_epoch, best_state = -1.0, 0, None
    start_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        gen.set_state(st["gen_state"])
        if sampler is not None and st.get("neg_gen_state") is not None:
            sampler.generator.set_state(st["neg_gen_state"])
        torch.set_rng_state(st["torch_rng"])
        if device == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"])
        history, best_score, best_epoch, best_state = st["history"], st["best_score"], st["best_epoch"], st["best_state"]
        start_epoch = len(history)
        if st["finished"]:
            model.load_state_dict(best_state)
            log(f"fold {fold} seed {seed}: already trained (best epoch {best_epoch}, val acc@4 {best_score:.4f})")
            return FitResult(model.eval(), best_score, best_epoch, history, start_epoch)
        log(f"fold {fold} seed {seed}: resuming after epoch {start_epoch}/{epochs}")

    finished = False
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total, seen = torch.zeros((), device=device), 0
        bar = tqdm(range(steps), desc=f"{name} f{fold} s{seed} ep{epoch + 1}/{epochs}", leave=False,
                   mininterval=2.0, disable=None, file=sys.stderr)
        for step in bar:
            b = perm[step * bs:(step + 1) * bs]
            loss = train_step(model, dev_x.take(b), opt, sampler, device=device, amp=amp, scaler=scaler)
            sched.step()
            total += loss.detach() * len(b)
            seen += len(b)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        train_seconds = time.perf_counter() - t0
        score = accuracy_at_4(model, valid_x, device, amp)
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": round(float(total) / max(seen, 1), 5), "val_acc4": score,
               "train_seconds": round(train_seconds, 3), "seconds": round(seconds, 3)}
        history.append(rec)
        improved = math.isnan(score) or score > best_score
        if improved:
            best_score, best_epoch = score, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        stale = epoch + 1 - best_epoch
        finished = epoch + 1 == epochs or (tcfg.patience > 0 and stale >= tcfg.patience)
        log(f"fold {fold} seed {seed} epoch {epoch + 1}/{epochs}: loss {rec['loss']:.4f}, "
            f"val acc@4 {score:.4f}{' *' if improved else ''}, {train_seconds:.1f}s train / {seconds:.1f}s")
        if checkpoint is not None:
            _save_atomic({
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "gen_state": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "neg_gen_state": sampler.generator.get_state() if sampler is not None else None,
                "cuda_rng": torch.cuda.get_rng_state() if device == "cuda" else None,
                "history": history, "best_score": best_score, "best_epoch": best_epoch, "best_state": best_state,
                "finished": finished,
            }, checkpoint)
        if finished:
            if epoch + 1 < epochs:
                log(f"fold {fold} seed {seed}: early stop, no gain for {stale} epochs")
            break
    model.load_state_dict(best_state)
    return FitResult(model.eval(), best_score, best_epoch, history, start_epoch)


# --------------------------------------------------------------------------- the stage
_WORKER: dict = {}


def _init_worker(threads: int, tune: bool, parent: int) -> None:
    """Pool initializer: threads, allocator, and a watchdog that ends the worker if its parent dies
    (a killed stage must not leave trainings running that write into its work folder)."""
    import threading

    torch.set_num_threads(threads)
    if tune:
        tune_allocator()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _train_job(job: dict) -> dict:
    """One (fold, seed) training, in a worker or inline: fit, write the model file, return the
    figures (the model itself travels as the file)."""
    name, fold, pos, seed, cfg, device = job["name"], job["fold"], job["pos"], job["seed"], job["cfg"], job["device"]
    key = (str(job["features_dir"]), MODELS[name].cls.extra_inputs)
    if _WORKER.get("features") != key:  # a worker loads the feature table once
        _WORKER.update(features=key, data=load(job["features_dir"], MODELS[name].cls.extra_inputs))
        _WORKER["vocab"] = vocab_payload(_WORKER["data"], job["features_dir"])
    data = _WORKER["data"]
    log = lambda msg: print(f"[{name}] {msg}", flush=True)  # noqa: E731
    res = fit(name, data, fold, seed, cfg, device, job["checkpoint"], log)
    save_model_file(job["model_path"], res.model, name, {
        "fold": fold, "seed": seed, "best_score": res.best_score, "best_epoch": res.best_epoch,
        "config": job["resolved"], "vocab": _WORKER["vocab"],
    })
    return {"fold": fold, "pos": pos, "seed": seed, "best_score": res.best_score, "best_epoch": res.best_epoch,
            "history": res.history, "train_rows": int(len(data.train_rows(fold, cfg.train.max_train_rows)))}


def run_jobs(jobs: list[dict], workers: int, threads: list[int], tune: bool) -> list[dict]:
    """Run the training jobs (job i with ``threads[i]`` torch threads): jobs of one thread count
    together, inline when one worker suffices, else in a pool of spawned processes. Results in job
    order. A job's result depends only on its own seed and thread count, not on the scheduling."""
    results: dict[int, dict] = {}
    for t in dict.fromkeys(threads):  # thread counts in plan order
        idx = [i for i, ti in enumerate(threads) if ti == t]
        n = min(workers, len(idx), max(1, (os.cpu_count() or 1) // t))
        if n <= 1:
            torch.set_num_threads(t)
            results.update({i: _train_job(jobs[i]) for i in idx})
            continue
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(n, initializer=_init_worker, initargs=(t, tune, os.getpid())) as pool:
            try:
                results.update(zip(idx, pool.map(_train_job, [jobs[i] for i in idx], chunksize=1)))
            except BaseException:
                pool.terminate()
                raise
    return [results[i] for i in range(len(jobs))]


def run_model_stage(ctx) -> None:
    from .config import to_dict
    from .topk import from_scores, write_outputs

    t_start = time.perf_counter()
    name = ctx.spec.name
    cfg = ctx.cfg
    tcfg = cfg.train
    device = resolve_device(cfg.device)
    allocator = tune_allocator() if tcfg.allocator == "tuned" else "default"
    features_dir = ctx.input("features")
    data = load(features_dir, MODELS[name].cls.extra_inputs)
    n_neg = negatives(cfg, name)
    softmax = f"sampled softmax ({n_neg} negatives)" if use_sampled_softmax(n_neg, data.dims.n_cities) else "full softmax"
    resolved = to_dict(cfg)
    jobs = [
        {"name": name, "fold": fold, "pos": pos, "seed": seed, "cfg": cfg, "device": device, "features_dir": features_dir,
         "checkpoint": ctx.work / f"fold{fold}_seed{seed}.pt", "model_path": artifacts.model_file(ctx.out, fold, pos, seed),
         "resolved": resolved}
        for fold in cfg.cv.train_folds for pos, seed in enumerate(model_seeds(cfg, name))
    ]
    workers, threads = resolve_parallelism(tcfg.workers, tcfg.num_threads, device, len(jobs))
    plan = ", ".join(f"{threads.count(t)} x {t} thread(s)" for t in dict.fromkeys(threads))
    ctx.log(f"device {device}, {len(jobs)} training job(s) on {workers} worker(s) ({plan}), {softmax}, "
            f"optimizer {tcfg.optimizer}, allocator {allocator}; {data.dims.n_cities:,} cities, "
            f"{data.dims.n_countries} countries, {len(data.batch):,} feature rows")
    results = run_jobs(jobs, workers, threads, tcfg.allocator == "tuned")

    torch.set_num_threads(os.cpu_count() or 1)  # prediction: one process, every core
    fold_models: dict[int, list[NextCityModel]] = {}
    extra: dict = {"device": device, "softmax": softmax, "workers": workers, "job_threads": threads, "best_epochs": {},
                   "best_val_acc4": {}, "train_rows": {}, "history": {}}
    epoch_times: list[float] = []
    for job, r in zip(jobs, results):
        fold = r["fold"]
        model, _ = load_model_file(job["model_path"], device)
        fold_models.setdefault(fold, []).append(model)
        extra["train_rows"][str(fold)] = r["train_rows"]
        extra["best_epochs"].setdefault(str(fold), []).append(r["best_epoch"])
        extra["best_val_acc4"].setdefault(str(fold), []).append(r["best_score"])
        extra["history"][f"fold{fold}_seed{r['seed']}"] = r["history"]
        epoch_times += [h["train_seconds"] for h in r["history"]]
    any_model = next(iter(fold_models.values()))[0]
    extra["n_params"] = sum(p.numel() for p in any_model.parameters())
    extra["epoch_seconds"] = round(float(np.mean(epoch_times)), 3) if epoch_times else None

    amp = tcfg.amp and device == "cuda"
    t_pred = time.perf_counter()
    oof_parts = []
    for fold, models in fold_models.items():
        rows = data.valid_rows(fold)
        if len(rows):
            idx, prob = predict_topk(models, data.batch.take(rows), tcfg.top_k, device, amp)
            oof_parts.append(from_scores(data.utrips(rows), data.city_ids[idx], prob, name))
    oof = None
    if oof_parts:
        import polars as pl

        oof = pl.concat(oof_parts)
    rows = data.test_rows()
    all_models = [m for ms in fold_models.values() for m in ms]
    idx, prob = predict_topk(all_models, data.batch.take(rows), tcfg.top_k, device, amp)
    test = from_scores(data.utrips(rows), data.city_ids[idx], prob, name)
    extra["predict_seconds"] = round(time.perf_counter() - t_pred, 3)
    write_outputs(ctx, {name: (oof, test, time.perf_counter() - t_start, extra)})
