"""Stage 08: blend.

Blend every model's and ranker's scores; weights fitted on out-of-fold predictions.

Command:  python pipelines/08_blend.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   the top-k tables of the baselines, of every model stage and of every ranker stage
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
