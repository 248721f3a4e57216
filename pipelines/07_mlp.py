"""Stage 07: mlp.

Train the MLP (lag features) next-destination model on every fold in cv.train_folds.

Command:  python pipelines/07_mlp.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/features/*
Outputs:  artifacts/<exp>/mlp/{oof_topk.parquet, test_topk.parquet, metrics.json, fold*/model.pt}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("mlp", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
