"""Stage runner: the pipeline's DAG, cached artifacts, manifests and atomic writes.

Every stage writes into ``artifacts/<experiment>/<stage>/`` a set of files plus ``config.yaml`` (the
whole resolved config) and ``manifest.json``. The manifest's ``key`` hashes

* the config sections the stage reads (``StageSpec.sections``),
* the *outputs* of the stages it depends on (their manifests' ``outputs_digest``),
* its code (the stage script, the package modules it names, and ``schema.py``),
* external files it reads (the official CSVs).

A stage is skipped only when the stored key equals the freshly computed one and every listed output
exists with its recorded size; ``--force`` reruns it. The stage writes into a temporary sibling
folder that is renamed into place only after ``manifest.json`` is written, so a killed stage never
leaves a half artifact that looks valid. Long stages that want to resume after a kill keep their
checkpoints in ``ctx.work`` (``artifacts/<experiment>/_work/<stage>/<key>/``), keyed the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from .config import ROOT, Config, ConfigError, dump_yaml, load_config, to_dict

PKG = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "artifacts"


def _nn_enabled(name: str) -> Callable[[Config], bool]:
    return lambda cfg: getattr(cfg.models, name).enabled


def _ranker_enabled(name: str) -> Callable[[Config], bool]:
    return lambda cfg: getattr(cfg.rankers, name).enabled


@dataclass(frozen=True)
class StageSpec:
    name: str
    script: str
    deps: tuple[str, ...]
    sections: tuple[str, ...]
    code: tuple[str, ...]  # paths under src/nextdest (files or folders)
    func: str = ""  # "module:function" taking a StageContext
    enabled: Callable[[Config], bool] = field(default=lambda cfg: True)
    # Models this stage writes (top-k tables + metrics), for the report.
    models: Callable[[Config], tuple[str, ...]] = field(default=lambda cfg: ())


NN_CODE = ("models", "train.py", "nn_data.py", "metrics.py", "topk.py", "folds.py", "device.py")
RANKER_CODE = ("rankers", "metrics.py", "topk.py", "folds.py", "device.py")

STAGE_LIST: tuple[StageSpec, ...] = (
    StageSpec("data", "pipelines/01_data.py", (), ("seed", "data"), ("data",), "nextdest.data.stage:run_data_stage"),
    StageSpec("folds", "pipelines/02_folds.py", ("data",), ("seed", "cv.n_folds"), ("folds.py",), "nextdest.folds:run_folds_stage"),
    StageSpec("features", "pipelines/03_features.py", ("data", "folds"), ("features",), ("features", "device.py"), "nextdest.features:run_features_stage"),
    StageSpec(
        "baselines", "pipelines/04_baselines.py", ("data", "features"), ("baselines", "cv.train_folds"),
        ("baselines.py", "stats.py", "metrics.py", "topk.py", "folds.py"), "nextdest.baselines:run_baselines_stage",
        models=lambda cfg: ("popular", "prev_city"),
    ),
    *(
        StageSpec(
            name, script, ("data", "features"),
            ("seed", "device", "train", f"models.{name}", "cv.train_folds"), NN_CODE, "nextdest.train:run_model_stage",
            enabled=_nn_enabled(name), models=(lambda n: lambda cfg: (n,))(name),
        )
        for name, script in (
            ("gru", "pipelines/05_gru.py"),
            ("transformer", "pipelines/06_transformer.py"),
            ("mlp", "pipelines/07_mlp.py"),
        )
    ),
    StageSpec(
        "candidates", "pipelines/08_candidates.py", ("data", "features", "baselines", "gru", "transformer", "mlp"),
        ("candidates", "cv.train_folds"), ("rankers/candidates.py", "stats.py", "topk.py", "folds.py"),
        "nextdest.rankers.candidates:run_candidates_stage",
    ),
    StageSpec(
        "xgb_ranker", "pipelines/09_xgb_ranker.py", ("data", "features", "candidates"),
        ("seed", "device", "rankers.n_folds", "rankers.max_candidates", "rankers.xgb"), RANKER_CODE,
        "nextdest.rankers:run_ranker_stage",
        enabled=_ranker_enabled("xgb"), models=lambda cfg: ("xgb_ranker",),
    ),
    StageSpec(
        "lgb_ranker", "pipelines/10_lgb_ranker.py", ("data", "features", "candidates"),
        ("seed", "device", "rankers.n_folds", "rankers.max_candidates", "rankers.lgb"), RANKER_CODE,
        "nextdest.rankers:run_ranker_stage",
        enabled=_ranker_enabled("lgb"), models=lambda cfg: ("lgb_ranker",),
    ),
    StageSpec(
        "blend", "pipelines/11_blend.py",
        ("data", "features", "baselines", "gru", "transformer", "mlp", "xgb_ranker", "lgb_ranker"),
        ("seed", "blend"), ("blend.py", "metrics.py", "topk.py"), "nextdest.blend:run_blend_stage",
        models=lambda cfg: ("blend",),
    ),
    StageSpec(
        "report", "pipelines/12_report.py",
        ("data", "baselines", "gru", "transformer", "mlp", "xgb_ranker", "lgb_ranker", "blend"),
        ("report", "cv.train_folds"), ("report.py", "submission.py", "metrics.py", "topk.py"),
        "nextdest.report:run_report_stage",
    ),
)
STAGES: dict[str, StageSpec] = {s.name: s for s in STAGE_LIST}


class StageError(RuntimeError):
    """A stage cannot run (a missing upstream artifact, bad input data...)."""


# --------------------------------------------------------------------------- hashing
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(spec: StageSpec) -> str:
    h = hashlib.sha256()
    paths = [ROOT / spec.script, PKG / "schema.py"] + [PKG / c for c in spec.code]
    for p in paths:
        files = sorted(p.rglob("*.py")) if p.is_dir() else ([p] if p.exists() else [])
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def artifacts_root() -> Path:
    """``artifacts/`` in the repo, or ``$NEXTDEST_ARTIFACTS`` (tests point it at a temp folder)."""
    env = os.environ.get("NEXTDEST_ARTIFACTS")
    return Path(env) if env else ARTIFACTS


def experiment_dir(cfg: Config) -> Path:
    return artifacts_root() / cfg.experiment


def active_deps(spec: StageSpec, cfg: Config) -> list[str]:
    """The spec's dependencies that are enabled under this config."""
    return [d for d in spec.deps if STAGES[d].enabled(cfg)]


def read_manifest(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def external_inputs(spec: StageSpec, cfg: Config) -> list[Path]:
    if spec.name == "data" and cfg.data.source == "official":
        from .data.official import official_paths

        return [p for p in official_paths(cfg).values() if p.exists()]
    return []


def stage_key(spec: StageSpec, cfg: Config) -> tuple[str, dict]:
    """The cache key of ``spec`` under ``cfg`` and what went into it."""
    exp = experiment_dir(cfg)
    inputs = {}
    for dep in active_deps(spec, cfg):
        man = read_manifest(exp / dep)
        if man is None:
            raise StageError(
                f"stage '{spec.name}' needs stage '{dep}', which has no finished artifact in {exp / dep}: "
                f"run `./run.sh --from {dep}` (or `python {STAGES[dep].script}`) first"
            )
        inputs[dep] = man["outputs_digest"]
    external = {str(p): f"{p.stat().st_size}:{sha256_file(p)}" for p in external_inputs(spec, cfg)}
    parts = {
        "stage": spec.name,
        "config": {s: to_dict(cfg.section(s)) for s in spec.sections},
        "inputs": inputs,
        "external": external,
        "code": code_digest(spec),
    }
    return sha256_json(parts), parts


def is_fresh(stage_dir: Path, key: str) -> bool:
    man = read_manifest(stage_dir)
    if man is None or man.get("key") != key:
        return False
    return all(
        (stage_dir / name).exists() and (stage_dir / name).stat().st_size == meta["bytes"]
        for name, meta in man["outputs"].items()
    )


# --------------------------------------------------------------------------- running
@dataclass
class StageContext:
    cfg: Config
    spec: StageSpec
    key: str
    exp_dir: Path
    out: Path  # temporary output folder; renamed into place on success
    work: Path  # persistent scratch (checkpoints), keyed by the stage key

    def input(self, dep: str) -> Path:
        """Folder of a finished upstream stage's artifacts."""
        if dep not in self.spec.deps:
            raise StageError(f"stage '{self.spec.name}' reads '{dep}' but does not declare it as a dependency")
        path = self.exp_dir / dep
        if read_manifest(path) is None:
            raise StageError(f"stage '{self.spec.name}': upstream stage '{dep}' has no artifact in {path}")
        return path

    def has_input(self, dep: str) -> bool:
        return dep in active_deps(self.spec, self.cfg) and read_manifest(self.exp_dir / dep) is not None

    def log(self, msg: str) -> None:
        print(f"[{self.spec.name}] {msg}", flush=True)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and (when the stage has imported it) torch; the neural stages also seed
    torch per bagging seed (train.seeds) themselves, derived from this one."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:  # importing torch costs seconds; stages that use it import it
        sys.modules["torch"].manual_seed(seed)


def run_stage(name: str, cfg: Config, fn: Callable[[StageContext], None], force: bool = False) -> Path:
    """Run stage ``name`` (or skip it when its artifact is fresh). Returns the artifact folder."""
    spec = STAGES[name]
    exp = experiment_dir(cfg)
    final = exp / name
    key, parts = stage_key(spec, cfg)
    if not force and is_fresh(final, key):
        print(f"[{name}] up to date (key {key[:12]}), skipped", flush=True)
        return final
    exp.mkdir(parents=True, exist_ok=True)
    tmp = exp / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    work = exp / "_work" / name / key[:16]
    work.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(dump_yaml(cfg))
    ctx = StageContext(cfg=cfg, spec=spec, key=key, exp_dir=exp, out=tmp, work=work)
    seed_everything(cfg.seed)
    print(f"[{name}] running (key {key[:12]}) -> {final.relative_to(ROOT) if final.is_relative_to(ROOT) else final}", flush=True)
    t0 = time.perf_counter()
    try:
        fn(ctx)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    outputs = {}
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            outputs[str(f.relative_to(tmp))] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
    manifest = {
        "stage": name,
        "experiment": cfg.experiment,
        "key": key,
        "key_parts": parts,
        "outputs": outputs,
        "outputs_digest": sha256_json({k: v["sha256"] for k, v in outputs.items() if k != "config.yaml"}),
        "seconds": round(seconds, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    old = exp / f".{name}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(exp / "_work" / name, ignore_errors=True)  # finished: checkpoints no longer needed
    print(f"[{name}] done in {seconds:.1f}s", flush=True)
    return final


def parse_stage_args(argv: list[str] | None, description: str = "") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="experiment config (default configs/base.yaml)")
    p.add_argument("--force", action="store_true", help="rerun even if the cached artifact is fresh")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=2")
    return p.parse_args(argv)


def stage_function(name: str) -> Callable[[StageContext], None]:
    """Import the function that implements stage ``name``."""
    import importlib

    module, func = STAGES[name].func.split(":")
    return getattr(importlib.import_module(module), func)


def run_pipeline(cfg: Config, names: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Run stages in order, in this process (tests, notebooks). Disabled stages are passed over."""
    out = {}
    for spec in STAGE_LIST:
        if names is not None and spec.name not in names:
            continue
        if spec.enabled(cfg):
            out[spec.name] = run_stage(spec.name, cfg, stage_function(spec.name), force=force)
    return out


def stage_main(
    name: str,
    argv: list[str] | None = None,
    description: str = "",
    after: Callable[[Config, Path], None] | None = None,
) -> int:
    """Entry point shared by every ``pipelines/NN_*.py`` script."""
    args = parse_stage_args(argv, description)
    try:
        cfg = load_config(args.config, args.overrides)
        spec = STAGES[name]
        if not spec.enabled(cfg):
            print(f"[{name}] disabled by config, nothing to do", flush=True)
            return 0
        path = run_stage(name, cfg, stage_function(name), force=args.force)
        if after is not None:
            after(cfg, path)
        return 0
    except (ConfigError, StageError) as exc:
        print(f"[{name}] error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:
        from .data.official import DataError

        if isinstance(exc, DataError):
            print(f"[{name}] data error: {exc}", file=sys.stderr, flush=True)
            return 2
        traceback.print_exc()
        return 1
