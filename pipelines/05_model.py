"""Stage 05: one neural next-city model (the stage of each registered model: nextdest.models).

Train model NAME (`python -m nextdest stages` lists them) on every fold in
cv.train_folds, predict the held-out trips and the test trips.

Command:  python pipelines/05_model.py NAME [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/features/*, artifacts/<exp>/data/truth.parquet
Outputs:  artifacts/<exp>/NAME/{oof_topk.parquet, test_topk.parquet, metrics.json, fold*/model.pt}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("model", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
