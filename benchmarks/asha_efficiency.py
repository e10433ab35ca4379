"""ASHA vs FIFO on the same study: trial-iterations spent and best metric reached (CPU, synthetic benchmark).

Runs the ``demo`` preset (its sizes are the defaults here; the options make smaller or larger variants) twice with
the same Optuna sampler seed: once with ASHA (the preset's scheduler) and once with FIFO (every
trial runs to the end). Both studies share one storage, so the source-only baseline is trained once and
initialises every trial of both. Reported per study: trials, trial-iterations (the sum over trials of the
iterations each one trained before it finished or was stopped), the best metric over all evaluations and over
complete runs, wall-clock time, and Ray's per-trial overhead (trial set-up inside the trainable, and the gap
between the study's wall clock and the trials' own time per concurrent slot).

Goal (issue 7): ASHA within 1 mIoU point of FIFO's best with ≤ 40% of its trial-iterations.

Example::

    python -m benchmarks.asha_efficiency                   # ~6 minutes on 2 quiet cores, ~12 at load 4-9
    python -m benchmarks.asha_efficiency --interval 20     # one more ASHA rung
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from benchmarks import _common as C


def study_overrides(args: argparse.Namespace, *, scheduler: str, data: Path) -> list[str]:
    """Overrides of the demo preset for one of the two studies."""
    from study.commands.demo import demo_overrides

    out = demo_overrides(data=data, cuda=False)
    out += [f"num_samples={args.num_samples}", f"scheduler.kind=\"{scheduler}\"",
            f"train.optim.iter_max={args.iterations}", f"train.optim.iter_stop={args.iterations}",
            f"train.eval.interval={args.interval}", f"train.data.cache={'true' if args.cache else 'false'}",
            f"search.seed={args.seed}",
            f"baseline.overrides.optim.iter_max={args.baseline_iterations}",
            f"baseline.overrides.optim.iter_stop={args.baseline_iterations}",
            f"baseline.overrides.eval.interval={args.baseline_iterations}"]
    if args.seeds:  # replicates: num_samples configurations, each on every seed (ASHA: replicate-aware)
        out.append(f"search.seeds=[{args.seeds}]")
    if args.size:
        width, height = C.parse_size(args.size)
        out += [f"train.data.{d}.size=[{width}, {height}]" for d in ("source", "target", "val")]
    return out + list(args.override)


def trial_rows(results: Iterable[Any], metric: str) -> list[dict[str, Any]]:
    """One row per trial from a Ray ``ResultGrid`` (or any iterable of objects with ``metrics`` and
    ``metrics_dataframe``): iterations trained, best/last metric, timings."""
    rows = []
    for result in results:
        last = dict(result.metrics or {})
        frame = result.metrics_dataframe
        values = [] if frame is None or metric not in frame else [float(v) for v in frame[metric] if v == v]
        rows.append({
            "trial": last.get("trial_id"), "iterations": int(last.get("iteration") or 0),
            "evaluations": int(last.get("training_iteration") or 0), "finished": bool(last.get("finished")),
            "best": max(values) if values else math.nan, "last": values[-1] if values else math.nan,
            "setup_s": float(last.get("time/setup_s") or math.nan),
            "engine_s": float(last.get("time/engine_s") or math.nan),
            "ray_total_s": float(last.get("time_total_s") or math.nan),
            "end": float(last.get("timestamp") or math.nan),  # unix time of the trial's last report
            "error": None if getattr(result, "error", None) is None else str(result.error).splitlines()[0],
        })
    return rows


def trials_span_s(rows: list[dict[str, Any]]) -> float:
    """From the first trial's start (its last report minus its running time) to the last trial's last report: the
    study's trial phase, without Ray's start-up and the baseline."""
    ends = [r["end"] for r in rows if math.isfinite(r.get("end", math.nan)) and math.isfinite(r["ray_total_s"])]
    starts = [r["end"] - r["ray_total_s"] for r in rows
              if math.isfinite(r.get("end", math.nan)) and math.isfinite(r["ray_total_s"])]
    return max(ends) - min(starts) if ends else math.nan


def summarize_study(rows: list[dict[str, Any]], *, wall_s: float, concurrency: int) -> dict[str, Any]:
    finite = [r["best"] for r in rows if math.isfinite(r["best"])]
    complete = [r["best"] for r in rows if r["finished"] and math.isfinite(r["best"])]
    ray_total = sum(r["ray_total_s"] for r in rows if math.isfinite(r["ray_total_s"]))
    engine = sum(r["engine_s"] for r in rows if math.isfinite(r["engine_s"]))
    setups = [r["setup_s"] for r in rows if math.isfinite(r["setup_s"])]
    span = trials_span_s(rows)
    return {
        "trials": len(rows), "finished": sum(r["finished"] for r in rows), "failed": sum(bool(r["error"]) for r in rows),
        "trial_iterations": sum(r["iterations"] for r in rows),
        "best": max(finite) if finite else math.nan, "best_complete": max(complete) if complete else math.nan,
        "wall_s": wall_s, "trials_span_s": span, "sum_trial_s": ray_total, "sum_engine_s": engine,
        "mean_setup_s": sum(setups) / len(setups) if setups else math.nan,
        # time a concurrent slot spent outside any trial's own clock: worker start, scheduling, Ray bookkeeping
        "overhead_per_trial_s": (span * concurrency - ray_total) / len(rows) if rows else math.nan,
        # inside the trial: from the trainable's start to the first step (imports, Trainer, datasets), and the
        # reports/checkpoints (trial time not spent in the engine)
        "in_trial_overhead_s": (ray_total - engine) / len(rows) if rows else math.nan,
    }


def run_one(args: argparse.Namespace, scheduler: str, *, storage: Path, data: Path) -> dict[str, Any]:
    from study.config.study_config import load_study_config
    from study.run.tuner import run_study

    name = f"{args.name}-{scheduler}"
    study = load_study_config("demo", study_overrides(args, scheduler=scheduler, data=data), name=name)
    if args.dry_run:
        return {"scheduler": scheduler, "name": name, "max_t": study.max_t, "num_samples": study.num_samples,
                "seeds": list(study.search.seeds or ()), "trials": study.num_trials,
                "iterations": study.train.optim.iterations, "interval": study.train.eval.interval}
    start = time.perf_counter()
    results, location = run_study(study, storage=str(storage), num_cpus=args.num_cpus)
    wall = time.perf_counter() - start
    rows = trial_rows(results, study.study_metric)
    baseline = location.home / "baseline" / "result.json"
    summary = summarize_study(rows, wall_s=wall, concurrency=study.max_concurrent_trials)
    summary.update(scheduler=scheduler, name=name, metric=study.study_metric, max_t=study.max_t,
                   grace_period=study.scheduler.grace_period, reduction_factor=study.scheduler.reduction_factor,
                   baseline=json.loads(baseline.read_text()) if baseline.is_file() else None)
    return {"summary": summary, "trials": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asha_efficiency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="datasets/synth", help="synthetic benchmark (generated when absent)")
    parser.add_argument("--storage", default=None, help="study storage (default: a temporary folder, removed)")
    parser.add_argument("--name", default="asha-efficiency")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=160, help="iterations of a full trial (demo: 160)")
    parser.add_argument("--interval", type=int, default=40, help="evaluation interval = ASHA time unit (demo: 40)")
    parser.add_argument("--baseline-iterations", type=int, default=400, help="source-only baseline (demo: 400)")
    parser.add_argument("--size", default=None, metavar="WxH", help="image size of every domain (demo: 128x64)")
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                        help="data.cache in every trial (default on)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of both studies")
    parser.add_argument("--seeds", default="", metavar="1,2,3",
                        help="search.seeds of both studies: every configuration on each (ASHA decides per "
                             "configuration on the replicate mean); default: one run per configuration")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="more study overrides, applied to both studies")
    parser.add_argument("--schedulers", default="fifo,asha")
    parser.add_argument("--dry-run", action="store_true", help="build and validate both study configs only")
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default="asha_efficiency")
    return parser.parse_args(argv)


def compare(studies: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    if not {"fifo", "asha"} <= set(studies) or any("summary" not in s for s in studies.values()):
        return {}
    fifo, asha = studies["fifo"]["summary"], studies["asha"]["summary"]
    return {"iterations_ratio": asha["trial_iterations"] / max(1, fifo["trial_iterations"]),
            "best_gap_points": 100 * (fifo["best"] - asha["best"]),
            "goal_met": bool(asha["trial_iterations"] <= 0.4 * fifo["trial_iterations"]
                             and 100 * (fifo["best"] - asha["best"]) <= 1.0)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from benchmarks.loader import ensure_benchmark

    machine = C.machine_info(torch.device("cpu"))
    data = Path(args.data).resolve()
    if not args.dry_run:
        ensure_benchmark(data)
    own_storage = args.storage is None
    storage = Path(tempfile.mkdtemp(prefix="dastudy-asha-")) if own_storage else Path(args.storage)
    studies: dict[str, dict[str, Any]] = {}
    try:
        for scheduler in args.schedulers.split(","):
            studies[scheduler] = run_one(args, scheduler, storage=storage, data=data)
    finally:
        if own_storage:
            shutil.rmtree(storage, ignore_errors=True)
    payload = {"machine": machine, "studies": studies, "comparison": compare(studies),
               "options": {k: v for k, v in vars(args).items()}}
    if args.dry_run:
        print(json.dumps(studies, indent=1))
        return payload
    rows = [s["summary"] for s in studies.values()]
    shown = [{**s, "best_mIoU": 100 * s["best"], "best_complete_mIoU": 100 * s["best_complete"]} for s in rows]
    table = C.markdown_table(shown, ["scheduler", "max_t", "reduction_factor", "trials", "finished", "failed", "trial_iterations", "best_mIoU",
                                     "best_complete_mIoU", "wall_s", "trials_span_s", "mean_setup_s",
                                     "in_trial_overhead_s", "overhead_per_trial_s"])
    if payload["comparison"]:
        c = payload["comparison"]
        table += (f"\n\nASHA used {100 * c['iterations_ratio']:.0f}% of FIFO's trial-iterations; best metric gap "
                  f"{c['best_gap_points']:+.2f} mIoU points (FIFO − ASHA); goal met: {c['goal_met']}")
    json_path, _ = C.write_report(args.out or C.default_out_dir(), args.tag, payload, table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
