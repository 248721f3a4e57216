"""Stage 10: lgb_ranker.

Train the LightGBM ranker over the out-of-fold candidate table, predict the test pool.

Command:  python pipelines/10_lgb_ranker.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/candidates/*
Outputs:  artifacts/<exp>/lgb_ranker/{oof_topk.parquet, test_topk.parquet, metrics.json, importance.png}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("lgb_ranker", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
