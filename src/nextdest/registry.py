"""The registry of pluggable components: neural next-city models and candidate rankers.

A component registers itself once, in its own module, with its name, its config section and the
section's dataclass::

    @register_model("mine", MineConfig)        # nextdest/models/mine.py -> section models.mine
    class Mine(NextCityModel): ...

    @register_ranker("cat_ranker", "cat", CatConfig)   # nextdest/rankers/cat.py -> section rankers.cat
    class CatRanker(Ranker): ...

Everything else is derived from here by kind: the config's ``models`` and ``rankers`` sections
(:mod:`nextdest.config`), the stage graph (:mod:`nextdest.stages`: one stage per component, and
the inputs of the candidates, blend and report stages), model files and ``recommend``. The modules
are found by importing every module of ``nextdest.models`` and ``nextdest.rankers``; the order of
the components (stage order, candidate feature columns, blend components) is the order in which
``configs/base.yaml`` lists their sections.

Standard library only (the models import this on machines without yaml or polars).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = {"model": "nextdest.models", "ranker": "nextdest.rankers"}
SECTION_PARENT = {"model": "models", "ranker": "rankers"}


@dataclass(frozen=True)
class Component:
    kind: str  # "model" (a neural network trained by nextdest.train) | "ranker" (nextdest.rankers)
    name: str  # its stage's name and its model name in every top-k table and summary
    section: str  # its config section: "models.<key>" or "rankers.<key>"
    config: type  # the section's dataclass (types and ranges; the values live in configs/base.yaml)
    cls: type  # the network (nextdest.models.base.NextCityModel) or the ranker (nextdest.rankers.base.Ranker)

    @property
    def key(self) -> str:
        """The section's key under its parent (``mine`` of ``models.mine``)."""
        return self.section.rsplit(".", 1)[1]

    @property
    def module_file(self) -> Path:
        return Path(sys.modules[self.cls.__module__].__file__)


_REGISTRY: dict[str, Component] = {}


def register(kind: str, name: str, key: str, config: type):
    """Class decorator: register ``cls`` as component ``name`` of ``kind`` with config section
    ``<models|rankers>.<key>`` typed by ``config``."""
    if kind not in PACKAGES:
        raise ValueError(f"unknown component kind {kind!r}; known: {', '.join(PACKAGES)}")

    def deco(cls: type) -> type:
        old = _REGISTRY.get(name)
        if old is not None and old.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"two components named {name!r}: {old.cls.__module__}.{old.cls.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}")
        _REGISTRY[name] = Component(kind, name, f"{SECTION_PARENT[kind]}.{key}", config, cls)
        return cls

    return deco


def discover(kind: str) -> dict[str, Component]:
    """Import every module of ``kind``'s package (so every component has registered) and return
    the components of that kind by name, in registration order."""
    pkg = importlib.import_module(PACKAGES[kind])
    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return {n: c for n, c in _REGISTRY.items() if c.kind == kind}


def components(kind: str) -> tuple[Component, ...]:
    """The components of ``kind`` in the order ``configs/base.yaml`` lists their sections (a
    component without a section there is a config error naming it)."""
    from .config import base_section_order  # late: config builds its sections from this module

    found = discover(kind)
    order = base_section_order(SECTION_PARENT[kind])
    return tuple(sorted(found.values(), key=lambda c: (order.get(c.key, len(order)), c.name)))


def component(name: str) -> Component:
    """The component called ``name`` (a model or a ranker)."""
    for kind in PACKAGES:
        if name in discover(kind):
            return _REGISTRY[name]
    known = sorted(n for kind in PACKAGES for n in discover(kind))
    raise KeyError(f"no model or ranker named {name!r}; registered: {', '.join(known)}")
