"""Fractional GPUs through Ray: four 0.25-GPU trials against one 1-GPU trial of the same adversarial study.

Runs ``benchmarks/configs/fractional_gpu.toml`` (AdaptSegNet DeepLabV2 ResNet-101, multi-level, published sizes,
batch 1, bf16 + channels_last, random init) twice through ``dastudy study run`` — the real CLI, Ray Tune, the
Optuna grid sampler and the Ray trainable — in one storage, so the source-only baseline is trained once:

- ``shared``: 4 trials at ``resources.gpu = 0.25``, all four at once;
- ``alone``: 1 trial at ``resources.gpu = 1``.

Per trial it reads the engine's own log (``metrics.jsonl``: ``time/step_s`` per log interval, the first interval
dropped as warm-up; ``mem/peak_gib``: torch's peak allocation) and, from a thread that polls ``nvidia-smi``
every second, the most device memory each process held during each study (the CUDA context included). Reported: iterations/s
and images/s (one source + one target image per iteration) per trial and summed over the concurrent trials, the
packing gain (shared sum / alone), and the study wall clock.

Example (on the GPU machine; ~3-4 minutes on an H100)::

    python -m benchmarks.ray_fractional --data datasets/synth
    python -m benchmarks.ray_fractional --data datasets/synth --device cpu --rehearsal   # CPU: toy sizes
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as C

CONFIG = Path(__file__).resolve().parent / "configs" / "fractional_gpu.toml"

# Toy sizes for rehearsing the script on a CPU (no GPU request: Ray would leave the trials pending forever).
REHEARSAL = ["resources.gpu=0", "resources.cpu=1", "train.model.name=\"deeplabv2_tiny\"",
             "baseline.overrides.model.name=\"deeplabv2_tiny\"", "train.adapt.d_ndf=8",
             "train.optim.iter_max=8", "train.optim.iter_stop=8", "train.eval.interval=4",
             "train.runtime.log_interval=2", "train.runtime.amp=\"off\"", "train.runtime.channels_last=false",
             "baseline.overrides.optim.iter_max=2", "baseline.overrides.optim.iter_stop=2",
             "baseline.overrides.eval.interval=2", "baseline.overrides.runtime.amp=\"off\"",
             "baseline.overrides.runtime.channels_last=false", "train.data.workers=0"]
REHEARSAL += [f"{section}.data.{d}.size=[64, 32]" for section in ("train", "baseline.overrides")
              for d in ("source", "target", "val")]


def data_overrides(data: Path) -> list[str]:
    out = []
    for section in ("train.data", "baseline.overrides.data"):
        for domain, sub in (("source", "source"), ("target", "target"), ("val", "target")):
            out.append(f"{section}.{domain}.root={json.dumps(str(data.resolve() / sub))}")
    return out


class GpuMemoryPoller:
    """The most memory each process held on the device, from ``nvidia-smi --query-compute-apps`` once a second."""

    def __init__(self) -> None:
        self.peak_mib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> "GpuMemoryPoller":
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            for line in out.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    pid, mib = int(parts[0]), int(parts[1])
                    self.peak_mib[pid] = max(self.peak_mib.get(pid, 0), mib)
            self._stop.wait(1.0)


def run_study(name: str, overrides: list[str], *, storage: Path, log) -> float:
    """``dastudy study run`` in a child process (as a user runs it); returns its wall clock in seconds."""
    cmd = [sys.executable, "-m", "study.cli", "study", "run", str(CONFIG), "--name", name,
           "--storage", str(storage), *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: `{' '.join(cmd)}` exited {proc.returncode} (log: {log.name})")
    return wall


def trial_rows(study_dir: Path, *, batch: int) -> list[dict[str, Any]]:
    """One row per trial from the engine's metrics.jsonl files under ``study_dir``."""
    rows = []
    for metrics in sorted(study_dir.rglob("metrics.jsonl")):
        if "baseline" in metrics.relative_to(study_dir).parts:  # the study's link to its source-only run
            continue
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        train = [r for r in records if r.get("kind") == "train" and "time/step_s" in r]
        steps = [r["time/step_s"] for r in train[1:]] or [r["time/step_s"] for r in train]
        evals = [r for r in records if r.get("kind") == "eval"]
        peak = max((r["mem/peak_gib"] for r in train if "mem/peak_gib" in r), default=None)
        step = statistics.median(steps) if steps else float("nan")
        rows.append({"trial": metrics.parent.parent.name if metrics.parent.name == "run" else metrics.parent.name,
                     "intervals": len(steps), "step_s": step, "it_per_s": 1.0 / step if steps else None,
                     "images_per_s": 2 * batch / step if steps else None, "torch_peak_gib": peak,
                     "mIoU16": (evals[-1].get("val/mIoU16") if evals else None)})
    return rows


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="datasets/synth", help="synthetic benchmark (dastudy data synth)")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (with --rehearsal)")
    parser.add_argument("--rehearsal", action="store_true", help="toy sizes, no GPU request: checks the script")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per trial (default: the file's)")
    parser.add_argument("--out", default=None, help="report folder (default: $OUT or benchmarks/results)")
    parser.add_argument("--tag", default="ray_fractional", help="report file stem")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device)
    machine = C.machine_info(device)
    extra = data_overrides(Path(args.data)) + (REHEARSAL if args.rehearsal else [])
    if args.iterations:
        extra += [f"train.optim.iter_max={args.iterations}", f"train.optim.iter_stop={args.iterations}"]
    batch = 1
    work = Path(tempfile.mkdtemp(prefix="ray_fractional."))
    storage = work / "studies"
    results: dict[str, Any] = {}
    log_path = Path(args.out or C.default_out_dir()) / f"{args.tag}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, GpuMemoryPoller() as poller:
        # shared first: its first trial start also trains the baseline, which is timed apart from the trials below
        for name, gpu, samples in (("shared", 0.25, 4), ("alone", 1.0, 1)):
            overrides = [f"num_samples={samples}", f"max_concurrent_trials={samples}"]
            if not args.rehearsal:
                overrides.append(f"resources.gpu={gpu}")
            wall = run_study(name, extra + overrides, storage=storage, log=log)
            rows = trial_rows(storage / name, batch=batch)
            # nvidia-smi's view: every process that held device memory during this study (trial workers)
            results.setdefault("device_peak_mib", {})[name] = sorted(poller.peak_mib.values(), reverse=True)
            poller.peak_mib.clear()
            rate = [r["images_per_s"] for r in rows if r["images_per_s"]]
            results[name] = {"gpu_per_trial": gpu, "trials": rows, "wall_s": wall,
                             "images_per_s_sum": sum(rate) if rate else None}
            print(f"{name}: {len(rows)} trial(s), {wall:.0f} s, images/s summed "
                  f"{results[name]['images_per_s_sum']}", flush=True)
    shared, alone = results["shared"]["images_per_s_sum"], results["alone"]["images_per_s_sum"]
    results["packing_gain"] = shared / alone if shared and alone else None
    table_rows = [{"study": name, "gpu/trial": results[name]["gpu_per_trial"], "trial": r["trial"],
                   "s/iter": r["step_s"], "images/s": r["images_per_s"], "torch peak GiB": r["torch_peak_gib"],
                   "mIoU16": r["mIoU16"]}
                  for name in ("shared", "alone") for r in results[name]["trials"]]
    table = C.markdown_table(table_rows, ["study", "gpu/trial", "trial", "s/iter", "images/s", "torch peak GiB",
                                          "mIoU16"])
    table += (f"\n\nimages/s summed over concurrent trials: 4 × 0.25 GPU = {_fmt(shared)}, 1 × 1 GPU = "
              f"{_fmt(alone)}; packing gain {_fmt(results['packing_gain'])}; study wall clock {results['shared']['wall_s']:.0f} s / "
              f"{results['alone']['wall_s']:.0f} s (the first includes the baseline); device memory per process (nvidia-smi, MiB, CUDA context included): "
              f"{results.get('device_peak_mib')}\n")
    C.write_report(args.out or C.default_out_dir(), args.tag,
                   {"machine": machine, "results": results, "rehearsal": args.rehearsal}, table)
    print(table)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
