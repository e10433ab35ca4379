"""The per-trial results a finding rests on, as a CSV anyone can recompute it from: every evaluation of every trial
of a finished study directory (``trial``, the trial's parameters with its seed, ``iteration``, target mIoU and the
``uda/…`` validator scores), the rows ``study.report.agreement`` reads.

    python -m benchmarks.study_csv STUDY_DIR benchmarks/results/cpu/NAME.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.validator_study import write_results_csv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a study directory (STORAGE/NAME)")
    parser.add_argument("csv", type=Path, help="the CSV to write")
    args = parser.parse_args(argv)
    if not any(args.study.glob("trial_*/run/metrics.jsonl")):
        parser.error(f"{args.study}: no trial_*/run/metrics.jsonl (not a study directory, or no trial has run)")
    path = write_results_csv(args.study, args.csv)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
