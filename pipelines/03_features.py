"""Stage 03: features.

Build the feature table (one row per reservation) and the vocabularies; polars,
on the cuDF GPU engine when features.engine allows.

Command:  python pipelines/03_features.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/data/{train,test}.parquet, artifacts/<exp>/folds/folds.parquet
Outputs:  artifacts/<exp>/features/{features.parquet, cities.parquet, vocab.json, features_report.json}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("features", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
