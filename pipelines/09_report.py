"""Stage 09: report.

Write the submission (submissions/<exp>.csv, validated; the model chosen by report.submit_model,
auto = best CV with report.min_gain for a model built from others) and the run summary table, with
accuracy@4 per bucket of the true city's train frequency (report.buckets) for every model and the oracle.

Command:  python pipelines/09_report.py [--config configs/EXP.yaml] [--force] [key.sub=value ...]
Inputs:   every model stage's metrics.json and oof/test top-k; data (train rows, truth, oracle),
          features (the CV truth)
Outputs:  artifacts/<exp>/report/{summary.md, summary.json, summary.png, summary_buckets.png, submission.csv};
          artifacts/<exp>/summary.{md,json,png} and summary_buckets.png; submissions/<exp>.csv
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
