"""Stage 06: candidates.

Pool candidates per trip (every model's top-k, transitions, first city, country
favourites) and compute the ranker features.

Command:  python pipelines/06_candidates.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/features/*, the top-k tables of the baselines and of every model stage
Outputs:  artifacts/<exp>/candidates/{oof_candidates.parquet, test_candidates.parquet, recall.json}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("candidates", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
