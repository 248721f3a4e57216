"""Running a LazyFrame on the polars engine the config chose, with an honest record of what ran.

The feature plans are written once, against LazyFrames, and finished here. On ``"gpu"`` the query
is first tried on the cuDF engine with ``raise_on_fail=True`` (so an unsupported expression is an
error, not a silent CPU run); if the GPU engine refuses or fails, the same plan reruns on the polars
CPU engine and the reason is recorded, so ``vocab.json`` / ``features_report.json`` say exactly
which engine produced each table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import polars as pl


@dataclass
class EngineRun:
    """The engine a build asked for, why, and every query that had to fall back to the CPU."""

    name: str  # "cpu" or "gpu", as resolved by nextdest.device.resolve_polars_engine
    reason: str = ""
    fallbacks: list[str] = field(default_factory=list)
    queries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per named query

    def _run(self, what: str, job):
        """Run ``job(engine)`` on the GPU (raising on unsupported plans) or the CPU engine."""
        self.queries += 1
        t0 = time.perf_counter()
        try:
            if self.name != "gpu":
                return job("in-memory")
            try:
                return job(pl.GPUEngine(raise_on_fail=True))
            except Exception as exc:  # cudf-polars: NotImplementedError, ComputeError, MemoryError...
                text = str(exc).strip()
                first = text.splitlines()[0][:300] if text else ""
                self.fallbacks.append(f"{what}: {type(exc).__name__}: {first}")
                return job("in-memory")
        finally:
            self.seconds[what] = round(self.seconds.get(what, 0.0) + time.perf_counter() - t0, 3)

    def collect(self, lf: pl.LazyFrame, what: str) -> pl.DataFrame:
        """Collect ``lf`` on this engine; on a GPU failure rerun on the CPU and note why."""
        return self._run(what, lambda engine: lf.collect(engine=engine))

    def collect_all(self, lfs: list[pl.LazyFrame], what: str) -> list[pl.DataFrame]:
        """Collect several LazyFrames together (shared inputs are read once); GPU fallback as above."""
        return self._run(what, lambda engine: pl.collect_all(lfs, engine=engine))

    @property
    def ran(self) -> str:
        """What actually ran: "gpu", "cpu", or "gpu+cpu" when some queries fell back."""
        if self.name != "gpu":
            return "cpu"
        if not self.fallbacks:
            return "gpu"
        return "cpu" if len(self.fallbacks) >= self.queries else "gpu+cpu"

    def as_dict(self) -> dict:
        return {
            "requested": self.name,
            "ran": self.ran,
            "reason": self.reason,
            "queries": self.queries,
            "fallbacks": list(self.fallbacks),
            "query_seconds": dict(self.seconds),
        }
