"""Second stage: candidate pooling (:mod:`.candidates`) and gradient-boosted rankers behind one
interface (:mod:`.base`: the ranker protocol and the one fold loop; one module per registered ranker)."""

from .base import run_ranker_stage

__all__ = ["run_ranker_stage"]
