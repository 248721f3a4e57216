"""Stage 09: xgb_ranker.

Train the XGBoost ranker over the out-of-fold candidate table, predict the test pool.

Command:  python pipelines/09_xgb_ranker.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/candidates/*
Outputs:  artifacts/<exp>/xgb_ranker/{oof_topk.parquet, test_topk.parquet, metrics.json, importance.png}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("xgb_ranker", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
