"""Host syncs inside the engine's adversarial step, and what the host-to-device batch copies cost.

- CUDA: runs engine iterations between two log intervals under ``torch.cuda.set_sync_debug_mode("error")``, so any
  operation that waits for the GPU (``.item()``, a boolean mask, a blocking copy) raises and is reported. Then
  times the pinned, ``non_blocking`` copies of one source + target batch with CUDA events against the step: the
  most a device-side prefetch of the next batch (copy on a side stream while the step computes) could save.
- CPU: counts Python-level reads of tensor values (``item``, ``tolist``, ``bool``, ``numpy``) in the same window.

Example::

    python -m benchmarks.sync_check --setting published --device cuda --precision bf16 --channels-last --batch 4
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Any, Iterator

import torch

from benchmarks import _common as C
from benchmarks.step import SETTINGS, _batches, build_project, resolve_setting


@contextlib.contextmanager
def count_host_reads() -> Iterator[list[str]]:
    """Record every Python-level read of a tensor's value (what would be a device sync on CUDA)."""
    reads: list[str] = []
    saved = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "numpy")}

    def wrap(name):
        def read(self, *args, **kwargs):
            reads.append(name)
            return saved[name](self, *args, **kwargs)
        return read

    for name in saved:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield reads
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def check_syncs(run, *, device: torch.device, steps: int) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(steps):
                run()
            error = None
        except RuntimeError as err:
            error = str(err).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize(device)
        return {"mode": "cuda sync debug (error)", "steps": steps, "syncs": 0 if error is None else 1,
                "first_sync": error}
    with count_host_reads() as reads:
        for _ in range(steps):
            run()
    return {"mode": "python-level value reads", "steps": steps, "syncs": len(reads), "reads": sorted(set(reads))}


def copy_cost(setting: dict[str, Any], *, batch: int, device: torch.device, repeats: int = 20) -> dict[str, Any]:
    """GPU time of the pinned non_blocking copies of one source + target batch (CUDA events, median)."""
    if device.type != "cuda":
        return {}
    sources, targets = _batches(setting, batch=batch, pin=True, count=1)
    tensors = [*sources[0].values(), *targets[0].values()]
    times = []
    for _ in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for tensor in tensors:
            tensor.to(device, non_blocking=True)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times = sorted(times[3:])
    megabytes = sum(t.numel() * t.element_size() for t in tensors) / 1e6
    return {"copy_ms": times[len(times) // 2], "megabytes": megabytes}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--source-size", default=None, metavar="WxH")
    parser.add_argument("--target-size", default=None, metavar="WxH")
    parser.add_argument("--ndf", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5, help="iterations checked (fewer than the log interval)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    for name in ("model", "num_classes", "aspp", "ref_batch"):
        setattr(args, name, None)
    setting = resolve_setting(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    with C.scratch_dir("dastudy-bench-sync-check-") as scratch:
        root = C.tiny_benchmark(scratch / "synth")
        run, trainer = build_project(setting, data_root=root, batch=args.batch, device=device,
                                     precision=args.precision, channels_last=args.channels_last, compile=False)
        try:
            for _ in range(2):  # warm-up, and past the first log flush
                run()
            log_interval = trainer.cfg.runtime.log_interval
            steps = min(args.steps, log_interval - 1 - trainer.iteration % log_interval)
            syncs = check_syncs(run, device=device, steps=steps)
            C.synchronize(device)
            times = C.time_interleaved({"step": run}, device=device, warmup=1, repeats=5)["step"]
        finally:
            trainer.close()
    step_ms = C.summarize(times)["median_ms"]
    copies = copy_cost(setting, batch=args.batch, device=device)
    if copies:
        copies["fraction_of_step"] = copies["copy_ms"] / step_ms
    payload = {"machine": C.machine_info(device), "setting": {**setting, "batch": args.batch,
               "precision": args.precision, "channels_last": args.channels_last},
               "syncs": syncs, "step_ms": step_ms, "copies": copies}
    row = {"check": syncs["mode"], "steps": syncs["steps"], "syncs": syncs["syncs"],
           "detail": syncs.get("first_sync") or ", ".join(syncs.get("reads", [])) or "none",
           "step_ms": step_ms, "copy_ms": copies.get("copy_ms"), "copy_MB": copies.get("megabytes")}
    table = C.markdown_table([row], ["check", "steps", "syncs", "detail", "step_ms", "copy_ms", "copy_MB"])
    stem = args.tag or f"sync_check_{args.setting}_{device.type}"
    json_path, _ = C.write_report(args.out or C.default_out_dir(), stem, payload, table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
