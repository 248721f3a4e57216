"""Stage 02: folds.

Assign every train and test trip to one of cv.n_folds folds (GroupKFold by utrip_id).

Command:  python pipelines/02_folds.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/data/{train,test}.parquet
Outputs:  artifacts/<exp>/folds/folds.parquet
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("folds", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
