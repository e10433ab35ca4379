"""Does the fast path change what a run learns? Target mIoU of the demo's adaptation in fp32 vs bf16 (+ channels_last).

One source-only baseline (the demo preset's ``[baseline]``: fp32) initialises every run; each variant then trains
the demo's adversarial run (``study/presets/demo.toml`` ``[train]``) with several seeds, and the final target
``val/mIoU16`` is compared. "Unchanged within noise" means: the difference of the variant means is within the
spread that the seeds alone give (reported as the largest per-variant standard deviation and the pooled one).

Example::

    python -m benchmarks.precision                              # CPU, 2 seeds x 2 variants, ~10 min on 2 cores
    python -m benchmarks.precision --device cuda --seeds 0,1,2  # GPU
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import _common as C

VARIANTS = {"fp32": {"runtime.amp": "off", "runtime.channels_last": False},
            "bf16": {"runtime.amp": "bf16", "runtime.channels_last": False},
            "bf16-cl": {"runtime.amp": "bf16", "runtime.channels_last": True}}


def _train(cfg) -> tuple[dict[str, float], float, Any]:
    from trainables.engine import Trainer

    trainer = Trainer(cfg, None)
    start = time.perf_counter()
    try:
        metrics = trainer.fit()
    finally:
        trainer.close()
    return metrics, time.perf_counter() - start, trainer


def baseline_checkpoint(data: Path, out: Path, *, device: str, iterations: int, changes: dict[str, Any]) -> Path:
    """Train the demo's source-only baseline (fp32) and save its weights for every run to start from."""
    from benchmarks.loader import demo_config

    cfg = demo_config(data, **{**changes, "adapt.mode": "source_only", "runtime.device": device,
                               "optim.iter_max": iterations, "optim.iter_stop": iterations,
                               "eval.interval": iterations})
    metrics, seconds, trainer = _train(cfg)
    path = out / "baseline.pt"
    trainer.save_checkpoint(path)
    print(f"baseline: {iterations} source-only iterations in {seconds:.0f} s, val/mIoU16 = "
          f"{100 * metrics.get('val/mIoU16', math.nan):.2f}")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="datasets/synth", help="synthetic benchmark (generated when absent)")
    parser.add_argument("--small", action="store_true", help="a tiny benchmark instead of the demo's (tests)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default="fp32,bf16-cl", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1", help="runtime.seed of the runs of each variant")
    parser.add_argument("--iterations", type=int, default=240, help="adaptation iterations (demo: 240)")
    parser.add_argument("--baseline-iterations", type=int, default=600, help="source-only iterations (demo: 600)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config change for every run, e.g. --set data.cache=true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.loader import _changes, demo_config, ensure_benchmark

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    data = ensure_benchmark(Path(args.data), small=args.small)
    changes = {"data.cache": True, **_changes(args.set)}
    variants = args.variants.split(",")
    for name in variants:
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown {name!r}; allowed: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: list[dict[str, Any]] = []
    with C.scratch_dir("dastudy-bench-precision-") as scratch:
        init = baseline_checkpoint(data, scratch, device=str(device), iterations=args.baseline_iterations,
                                   changes=changes)
        for seed in seeds:  # seeds outermost: a load change on a shared machine hits every variant alike
            for name in variants:
                cfg = demo_config(data, **{**changes, **VARIANTS[name], "runtime.seed": seed,
                                           "runtime.device": str(device), "model.init_checkpoint": str(init),
                                           "optim.iter_max": args.iterations, "optim.iter_stop": args.iterations,
                                           "eval.interval": args.iterations})
                metrics, seconds, _ = _train(cfg)
                runs.append({"variant": name, "seed": seed, "mIoU16": 100 * metrics.get("val/mIoU16", math.nan),
                             "mIoU13": 100 * metrics.get("val/mIoU13", math.nan), "train_s": seconds})
                print(f"{name} seed {seed}: val/mIoU16 {runs[-1]['mIoU16']:.2f} ({seconds:.0f} s)")
    rows = []
    for name in variants:
        values = [r["mIoU16"] for r in runs if r["variant"] == name]
        rows.append({"variant": name, "runs": len(values), "mean_mIoU16": statistics.fmean(values),
                     "std_mIoU16": statistics.stdev(values) if len(values) > 1 else math.nan,
                     "min": min(values), "max": max(values),
                     "mean_train_s": statistics.fmean(r["train_s"] for r in runs if r["variant"] == name)})
    stds = [r["std_mIoU16"] for r in rows if math.isfinite(r["std_mIoU16"])]
    pooled = math.sqrt(statistics.fmean(s * s for s in stds)) if stds else math.nan
    difference = rows[-1]["mean_mIoU16"] - rows[0]["mean_mIoU16"] if len(rows) > 1 else math.nan
    # the difference of two means of n runs has the standard error pooled·sqrt(2/n)
    n = len(seeds)
    standard_error = pooled * math.sqrt(2 / n) if math.isfinite(pooled) else math.nan
    verdict = {"difference_points": difference, "pooled_std_points": pooled, "standard_error_points": standard_error,
               "within_noise": bool(math.isfinite(standard_error) and abs(difference) <= 2 * standard_error)}
    payload = {"machine": C.machine_info(device), "changes": changes, "runs": runs, "rows": rows, "verdict": verdict}
    table = C.markdown_table(rows, ["variant", "runs", "mean_mIoU16", "std_mIoU16", "min", "max", "mean_train_s"])
    table += (f"\n\n{rows[-1]['variant']} − {rows[0]['variant']}: {difference:+.2f} mIoU16 points; seed noise: pooled "
              f"std {pooled:.2f}, standard error of the difference {standard_error:.2f}; within 2 SE: "
              f"{verdict['within_noise']}")
    stem = args.tag or f"precision_{device.type}"
    json_path, _ = C.write_report(args.out or C.default_out_dir(), stem, payload, table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
