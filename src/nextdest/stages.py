"""Stage runner: the pipeline's DAG, cached artifacts, manifests and atomic writes.

Every stage writes into ``artifacts/<experiment>/<stage>/`` a set of files plus ``config.yaml`` (the
whole resolved config) and ``manifest.json``, which records every output's size and SHA-256. The
manifest's ``key`` hashes

* the config sections the stage reads (``StageSpec.sections``),
* the *content* of the stages it depends on (their manifests' ``outputs_digest``),
* its code (the stage script and every package module its stage function imports, directly or
  through other package modules; for a model or ranker stage also the component's own module),
* external files it reads (the official CSVs),
* runtime settings that change its results (``StageSpec.runtime``: the resolved thread counts of
  torch and XGBoost).

``outputs_digest`` is content-addressed and ignores what varies between identical builds: JSON
outputs are hashed with their volatile fields (timings, hostnames, dates: :data:`VOLATILE_KEY`)
removed, and views (figures, markdown summaries: :data:`VIEW_SUFFIXES`) are left out. A forced
rebuild with identical outputs therefore reruns nothing after it.

A stage is skipped only when the stored key equals the freshly computed one *and* every recorded
output still hashes to its manifest entry; otherwise it reruns and says why (which config section,
upstream stage, code or file changed; which output is missing or damaged). ``--force`` reruns it.
Before a stage runs, its upstream artifacts are checked the same way, so a damaged input is an error
naming the file, not a crash further on. The stage writes into a temporary sibling folder that is
renamed into place only after ``manifest.json`` is written, so a killed stage never leaves a half
artifact that looks valid; temporary folders of runs that died are removed at the next run of that
stage. Long stages that want to resume after a kill keep their checkpoints in ``ctx.work``
(``artifacts/<experiment>/_work/<stage>/<key>/``), keyed the same way. Every run holds the
experiment's lock (:mod:`nextdest.lock`): one run per experiment at a time.

The stage graph (:data:`STAGE_LIST`) is derived from the registry (:mod:`nextdest.registry`): one
stage per registered model and per registered ranker, and the candidates, blend and report stages
read every stage before them that writes top-k tables. No stage is named here but the fixed ones.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from . import registry
from .config import ROOT, Config, ConfigError, dump_yaml, load_config, to_dict
from .lock import LockError, experiment_lock
from .perf import peak_rss_mib, reset_peak_rss, resolve_parallelism

PKG = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "artifacts"


def _enabled(section: str) -> Callable[[Config], bool]:
    return lambda cfg: cfg.section(section).enabled


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str  # the fixed stages' own name; "model" or "ranker" for a registered component
    script: str  # pipelines/NN_<kind>.py (a model or ranker script takes the stage's name first)
    deps: tuple[str, ...]
    sections: tuple[str, ...]
    func: str  # "module:function" taking a StageContext
    enabled: Callable[[Config], bool] = field(default=lambda cfg: True)
    # Settings resolved at run time that change the stage's results (part of the key when not empty).
    runtime: Callable[[Config], dict] = field(default=lambda cfg: {})
    modules: tuple[str, ...] = ()  # package modules it runs that its function does not import (the component's)
    topk: bool = False  # writes top-k tables and metrics.json (an input of candidates, blend and report)

    @property
    def command(self) -> list[str]:
        """The script and its arguments (``pipelines/05_model.py NAME`` for a model)."""
        return [self.script] if self.kind == self.name else [self.script, self.name]


def _torch_threads(cfg: Config, section: str) -> dict:
    """CPU results of the neural stages depend on torch's thread count: the threads of each training
    job (train.num_threads, 0 = the cores divided among train.workers) and of prediction (every
    core). The number of workers itself does not change results. ``section``: the model's config
    section, whose ``seeds`` (empty: train.seeds) set the number of jobs with the folds."""
    n_jobs = len(cfg.cv.train_folds) * len(cfg.section(section).seeds or cfg.train.seeds)
    device = "cuda" if cfg.device == "cuda" else "cpu"  # (auto on a GPU machine: the CPU threads barely matter)
    _, threads = resolve_parallelism(cfg.train.workers, cfg.train.num_threads, device, n_jobs)
    return {"torch_threads": threads[0] if len(set(threads)) == 1 else threads, "predict_threads": os.cpu_count() or 1}


def _stage_list() -> tuple[StageSpec, ...]:
    """The pipeline: the fixed stages, one stage per registered model and ranker, in order."""
    specs = [
        StageSpec("data", "data", "pipelines/01_data.py", (), ("seed", "data"), "nextdest.data.stage:run_data_stage"),
        StageSpec("folds", "folds", "pipelines/02_folds.py", ("data",), ("seed", "cv.n_folds"), "nextdest.folds:run_folds_stage"),
        StageSpec("features", "features", "pipelines/03_features.py", ("data", "folds"), ("features",),
                  "nextdest.features:run_features_stage"),
        StageSpec("baselines", "baselines", "pipelines/04_baselines.py", ("data", "features"), ("baselines", "cv.train_folds"),
                  "nextdest.baselines:run_baselines_stage", topk=True),
    ]
    for c in registry.components("model"):
        specs.append(StageSpec(
            c.name, "model", "pipelines/05_model.py", ("data", "features"),
            ("seed", "device", "train", c.section, "cv.train_folds"), "nextdest.train:run_model_stage",
            enabled=_enabled(c.section), runtime=lambda cfg, s=c.section: _torch_threads(cfg, s), modules=(c.cls.__module__,), topk=True,
        ))
    specs.append(StageSpec(
        "candidates", "candidates", "pipelines/06_candidates.py", ("data", "features", *(s.name for s in specs if s.topk)),
        ("candidates", "cv.train_folds"), "nextdest.rankers.candidates:run_candidates_stage",
    ))
    for c in registry.components("ranker"):
        specs.append(StageSpec(
            c.name, "ranker", "pipelines/07_ranker.py", ("data", "features", "candidates"),
            ("seed", "device", "rankers.n_folds", "rankers.max_candidates", c.section), "nextdest.rankers:run_ranker_stage",
            enabled=_enabled(c.section), runtime=c.cls.runtime, modules=(c.cls.__module__,), topk=True,
        ))
    topk = tuple(s.name for s in specs if s.topk)
    specs.append(StageSpec("blend", "blend", "pipelines/08_blend.py", ("data", "features", *topk), ("seed", "blend"),
                           "nextdest.blend:run_blend_stage", topk=True))
    specs.append(StageSpec("report", "report", "pipelines/09_report.py", ("data", "features", *topk, "blend"),
                           ("report", "cv.train_folds"), "nextdest.report:run_report_stage"))
    return tuple(specs)


STAGE_LIST: tuple[StageSpec, ...] = _stage_list()
STAGES: dict[str, StageSpec] = {s.name: s for s in STAGE_LIST}


def upstream_topk(name: str) -> tuple[str, ...]:
    """The top-k stages whose outputs stage ``name`` reads, directly or through other stages, in
    stage order: none for the baselines and the neural models, the baselines and every model (through
    the candidates) for a ranker, every top-k stage before it for the blend. A model of a stage with
    any is built from other models' outputs."""
    seen: set[str] = set()
    todo = list(STAGES[name].deps)
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo += STAGES[dep].deps
    return tuple(s.name for s in STAGE_LIST if s.topk and s.name in seen)


def model_names(cfg: Config) -> list[str]:
    """The models a run of ``cfg`` produces, in stage order (the names report.submit_model may take)."""
    from .baselines import BASELINES

    return [*BASELINES, *(s.name for s in STAGE_LIST if s.kind in ("model", "ranker") and s.enabled(cfg)), "blend"]


class StageError(RuntimeError):
    """A stage cannot run (a missing upstream artifact, bad input data...)."""


# --------------------------------------------------------------------------- hashing
# JSON keys whose values change between two builds of identical content (timings, provenance).
VOLATILE_KEY = re.compile(r"(^|_)(seconds|created|started|finished|timestamp|hostname|host|elapsed)$")
# Human-facing views of the other outputs: recorded and checked, but not part of outputs_digest.
VIEW_SUFFIXES = (".png", ".md")
# Written by the runner itself, not by the stage: not part of outputs_digest.
RUNNER_FILES = ("config.yaml", "manifest.json")


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def strip_volatile(obj):
    """``obj`` (parsed JSON) without the keys that :data:`VOLATILE_KEY` matches, at any depth."""
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def output_entry(path: Path) -> dict:
    """The manifest entry of one output file: bytes and SHA-256 of the file (integrity), plus for a
    JSON file ``content``, the hash of its non-volatile fields (what downstream keys see)."""
    entry = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if path.suffix == ".json":
        try:
            entry["content"] = sha256_json(strip_volatile(json.loads(path.read_text())))
        except (ValueError, UnicodeDecodeError):
            pass  # not JSON after all: its bytes are its content
    return entry


def outputs_digest(outputs: dict[str, dict]) -> str:
    """The content digest of a stage's outputs (see the module docstring)."""
    return sha256_json({
        name: meta.get("content", meta["sha256"])
        for name, meta in outputs.items()
        if name not in RUNNER_FILES and not name.endswith(VIEW_SUFFIXES)
    })


def _module_file(name: str) -> Path | None:
    """The file of package module ``name`` (``nextdest.x.y``), or None when it is not one."""
    parts = name.split(".")
    if parts[0] != PKG.name:
        return None
    base = PKG.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str, path: Path) -> set[str]:
    """The modules that module ``name`` (at ``path``) imports anywhere in its code, as absolute names
    (``from .x import y`` gives both ``pkg.x`` and ``pkg.x.y``, which may be a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return out


def code_files(spec: StageSpec) -> list[Path]:
    """Every package file a stage runs: its function's module and, transitively, every package
    module imported from there (the packages' ``__init__`` files included), plus the component's
    own module. The cache key hashes them, so no list is kept by hand."""
    todo = [spec.func.split(":")[0], *spec.modules]
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))]
        todo += parents + sorted(_imports(name, path))
    return sorted(set(seen.values()))


def code_digest(spec: StageSpec) -> str:
    h = hashlib.sha256()
    for f in [ROOT / spec.script, *code_files(spec)]:
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
        man = json.loads((stage_dir / "manifest.json").read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError, UnicodeDecodeError):
        return None
    return man if isinstance(man, dict) and isinstance(man.get("outputs"), dict) else None


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
                f"run `./run.sh --from {dep}` (or `python {' '.join(STAGES[dep].command)}`) first"
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
    runtime = spec.runtime(cfg)
    if runtime:
        parts["runtime"] = runtime
    return sha256_json(parts), parts


def damaged_outputs(stage_dir: Path, man: dict) -> list[str]:
    """Each output the manifest lists that is missing or no longer hashes to its entry."""
    problems = []
    for name, meta in man["outputs"].items():
        path = stage_dir / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != meta.get("bytes"):
            problems.append(f"{name} has {path.stat().st_size:,} bytes, its manifest says {meta.get('bytes'):,}")
        elif sha256_file(path) != meta.get("sha256"):
            problems.append(f"{name} does not hash to its manifest entry (changed or damaged since it was written)")
    return problems


def key_changes(old: dict, new: dict) -> str:
    """What differs between two manifests' ``key_parts``, in words."""
    if not old:
        return "the cache key changed"
    said = []
    cfg_old, cfg_new = old.get("config", {}), new.get("config", {})
    if sections := [s for s in sorted(set(cfg_old) | set(cfg_new)) if cfg_old.get(s) != cfg_new.get(s)]:
        said.append(f"config {', '.join(sections)} changed")
    in_old, in_new = old.get("inputs", {}), new.get("inputs", {})
    if deps := [d for d in sorted(set(in_old) | set(in_new)) if in_old.get(d) != in_new.get(d)]:
        said.append(f"the content of upstream stage {', '.join(deps)} changed")
    if old.get("code") != new.get("code"):
        said.append("its code changed")
    if old.get("external") != new.get("external"):
        said.append("its input files changed")
    rt_old, rt_new = old.get("runtime", {}), new.get("runtime", {})
    if rt_old != rt_new:
        said.append("runtime " + ", ".join(f"{k} {rt_old.get(k)} -> {rt_new.get(k)}"
                                           for k in sorted(set(rt_old) | set(rt_new)) if rt_old.get(k) != rt_new.get(k)))
    return "; ".join(said) or "the cache key changed"


def why_stale(stage_dir: Path, key: str, parts: dict) -> str | None:
    """None when the artifact in ``stage_dir`` is fresh for ``key``, else why it must be rebuilt."""
    man = read_manifest(stage_dir)
    if man is None:
        return "no finished artifact" if not (stage_dir / "manifest.json").exists() else "its manifest is unreadable"
    if man.get("key") != key:
        return key_changes(man.get("key_parts", {}), parts)
    problems = damaged_outputs(stage_dir, man)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return problems[0] + more
    return None


def check_inputs(spec: StageSpec, cfg: Config) -> None:
    """Raise a StageError when an upstream artifact this stage reads is damaged."""
    exp = experiment_dir(cfg)
    for dep in active_deps(spec, cfg):
        man = read_manifest(exp / dep)
        problems = damaged_outputs(exp / dep, man) if man is not None else []
        if problems:
            raise StageError(
                f"stage '{spec.name}' reads stage '{dep}', whose artifact is damaged: {exp / dep / problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                + f"; rebuild it with `./run.sh --from {dep}`"
            )


def remove_dead_temps(exp: Path, name: str, log) -> None:
    """Remove the temporary folders of ``name`` left by runs that died (under the experiment's
    lock, every such folder not this process's is one)."""
    for path in sorted([*exp.glob(f".{name}.tmp-*"), *exp.glob(f".{name}.old-*")]):
        if path.name.rsplit("-", 1)[-1] != str(os.getpid()):
            shutil.rmtree(path, ignore_errors=True)
            log(f"removed {path.name}, left by a run that did not finish")


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

    def topk_inputs(self) -> dict[str, Path]:
        """Stage name -> folder of every finished upstream stage that writes top-k tables (the
        baselines, each model and ranker...), in stage order."""
        return {d: self.input(d) for d in self.spec.deps if STAGES[d].topk and self.has_input(d)}

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
    """Run stage ``name`` (or skip it when its artifact is fresh). Returns the artifact folder.
    Holds the experiment's lock (re-entrant: a caller that holds it already keeps it)."""
    exp = experiment_dir(cfg)
    with experiment_lock(exp):
        return _run_stage_locked(name, cfg, fn, force)


def _run_stage_locked(name: str, cfg: Config, fn: Callable[[StageContext], None], force: bool) -> Path:
    spec = STAGES[name]
    exp = experiment_dir(cfg)
    final = exp / name
    log = lambda msg: print(f"[{name}] {msg}", flush=True)  # noqa: E731
    remove_dead_temps(exp, name, log)
    key, parts = stage_key(spec, cfg)
    why = "forced (--force)" if force else why_stale(final, key, parts)
    if why is None:
        log(f"up to date (key {key[:12]}), skipped")
        return final
    check_inputs(spec, cfg)
    if final.exists():
        log(f"rebuilding: {why}")
    tmp = exp / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    work = exp / "_work" / name / key[:16]
    work.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(dump_yaml(cfg))
    ctx = StageContext(cfg=cfg, spec=spec, key=key, exp_dir=exp, out=tmp, work=work)
    seed_everything(cfg.seed)
    print(f"[{name}] running (key {key[:12]}) -> {final.relative_to(ROOT) if final.is_relative_to(ROOT) else final}", flush=True)
    reset_peak_rss()
    t0, cpu0 = time.perf_counter(), os.times()
    try:
        fn(ctx)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds, cpu1 = time.perf_counter() - t0, os.times()
    outputs = {str(f.relative_to(tmp)): output_entry(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
    manifest = {
        "stage": name,
        "experiment": cfg.experiment,
        "key": key,
        "key_parts": parts,
        "outputs": outputs,
        "outputs_digest": outputs_digest(outputs),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(sum(b - a for a, b in zip(cpu0[:4], cpu1[:4])), 3),  # user + system, children included
        "peak_rss_mib": peak_rss_mib(),  # this process's peak while the stage ran
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    old = exp / f".{name}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(exp / "_work" / name, ignore_errors=True)  # finished: checkpoints no longer needed
    print(f"[{name}] done in {seconds:.1f}s (peak RSS {manifest['peak_rss_mib']:,.0f} MiB)", flush=True)
    return final


def parse_stage_args(argv: list[str] | None, description: str = "", names: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if names:
        p.add_argument("name", choices=names, help="which stage of this kind")
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
    """Run stages in order, in this process (tests, notebooks), holding the experiment's lock
    throughout. Disabled stages are passed over."""
    out = {}
    with experiment_lock(experiment_dir(cfg)):
        for spec in STAGE_LIST:
            if names is not None and spec.name not in names:
                continue
            if spec.enabled(cfg):
                out[spec.name] = run_stage(spec.name, cfg, stage_function(spec.name), force=force)
    return out


def stage_main(
    kind: str,
    argv: list[str] | None = None,
    description: str = "",
    after: Callable[[Config, Path], None] | None = None,
) -> int:
    """Entry point shared by every ``pipelines/NN_*.py`` script: ``kind`` is the stage's name, or
    the kind of a registered component (``model``, ``ranker``), whose name is then the script's
    first argument."""
    names = [s.name for s in STAGE_LIST if s.kind == kind and s.name != kind]
    args = parse_stage_args(argv, description, names)
    name = args.name if names else kind
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
    except (ConfigError, StageError, LockError) as exc:
        print(f"[{name}] error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:
        from .data.official import DataError

        if isinstance(exc, DataError):
            print(f"[{name}] data error: {exc}", file=sys.stderr, flush=True)
            return 2
        traceback.print_exc()
        return 1
