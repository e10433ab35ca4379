"""Interleaved timing of several variants of the engine's step, to measure one change at a time.

A variant is a comma-separated list of switches on top of the setting's run config:
``fp32`` | ``bf16`` (autocast), ``cl`` (channels_last), ``default-optim`` (torch's default optimizer
implementation instead of the engine's fused one), ``compile`` (``runtime.compile``), ``bN`` (batch N).
Every variant is built in this process, warmed up, then timed in alternating rounds (A B C A B C ...), so a change of
machine load hits all alike.

Example::

    python -m benchmarks.ablation --threads 1 --variant fp32 --variant fp32,default-optim --variant bf16,cl
"""
from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, Callable, Iterator

import torch

from benchmarks import _common as C
from benchmarks.step import SETTINGS, build_project


@contextlib.contextmanager
def default_optimizers() -> Iterator[None]:
    """Build the engine's optimizers with torch's default implementation (the engine before the fused change)."""
    import trainables.engine as engine

    fused = engine.make_optimizer
    engine.make_optimizer = lambda cls, params, **kwargs: cls(list(params), **kwargs)
    try:
        yield
    finally:
        engine.make_optimizer = fused


def parse_variant(text: str, default_batch: int) -> dict[str, Any]:
    switches = [s.strip() for s in text.split(",") if s.strip()]
    out = {"name": text, "precision": "fp32", "channels_last": False, "default_optim": False, "compile": False,
           "batch": default_batch}
    for switch in switches:
        if switch in ("fp32", "bf16"):
            out["precision"] = switch
        elif switch == "cl":
            out["channels_last"] = True
        elif switch == "default-optim":
            out["default_optim"] = True
        elif switch == "compile":
            out["compile"] = True
        elif switch.startswith("b") and switch[1:].isdigit():
            out["batch"] = int(switch[1:])
        else:
            raise SystemExit(f"--variant {text!r}: unknown switch {switch!r}; allowed: fp32, bf16, cl, "
                             f"default-optim, compile, bN")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="demo")
    parser.add_argument("--variant", action="append", default=[], help="e.g. fp32 | bf16,cl | fp32,default-optim")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--block", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    setting = dict(SETTINGS[args.setting])
    variants = [parse_variant(v, setting["batch"]) for v in (args.variant or ["fp32", "fp32,default-optim"])]
    runs: dict[str, Callable[[], None]] = {}
    trainers = []
    first: dict[str, float] = {}
    with C.scratch_dir("dastudy-bench-ablation-") as scratch:
        root = C.tiny_benchmark(scratch / "synth")
        for variant in variants:
            context = default_optimizers() if variant["default_optim"] else contextlib.nullcontext()
            with context:
                run, trainer = build_project(setting, data_root=root, batch=variant["batch"], device=device,
                                             precision=variant["precision"], channels_last=variant["channels_last"],
                                             compile=variant["compile"])
            trainers.append(trainer)
            C.synchronize(device)
            start = time.perf_counter()
            run()
            C.synchronize(device)
            first[variant["name"]] = time.perf_counter() - start
            runs[variant["name"]] = run
        times = C.time_interleaved(runs, device=device, warmup=args.warmup, repeats=args.steps, block=args.block)
        for trainer in trainers:
            trainer.close()
    rows = []
    for variant in variants:
        stats = C.summarize(times[variant["name"]])
        rows.append({"variant": variant["name"], "batch": variant["batch"], **stats,
                     "ms_per_image": stats["median_ms"] / variant["batch"], "spread_pct": 100 * stats["spread"],
                     "first_step_s": first[variant["name"]]})
    base = rows[0]["ms_per_image"]
    for row in rows:
        row["vs_first"] = row["ms_per_image"] / base
    payload = {"machine": C.machine_info(device), "setting": setting, "rows": rows,
               "times_s": {k: v for k, v in times.items()}}
    table = C.markdown_table(rows, ["variant", "batch", "median_ms", "ms_per_image", "p10_ms", "p90_ms", "spread_pct",
                                    "vs_first", "first_step_s"])
    stem = args.tag or f"ablation_{args.setting}_{device.type}_t{torch.get_num_threads()}"
    json_path, _ = C.write_report(args.out or C.default_out_dir(), stem, payload, table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
