"""Do label-free validators pick the models target labels would pick? A λ_adv × lr × seed grid on the synthetic
benchmark, for one target shift, run with the engine directly (no Ray: on a shared 2-core machine its per-trial
overhead costs more than the trials), every run reporting all validators and target-val mIoU at each evaluation.

Layout written (the same as a study directory, so ``study.report.agreement`` reads both)::

    OUT/baseline/                   source-only run (shared by every shift: the source domain does not change)
    OUT/<shift>/trial_<k>/run/      one engine run directory per grid point (config.toml, metrics.jsonl, ...)
    OUT/<shift>/agreement.md        the agreement section (study.report.agreement), figures in OUT/<shift>/figures/
    RESULTS/validator_study_<shift>.csv   the per-trial results the section rests on: one row per trial and
                                    evaluation (parameters, seed, iteration, target val mIoU16, every uda/ score),
                                    RESULTS = --results (default benchmarks/results/cpu), so anyone can recompute it

Usage (about 30 min per shift on one core of a loaded 2-core machine)::

    python -m benchmarks.validator_study --out runs/validator_study --shift default --data datasets/synth
    python -m benchmarks.validator_study --out runs/validator_study --shift strong --data datasets/synth_strong
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

from trainables.config import TrainConfig, from_dict, merge
from trainables.engine import run_training

LAMBDAS = (0.001, 0.01, 0.03, 0.1)
LRS = (0.002, 0.01)
SEEDS = (1, 2, 3)
SIZE = [96, 48]
ITERATIONS, INTERVAL = 90, 30  # 3 evaluations per trial: enough for checkpoint-level agreement
BATCH = 2
VAL_IMAGES = 50
BASELINE_ITERATIONS = 300
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "cpu"


def base_config(data: Path, *, name: str) -> dict:
    target = {"dataset": "cityscapes", "root": str(data / "target"), "size": SIZE}
    return {
        "name": name,
        "data": {"source": {"dataset": "synthia", "root": str(data / "source"), "split": "train", "size": SIZE},
                 "target": {**target, "split": "train"}, "val": {**target, "split": "val"},
                 "num_classes": 16, "workers": 0},
        "model": {"name": "deeplabv2_tiny", "multi_level": True},
        "optim": {"lr": 0.01, "batch_size": BATCH},
        "eval": {"protocol": "full", "select_metric": "mIoU16", "max_images": VAL_IMAGES, "validators": ["source_val", "entropy", "im", "bnm",
                                                                               "snd"],
                 "validator_images": 16, "validator_pixels": 256},
        "runtime": {"device": "cpu", "threads": 1, "progress": False, "log_interval": 50},
    }


def baseline(out: Path, data: Path) -> Path:
    run = out / "baseline"
    checkpoint = run / "checkpoints" / "best.pt"
    if checkpoint.is_file():
        return checkpoint
    cfg = merge(base_config(data, name="validator_study_baseline"), {
        "adapt": {"mode": "source_only"},
        "optim": {"iter_max": BASELINE_ITERATIONS, "iter_stop": BASELINE_ITERATIONS, "batch_size": 4},
        "eval": {"interval": 100, "selection": "source_val", "validators": []}, "runtime": {"seed": 0}})
    result = run_training(from_dict(TrainConfig, cfg, source="validator_study baseline"), run)
    print(f"baseline: {result['status']} best {result['best_metric']} = {result['best_value']:.4f} "
          f"at {result['best_iteration']} in {result['wall_s']:.0f} s", flush=True)
    return checkpoint


def grid():
    """Seed-major, so that a study cut short still covers the λ × lr grid for its first seeds."""
    return [(lam, lr, seed) for seed, lam, lr in itertools.product(SEEDS, LAMBDAS, LRS)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shift", required=True, help="a label for this benchmark (e.g. default, strong)")
    parser.add_argument("--data", type=Path, required=True, help="the synthetic benchmark of that shift")
    parser.add_argument("--baseline-data", type=Path, default=None,
                        help="benchmark the source-only baseline is trained on (default: --data)")
    parser.add_argument("--part", default="0/1", help="I/N: run only the grid points k with k %% N == I (parallel "
                        "processes share one study)")
    parser.add_argument("--report-only", action="store_true",
                        help="only (re)write OUT/<shift>/agreement.md and the CSV from the runs there")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"folder of the per-trial CSV (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    home = args.out / args.shift
    if args.report_only:
        return write_agreement(home, args.results)
    init = baseline(args.out, args.baseline_data or args.data)
    home.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    part, parts = (int(v) for v in args.part.split("/"))
    for k, (lam, lr, seed) in enumerate(grid()):
        run = home / f"trial_{k:03d}" / "run"
        if k % parts != part or (run / "result.json").is_file():
            continue
        cfg = merge(base_config(args.data, name=f"{args.shift}_{k:03d}"), {
            "model": {"init_checkpoint": str(init)},
            "optim": {"lr": lr, "iter_max": ITERATIONS, "iter_stop": ITERATIONS},
            "adapt": {"mode": "adversarial", "lambda_adv_main": lam, "lambda_adv_aux": lam / 5, "d_ndf": 16},
            "eval": {"interval": INTERVAL, "validators": ["source_val", "entropy", "im", "bnm", "snd",
                                                          "d_confusion"]},
            "runtime": {"seed": seed}})
        result = run_training(from_dict(TrainConfig, cfg, source=f"grid point {k}"), run, overwrite=run.exists())
        (run.parent / "params.json").write_text(json.dumps({"adapt.lambda_adv_main": lam, "optim.lr": lr,
                                                            "runtime.seed": seed}))
        metrics = result["metrics"]
        print(f"[{args.shift} {k + 1}/{len(grid())}] λ={lam} lr={lr} seed={seed}: {result['status']} "
              f"val/mIoU16 {metrics.get('val/mIoU16', float('nan')):.4f} in {result['wall_s']:.0f} s "
              f"(total {time.perf_counter() - start:.0f} s)", flush=True)
    return write_agreement(home, args.results)


def write_results_csv(home: Path, path: Path) -> Path:
    """The raw per-trial results of one shift (every evaluation of every trial, as ``study.report.agreement`` reads them):
    ``trial``, the searched parameters (``params.json``), ``iteration``, then every metric (``val/mIoU16``, the
    ``uda/…`` scores, …) in a fixed column order; empty cells where a run did not report a metric."""
    from study.report.agreement import load_curves

    curves = load_curves(home)
    params = sorted({k for c in curves for k in c.params})
    metrics = sorted({k for c in curves for m in c.metrics for k in m if k.startswith(("val/mIoU", "uda/"))})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", *params, "iteration", *metrics])
        for curve in curves:
            for iteration, values in zip(curve.iterations, curve.metrics):
                writer.writerow([curve.name, *(curve.params.get(k, "") for k in params), iteration,
                                 *(repr(values[k]) if k in values else "" for k in metrics)])
    return path


def write_agreement(home: Path, results: Path | None = None) -> int:
    from study.report.agreement import agreement_section

    text = agreement_section(home, home / "figures")
    (home / "agreement.md").write_text(text)
    csv_path = write_results_csv(home, (results or RESULTS) / f"validator_study_{home.name}.csv")
    print(text)
    print(f"wrote {home / 'agreement.md'} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
