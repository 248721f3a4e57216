"""Stage 11: blend.

Blend every model's and ranker's scores; weights fitted on out-of-fold predictions.

Command:  python pipelines/11_blend.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/{baselines,gru,transformer,mlp,xgb_ranker,lgb_ranker}/*
Outputs:  artifacts/<exp>/blend/{oof_topk.parquet, test_topk.parquet, weights.json, metrics.json}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("blend", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
