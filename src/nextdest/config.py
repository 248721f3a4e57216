"""Layered, typed, validated configuration.

``configs/base.yaml`` holds every default. An experiment file (``configs/medium.yaml``) holds only
its changes and is layered on top of base; the experiment's name is its file's stem. Dotted CLI
overrides (``train.seed=3``, ``cv.train_folds=[0,1]``) are applied last. The merged tree is checked
against the dataclasses below: an unknown key or a value of the wrong type is an error that names
the key and the file (or ``command line``) it came from. The result is frozen dataclasses.

Each section's dataclass is the single source of truth for its keys and types; base.yaml must list
every key (a test checks that it matches the dataclasses exactly).
"""

from __future__ import annotations

import copy
import re
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
BASE_CONFIG = CONFIG_DIR / "base.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the file."""


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    source: Literal["synthetic", "official"] = "synthetic"
    preset: Literal["tiny", "small", "medium", "full"] = "small"  # synthetic only
    official_dir: str = "data/raw"  # official only: folder with train_set.csv, test_set.csv[, ground_truth.csv]
    # What to do with exact duplicate rows in the official files: error, or drop them (counted, reported).
    duplicates: Literal["error", "drop"] = "error"


@dataclass(frozen=True)
class CVConfig:
    n_folds: int = 5
    # Folds whose models are trained (out-of-fold stages use only these); the summary says which.
    train_folds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class FeaturesConfig:
    engine: Literal["auto", "cpu", "gpu"] = "auto"
    n_lags: int = 5
    rare_city_min_count: int = 5  # input-side bucketing only; targets keep the full vocabulary
    rare_affiliate_min_count: int = 5
    reverse_augment: bool = False


@dataclass(frozen=True)
class BaselinesConfig:
    top_k: int = 50


@dataclass(frozen=True)
class TrainConfig:
    """Shared by every neural model (one training loop, nextdest.train)."""

    epochs: int = 6
    batch_size: int = 1024
    lr: float = 5.0e-3  # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 1.0e-4  # on weight matrices and embedding tables
    seeds: tuple[int, ...] = (0,)  # several seeds per model: predictions are averaged
    top_k: int = 50
    patience: int = 2  # early stopping on validation accuracy@4; 0 = never stop early
    workers: int = 0  # CPU: (fold, seed) trainings run in this many processes at once; 0 = one per core (CUDA: 1)
    num_threads: int = 0  # torch CPU threads per training process; 0 = cores / workers
    max_train_rows: int = 0  # 0 = all; >0 subsamples targets (smoke runs)
    # N > 0: sampled softmax with N negatives (log-Q corrected) when the vocabulary has more than
    # 2N cities, else the full softmax; 0 = always the full softmax. Prediction is always exact.
    sampled_softmax: int = 2048
    optimizer: Literal["sparse_adamw", "adamw"] = "sparse_adamw"  # sparse_adamw: row-sparse updates of large embedding tables
    allocator: Literal["tuned", "default"] = "tuned"  # tuned: glibc malloc keeps freed blocks (nextdest.perf)
    amp: bool = True  # mixed precision on CUDA (bf16; ignored on CPU)


@dataclass(frozen=True)
class GRUConfig:
    enabled: bool = True
    emb_dim: int = 64  # city/country embedding width = the tied head's width
    hidden: int = 128
    ctx_dim: int = 16  # per context field
    dropout: float = 0.1
    epochs: int = 0  # 0 = train.epochs
    sampled_softmax: int = -1  # -1 = train.sampled_softmax


@dataclass(frozen=True)
class TransformerConfig:
    enabled: bool = True
    emb_dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ctx_dim: int = 16
    dropout: float = 0.1
    causal: bool = False  # true: each token attends to earlier tokens only
    epochs: int = 0
    sampled_softmax: int = -1


@dataclass(frozen=True)
class MLPConfig:
    enabled: bool = True
    emb_dim: int = 64
    hidden: int = 256
    ctx_dim: int = 16
    dropout: float = 0.1
    epochs: int = 0
    sampled_softmax: int = -1


@dataclass(frozen=True)
class ModelsConfig:
    gru: GRUConfig = field(default_factory=GRUConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)


@dataclass(frozen=True)
class CandidatesConfig:
    per_model_k: int = 50
    transition_k: int = 20
    country_k: int = 10
    max_pool: int = 50  # candidates per trip that get features (by pool priority); >= rankers.max_candidates


@dataclass(frozen=True)
class XGBConfig:
    enabled: bool = True
    objective: Literal["rank:ndcg", "rank:pairwise", "rank:map", "binary:logistic"] = "binary:logistic"
    n_estimators: int = 800
    learning_rate: float = 0.05
    max_depth: int = 5
    max_bin: int = 64
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    early_stopping_rounds: int = 60


@dataclass(frozen=True)
class LGBConfig:
    enabled: bool = True
    n_estimators: int = 800
    learning_rate: float = 0.05
    num_leaves: int = 63
    min_child_samples: int = 20
    max_bin: int = 63
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    early_stopping_rounds: int = 60


@dataclass(frozen=True)
class RankersConfig:
    n_folds: int = 3  # folds over the out-of-fold candidate table (grouped by trip)
    max_candidates: int = 40  # candidates per trip, by pool priority (candidates stage)
    n_threads: int = 0  # 0 = every core
    xgb: XGBConfig = field(default_factory=XGBConfig)
    lgb: LGBConfig = field(default_factory=LGBConfig)


@dataclass(frozen=True)
class BlendConfig:
    top_k: int = 50
    search: Literal["coordinate", "grid"] = "coordinate"
    n_rounds: int = 3
    max_fit_trips: int = 20000  # weights are fitted on at most this many OOF trips (seeded sample); 0 = all


@dataclass(frozen=True)
class ReportConfig:
    # Which model's top-4 becomes the submission: "auto" = best CV accuracy@4 among those run.
    submit_model: str = "auto"


@dataclass(frozen=True)
class Config:
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    rankers: RankersConfig = field(default_factory=RankersConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Not a key in the files: set from the experiment file's name.
    experiment: str = "base"

    def section(self, dotted: str) -> Any:
        """``cfg.section("models.gru")`` -> that sub-config (or a scalar)."""
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj


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
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names or (cls is Config and key == "experiment"):
            dotted = f"{prefix}{key}"
            src = origin.get(dotted, "configs/base.yaml")
            known = ", ".join(sorted(n for n in names if not (cls is Config and n == "experiment")))
            raise ConfigError(f"{src}: unknown key '{dotted}' (known keys here: {known})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], f"{prefix}{f.name}", origin)
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
def _at_least(n):
    return (lambda v: v >= n), f"an integer >= {n}"


_POSITIVE = (lambda v: v > 0), "a number > 0"
_NON_NEGATIVE = (lambda v: v >= 0), "a number >= 0"
_FRACTION = (lambda v: 0.0 < v <= 1.0), "a fraction in (0, 1]"
_DROPOUT = (lambda v: 0.0 <= v < 1.0), "a fraction in [0, 1)"
_SEEDS = (lambda v: len(v) > 0 and all(x >= 0 for x in v)), "a non-empty list of integers >= 0"

# key -> (check, what it must be). Keys under models.* and rankers.{xgb,lgb} are listed per model.
RANGES: dict[str, tuple] = {
    "seed": _at_least(0),
    "features.n_lags": _at_least(1),
    "features.rare_city_min_count": _at_least(1),
    "features.rare_affiliate_min_count": _at_least(1),
    "baselines.top_k": _at_least(1),
    "train.epochs": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.lr": _POSITIVE,
    "train.weight_decay": _NON_NEGATIVE,
    "train.seeds": _SEEDS,
    "train.top_k": _at_least(1),
    "train.patience": _at_least(0),
    "train.num_threads": _at_least(0),
    "train.workers": _at_least(0),
    "train.max_train_rows": _at_least(0),
    "train.sampled_softmax": _at_least(0),
    **{f"models.{m}.{k}": _at_least(1) for m in ("gru", "transformer", "mlp") for k in ("emb_dim", "ctx_dim")},
    **{f"models.{m}.dropout": _DROPOUT for m in ("gru", "transformer", "mlp")},
    **{f"models.{m}.epochs": _at_least(0) for m in ("gru", "transformer", "mlp")},
    **{f"models.{m}.sampled_softmax": _at_least(-1) for m in ("gru", "transformer", "mlp")},
    "models.gru.hidden": _at_least(1),
    "models.mlp.hidden": _at_least(1),
    "models.transformer.n_layers": _at_least(1),
    "models.transformer.n_heads": _at_least(1),
    "candidates.per_model_k": _at_least(1),
    "candidates.transition_k": _at_least(0),
    "candidates.country_k": _at_least(0),
    "candidates.max_pool": _at_least(1),
    "rankers.n_folds": _at_least(2),
    "rankers.max_candidates": _at_least(1),
    "rankers.n_threads": _at_least(0),
    **{f"rankers.{r}.{k}": rule for r in ("xgb", "lgb") for k, rule in (
        ("n_estimators", _at_least(1)), ("learning_rate", _POSITIVE), ("max_bin", _at_least(2)),
        ("subsample", _FRACTION), ("colsample_bytree", _FRACTION), ("early_stopping_rounds", _at_least(1)))},
    "rankers.xgb.max_depth": _at_least(1),
    "rankers.lgb.num_leaves": _at_least(2),
    "rankers.lgb.min_child_samples": _at_least(0),
    "blend.top_k": _at_least(1),
    "blend.n_rounds": _at_least(1),
    "blend.max_fit_trips": _at_least(0),
}


def model_names(cfg: Config) -> list[str]:
    """The models a run of ``cfg`` produces (the names report.submit_model may take)."""
    names = ["popular", "prev_city"]
    names += [m for m in ("gru", "transformer", "mlp") if getattr(cfg.models, m).enabled]
    names += [f"{r}_ranker" for r in ("xgb", "lgb") if getattr(cfg.rankers, r).enabled]
    return names + ["blend"]


def validate(cfg: Config, origin: dict | None = None) -> None:
    """Ranges and names, checked at load so a bad value stops before any stage runs. The error
    names the key, its value and the file (or ``command line``) that set it."""
    origin = origin or {}

    def fail(key: str, value, must: str) -> None:
        raise ConfigError(f"{origin.get(key, 'configs/base.yaml')}: key '{key}' = {value!r}: must be {must}")

    for key, (ok, must) in RANGES.items():
        value = cfg.section(key)
        if not ok(value):
            fail(key, list(value) if isinstance(value, tuple) else value, must)
    t = cfg.models.transformer
    if t.emb_dim % t.n_heads:
        fail("models.transformer.n_heads", t.n_heads, f"a divisor of models.transformer.emb_dim ({t.emb_dim})")
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
