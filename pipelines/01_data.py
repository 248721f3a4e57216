"""Stage 01: data.

Validate the input data: generate the synthetic dataset (data.source: synthetic, preset
data.preset) or read the user's official files (data.source: official, folder data.official_dir);
check them against the official contract and store them typed.

Command:  python pipelines/01_data.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   synthetic: nothing (generator + seed); official: <data.official_dir>/{train_set,test_set[,ground_truth]}.csv
Outputs:  artifacts/<exp>/data/{train,test}.parquet, truth.parquet (when known), data_report.json;
          synthetic also raw/ (the three official CSVs), oracle*.parquet, generator.json
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("data", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
