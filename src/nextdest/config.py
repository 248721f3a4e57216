"""Layered, typed, validated configuration.

``configs/base.yaml`` holds every default, and is the only place that does. An experiment file
(``configs/medium.yaml``) holds only its changes and is layered on top of base; the experiment's
name is its file's stem. Dotted CLI overrides (``train.seed=3``, ``cv.train_folds=[0,1]``) are
applied last. The merged tree is checked against the dataclasses below, which declare each key's
type and range (:mod:`nextdest.sections`) but no value: an unknown key, a missing one or a value of
the wrong type or out of range is an error that names the key and the file (or ``command line``)
it came from. The result is frozen dataclasses.

The ``models`` and ``rankers`` sections hold one sub-section per registered component
(:mod:`nextdest.registry`), typed by the dataclass the component registered with.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from . import registry
from .sections import at_least, non_negative, positive, problems, rule, seeds

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
BASE_CONFIG = CONFIG_DIR / "base.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the file."""


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    source: Literal["synthetic", "official"]
    preset: Literal["tiny", "small", "medium", "full"]  # synthetic only
    official_dir: str  # official only: folder with train_set.csv, test_set.csv[, ground_truth.csv]
    # What to do with exact duplicate rows in the official files: error, or drop them (counted, reported).
    duplicates: Literal["error", "drop"]


@dataclass(frozen=True)
class CVConfig:
    n_folds: int
    # Folds whose models are trained (out-of-fold stages use only these); the summary says which.
    train_folds: tuple[int, ...]


@dataclass(frozen=True)
class FeaturesConfig:
    engine: Literal["auto", "cpu", "gpu"]
    n_lags: int = at_least(1)
    rare_city_min_count: int = at_least(1)  # input-side bucketing only; targets keep the full vocabulary
    rare_affiliate_min_count: int = at_least(1)
    reverse_augment: bool


@dataclass(frozen=True)
class BaselinesConfig:
    top_k: int = at_least(1)


@dataclass(frozen=True)
class TrainConfig:
    """Shared by every neural model (one training loop, nextdest.train)."""

    epochs: int = at_least(1)
    batch_size: int = at_least(1)
    lr: float = positive()  # peak of the one-cycle schedule (AdamW)
    weight_decay: float = non_negative()  # on weight matrices and embedding tables
    seeds: tuple[int, ...] = seeds()  # several seeds per model: predictions are averaged
    top_k: int = at_least(1)
    patience: int = at_least(0)  # early stopping on validation accuracy@4; 0 = never stop early
    workers: int = at_least(0)  # CPU: (fold, seed) trainings run in this many processes at once; 0 = one per core (CUDA: 1)
    num_threads: int = at_least(0)  # torch CPU threads per training process; 0 = cores / workers
    max_train_rows: int = at_least(0)  # 0 = all; >0 subsamples targets (smoke runs)
    # N > 0: sampled softmax with N negatives (log-Q corrected) when the vocabulary has more than
    # 2N cities, else the full softmax; 0 = always the full softmax. Prediction is always exact.
    sampled_softmax: int = at_least(0)
    optimizer: Literal["sparse_adamw", "adamw"]  # sparse_adamw: row-sparse updates of large embedding tables
    allocator: Literal["tuned", "default"]  # tuned: glibc malloc keeps freed blocks (nextdest.perf)
    amp: bool  # mixed precision on CUDA (bf16; ignored on CPU)


@dataclass(frozen=True)
class CandidatesConfig:
    per_model_k: int = at_least(1)
    transition_k: int = at_least(0)
    country_k: int = at_least(0)
    max_pool: int = at_least(1)  # candidates per trip that get features (by pool priority); >= rankers.max_candidates
    embed_dim: int = at_least(0)  # spectral embedding of the city graph for emb_* features; 0 = off
    geo_epochs: int = at_least(0)  # epochs of the learned 2-D city map behind the geo_* features (rankers/geo.py); 0 = off
    geo_k: int = at_least(0)  # the map's best cities after the last stay added to the pool (with geo_epochs > 0)
    backoff: bool  # the country back-off features bo_last, t1_smooth, cpop_month_lift, cpop_market_lift
    backoff_prior: float = non_negative()  # weight of the country back-off in the smoothed transition share t1_smooth


@dataclass(frozen=True)
class RankersShared:
    """The keys of ``rankers`` shared by every ranker; each registered ranker adds its section."""

    n_folds: int = at_least(2)  # folds over the out-of-fold candidate table (grouped by trip)
    max_candidates: int = at_least(1)  # candidates per trip, by pool priority (candidates stage)
    n_threads: int = at_least(0)  # 0 = every core


@dataclass(frozen=True)
class BlendConfig:
    top_k: int = at_least(1)
    search: Literal["coordinate", "grid"]
    n_rounds: int = at_least(1)
    max_fit_trips: int = at_least(0)  # weights are fitted on at most this many OOF trips (seeded sample); 0 = all


@dataclass(frozen=True)
class ReportConfig:
    # Which model's top-4 becomes the submission: "auto" = best CV accuracy@4 among those run, where
    # a model built from other models' outputs (a ranker, the blend) must beat each of them by min_gain.
    submit_model: str
    min_gain: float = non_negative()
    # Upper edges of the buckets of the true city's train frequency (accuracy@4 per bucket):
    # [5, 20, 100, 2000] -> <=5, 6-20, 21-100, 101-2000, >2000.
    buckets: tuple[int, ...] = rule(lambda v: len(v) > 0 and v[0] >= 0 and all(a < b for a, b in zip(v, v[1:])),
                                    "a non-empty, strictly increasing list of integers >= 0")


@dataclass(frozen=True)
class Config:
    seed: int = at_least(0)
    device: Literal["auto", "cpu", "cuda"]
    data: DataConfig
    cv: CVConfig
    features: FeaturesConfig
    baselines: BaselinesConfig
    train: TrainConfig
    models: Any  # ModelsConfig: one section per registered model (models_config())
    candidates: CandidatesConfig
    rankers: Any  # RankersConfig: RankersShared + one section per registered ranker (rankers_config())
    blend: BlendConfig
    report: ReportConfig
    # Not a key in the files: set from the experiment file's name.
    experiment: str = "base"

    def section(self, dotted: str) -> Any:
        """``cfg.section("train.lr")`` / ``cfg.section(component.section)`` -> that sub-config (or a scalar)."""
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj


@functools.lru_cache(maxsize=None)
def base_section_order(parent: str) -> dict[str, int]:
    """Position of each sub-section of ``parent`` (``models``, ``rankers``) in base.yaml."""
    data = _read_yaml(BASE_CONFIG).get(parent) or {}
    return {k: i for i, (k, v) in enumerate(data.items()) if isinstance(v, dict)}


@functools.lru_cache(maxsize=None)
def models_config() -> type:
    """The ``models`` section's dataclass: one field per registered model, typed by its config."""
    return _registered_section("ModelsConfig", "model", ())


@functools.lru_cache(maxsize=None)
def rankers_config() -> type:
    """The ``rankers`` section's dataclass: the shared keys plus one field per registered ranker."""
    return _registered_section("RankersConfig", "ranker", (RankersShared,))


def _registered_section(name: str, kind: str, bases: tuple) -> type:
    cls = dataclasses.make_dataclass(name, [(c.key, c.config) for c in registry.components(kind)], bases=bases, frozen=True)
    cls.__module__ = __name__  # picklable (configs travel to the training workers): see __getattr__
    return cls


def __getattr__(name: str) -> Any:
    """``nextdest.config.ModelsConfig`` / ``RankersConfig``, built from the registry on first use."""
    if name == "ModelsConfig":
        return models_config()
    if name == "RankersConfig":
        return rankers_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    if cls is Config:
        hints.update(models=models_config(), rankers=rankers_config())
    return hints


# --------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, upd: dict, origin: dict, source: str, prefix: str = "") -> dict:
    """Deep-merge ``upd`` into ``base``; ``origin`` remembers which file set each dotted key."""
    out = copy.deepcopy(base)
    for key, val in upd.items():
        dotted = f"{prefix}{key}"
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val, origin, source, dotted + ".")
        else:
            out[key] = copy.deepcopy(val)
            origin[dotted] = source
            if isinstance(val, dict):
                for sub in _walk_keys(val, dotted + "."):
                    origin[sub] = source
    return out


def _walk_keys(d: dict, prefix: str):
    for k, v in d.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _walk_keys(v, f"{prefix}{k}.")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001). The value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"command line: override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"command line: override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"command line: override {text!r}: value is not valid YAML: {exc}") from None
    return key.split("."), value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, origin: dict) -> Any:
    """Check ``value`` against type ``tp`` and convert it (lists -> tuples, ints -> floats)."""
    src = origin.get(key, "configs/base.yaml")
    where = f"{src}: key '{key}'"
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping (section), got {value!r}")
        return _build(tp, value, origin, key + ".")
    org = typing.get_origin(tp)
    if org is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where} = {value!r}: must be one of {', '.join(map(repr, choices))}")
        return value
    if org is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: must be a list of {_type_name(item_tp)}")
        return tuple(_convert(v, item_tp, f"{key}[{i}]", {**origin, f"{key}[{i}]": src}) for i, v in enumerate(value))
    if org in (typing.Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            if alt is type(None) and value is None:
                return None
            try:
                return _convert(value, alt, key, origin)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where} = {value!r}: wrong type ({'; '.join(errors)})")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}: must be an integer")
        return value
    if tp is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-3" as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r}: must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: must be a string")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover - programming error


def _build(cls: type, data: dict, origin: dict, prefix: str = "") -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not (cls is Config and f.name == "experiment")}
    for key in data:
        if key not in names:
            dotted = f"{prefix}{key}"
            src = origin.get(dotted, "configs/base.yaml")
            raise ConfigError(f"{src}: unknown key '{dotted}' (known keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], f"{prefix}{f.name}", origin)
        elif f.name in names:
            raise ConfigError(f"configs/base.yaml: key '{prefix}{f.name}' is missing: every key needs its default "
                              f"value there ({cls.__name__}.{f.name})")
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``base.yaml``, layer the experiment file and the overrides, validate, freeze."""
    path = Path(path) if path else BASE_CONFIG
    origin: dict[str, str] = {}
    base_data = _read_yaml(BASE_CONFIG)
    merged = _merge({}, base_data, origin, _display(BASE_CONFIG))
    if path.resolve() != BASE_CONFIG.resolve():
        merged = _merge(merged, _read_yaml(path), origin, _display(path))
    for text in overrides:
        keys, value = parse_override(text)
        upd: dict = {}
        cur = upd
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        cur[keys[-1]] = value
        merged = _merge(merged, upd, origin, "command line")
    cfg = _build(Config, merged, origin)
    cfg = dataclasses.replace(cfg, experiment=path.stem)
    _check(cfg)
    validate(cfg, origin)
    return cfg


def _check(cfg: Config) -> None:
    """Cross-field rules."""
    if cfg.cv.n_folds < 2:
        raise ConfigError(f"key 'cv.n_folds' = {cfg.cv.n_folds}: need at least 2 folds")
    bad = [f for f in cfg.cv.train_folds if not 0 <= f < cfg.cv.n_folds]
    if bad or not cfg.cv.train_folds:
        raise ConfigError(f"key 'cv.train_folds' = {list(cfg.cv.train_folds)}: each must be in 0..{cfg.cv.n_folds - 1}, at least one")
    if len(set(cfg.cv.train_folds)) != len(cfg.cv.train_folds):
        raise ConfigError(f"key 'cv.train_folds' = {list(cfg.cv.train_folds)}: repeated fold")
    if cfg.rankers.max_candidates > cfg.candidates.max_pool:
        raise ConfigError(f"key 'rankers.max_candidates' = {cfg.rankers.max_candidates}: more than the candidates stage "
                          f"gives features to (candidates.max_pool = {cfg.candidates.max_pool}); raise that too")


# --------------------------------------------------------------------------- ranges and names
def validate(cfg: Config, origin: dict | None = None) -> None:
    """Ranges (each field's rule, each section's own rules) and names, checked at load so a bad
    value stops before any stage runs. The error names the key, its value and the file (or
    ``command line``) that set it."""
    from .stages import model_names  # late: the stage graph is built from the registry and this module

    origin = origin or {}

    def fail(key: str, value, must: str) -> None:
        raise ConfigError(f"{origin.get(key, 'configs/base.yaml')}: key '{key}' = {value!r}: must be {must}")

    for key, value, must in problems(cfg, ""):
        fail(key, value, must)
    names = model_names(cfg)
    if cfg.report.submit_model != "auto" and cfg.report.submit_model not in names:
        fail("report.submit_model", cfg.report.submit_model, f"'auto' or an enabled model: {', '.join(names)}")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def to_dict(obj: Any) -> Any:
    """Plain-data view (tuples as lists) for hashing and saving."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
