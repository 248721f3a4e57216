"""Stage 05: gru.

Train the GRU next-destination model on every fold in cv.train_folds.

Command:  python pipelines/05_gru.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/features/*
Outputs:  artifacts/<exp>/gru/{oof_topk.parquet, test_topk.parquet, metrics.json, fold*/model.pt}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("gru", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
