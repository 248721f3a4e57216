"""What a config section may hold: range-checked fields, and the check of a whole section.

A section is a frozen dataclass whose fields carry their types and, through :func:`rule`, the
range a value must lie in; the values themselves (defaults included) live in ``configs/base.yaml``
only. Standard library only: the models import this on machines without yaml or polars.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator


def rule(ok: Callable[[Any], bool], must: str) -> Any:
    """A dataclass field (no default) whose value must satisfy ``ok``; ``must`` says how, for the
    error message ("... must be {must}")."""
    return dataclasses.field(metadata={"rule": (ok, must)})


def at_least(n: int) -> Any:
    return rule(lambda v: v >= n, f"an integer >= {n}")


def positive() -> Any:
    return rule(lambda v: v > 0, "a number > 0")


def non_negative() -> Any:
    return rule(lambda v: v >= 0, "a number >= 0")


def fraction() -> Any:
    return rule(lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]")


def dropout() -> Any:
    return rule(lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")


def seeds() -> Any:
    return rule(lambda v: len(v) > 0 and all(x >= 0 for x in v), "a non-empty list of integers >= 0")


def problems(section: Any, prefix: str) -> Iterator[tuple[str, Any, str]]:
    """Every (dotted key, value, what it must be) of ``section`` (a dataclass, nested sections
    included) that breaks its field's rule or the section's own ``problems(prefix)`` method
    (rules across fields, e.g. heads dividing the width; it yields keys relative to the section)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from problems(value, key + ".")
        elif "rule" in f.metadata and not f.metadata["rule"][0](value):
            yield key, list(value) if isinstance(value, tuple) else value, f.metadata["rule"][1]
    own = getattr(section, "problems", None)
    if callable(own):
        for key, value, must in own(prefix):
            yield f"{prefix}{key}", value, must
