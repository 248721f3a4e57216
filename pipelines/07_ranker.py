"""Stage 07: one candidate ranker (the stage of each registered ranker: nextdest.rankers).

Train ranker NAME (`python -m nextdest stages` lists them) over the out-of-fold
candidate table, predict the test pool.

Command:  python pipelines/07_ranker.py NAME [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/candidates/*
Outputs:  artifacts/<exp>/NAME/{oof_topk.parquet, test_topk.parquet, metrics.json, importance.{json,png}}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("ranker", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
