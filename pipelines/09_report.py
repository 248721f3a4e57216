"""Stage 09: report.

Write the submission (submissions/<exp>.csv, validated) and the run summary table.

Command:  python pipelines/09_report.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   every model stage's metrics.json and test_topk.parquet
Outputs:  artifacts/<exp>/report/{summary.md, summary.json, summary.png, submission.csv};
          artifacts/<exp>/summary.{md,json}; submissions/<exp>.csv
Skipped when its manifest key (config section, inputs, code) is unchanged; --force reruns it.
"""

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from nextdest.stages import stage_main
    from nextdest.report import print_summary

    return stage_main("report", argv, description=__doc__, after=print_summary)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
