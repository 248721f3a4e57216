"""Stage 04: baselines.

Baselines: popular top-k, and most frequent next cities after the previous city
(backfilled by popularity), scored out of fold and on the test ground truth when known.

Command:  python pipelines/04_baselines.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   artifacts/<exp>/features/*, artifacts/<exp>/data/truth.parquet
Outputs:  artifacts/<exp>/baselines/{oof_topk.parquet, test_topk.parquet, metrics.json}
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main

    return stage_main("baselines", argv, description=__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
