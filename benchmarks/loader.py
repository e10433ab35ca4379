"""Throughput of the engine's data pipeline at the demo settings, against the rate the step consumes batches.

For each ``data.cache`` (off/on) × ``data.workers`` (0/1/2) it builds the engine's training datasets from the demo
preset's run config (``study/presets/demo.toml`` ``[train]``: SYNTHIA-layout source + Cityscapes-layout target of
the synthetic benchmark, 128×64, batch 4, flip + blur) and the two :class:`trainables.streams.BatchStream` the
:class:`~trainables.engine.Trainer` would build, and times pairs of batches (one source + one target: what one
adversarial step consumes), on copies of the benchmark with its 16-bit SYNTHIA-layout labels as generated (read by
the pure-Python pypng decoder) and with them converted once to 8-bit trainIds (``dastudy data prepare``). Reported:
the time to the first pair (worker start-up, empty cache) and the steady rate over the following pairs. With ``cache`` on, ``--epochs-before`` epochs are drawn first so that the
steady rate is the cached one (the engine fills the cache while it trains: it preloads nothing).

The step rate is the engine's adversarial step on fixed batches (as ``benchmarks.step``); the *iteration* rate is
``Trainer.fit`` with its real streams (step + data, ``workers = 0`` as the demo preset): the difference is what the
data path costs the demo. Goal: loader throughput ≥ 2× the step rate.

Example::

    python -m benchmarks.loader                       # generates datasets/synth if absent
"""
from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from benchmarks import _common as C

PRESET = C.REPO / "study" / "presets" / "demo.toml"


def _shipped_toml(name: str, package: str) -> dict[str, Any]:
    """A shipped TOML file with its ``extends`` chain resolved (as ``study.config.files.load_toml``, which is used where
    it imports: GPU machines may lack the study package's dependencies)."""
    try:
        from study.config.files import load_toml
    except ImportError:
        from trainables.config import merge

        data = tomllib.loads((C.REPO / "study" / package / f"{name}.toml").read_text())
        parent = data.pop("extends", None)
        return merge(_shipped_toml(parent, "configs"), data) if parent else data
    return load_toml(name, package)


def demo_train_table() -> dict[str, Any]:
    """The demo preset's ``[train]`` table, ``extends`` resolved, without the trials' init checkpoint."""
    from trainables.config import merge

    table = dict(_shipped_toml("demo", "presets")["train"])
    parent = table.pop("extends", None)
    if parent:
        table = merge(_shipped_toml(parent, "configs"), table)
    table.get("model", {}).pop("init_checkpoint", None)  # a study sets it to its baseline's checkpoint
    return table


def demo_config(data: Path, **changes: Any):
    """The demo preset's run config with the benchmark at ``data`` and ``changes`` (dotted keys)."""
    from trainables.config import TrainConfig, from_dict, replace_path

    table = demo_train_table()
    for domain, sub in (("source", "source"), ("target", "target"), ("val", "target")):
        table = replace_path(table, f"data.{domain}.root", str(data / sub))
    table = replace_path(table, "runtime.device", "cpu")
    for key, value in changes.items():
        table = replace_path(table, key, value)
    return from_dict(TrainConfig, table, source=f"{PRESET} [train]")


def ensure_benchmark(data: Path, *, small: bool = False) -> Path:
    from data.synthetic import generate

    if small:
        return C.tiny_benchmark(data)
    result = generate(data, seed=0)  # the demo's benchmark (dastudy demo: datasets/synth)
    if result.created:
        print(f"generated the synthetic benchmark in {data} ({result.seconds:.1f} s)")
    return data


def label_variants(data: Path, scratch: Path, which: str) -> dict[str, Path]:
    """Copies of the benchmark's source domain (the target is linked): ``raw`` with the 16-bit SYNTHIA-layout labels
    only (read by the pure-Python decoder), ``prepared`` with them converted once to 8-bit trainIds (``dastudy data
    prepare``). Copies, because the readers pick the converted labels whenever they exist in the folder."""
    import shutil

    from data.layouts import PREPARED_LABEL_DIR
    from data.prepare import prepare_synthia

    raw = scratch / "raw"
    shutil.copytree(data / "source", raw / "source", ignore=shutil.ignore_patterns(Path(PREPARED_LABEL_DIR).name))
    (raw / "target").symlink_to((data / "target").resolve(), target_is_directory=True)
    out = {"raw": raw} if which in ("raw", "both") else {}
    if which in ("prepared", "both"):
        prepared = scratch / "prepared"
        shutil.copytree(raw / "source", prepared / "source")
        (prepared / "target").symlink_to((data / "target").resolve(), target_is_directory=True)
        prepare_synthia(prepared / "source", existing="error", workers=1)
        out["prepared"] = prepared
    return out


def _streams(cfg):
    from trainables import builders
    from trainables.seeding import derive_seed
    from trainables.streams import BatchStream

    normalization = builders.resolve_normalization(cfg)
    data = builders.build_train_data(cfg, normalization=normalization, need_target=True)
    kwargs = dict(batch_size=cfg.optim.batch_size, workers=cfg.data.workers, pin_memory=False)
    return (BatchStream(data.source, seed=derive_seed(cfg.runtime.seed, 0), name="source", **kwargs),
            BatchStream(data.target, seed=derive_seed(cfg.runtime.seed, 1), name="target", **kwargs))


def time_loader(cfg, *, pairs: int, epochs_before: int) -> dict[str, Any]:
    source, target = _streams(cfg)
    try:
        start = time.perf_counter()
        next(source), next(target)
        first = time.perf_counter() - start
        # with the cache on, draw whole epochs first (every worker then holds its share of the decoded samples)
        before = epochs_before * max(source.batches_per_epoch, target.batches_per_epoch) if cfg.data.cache else 2
        for _ in range(before):
            next(source), next(target)
        start = time.perf_counter()
        for _ in range(pairs):
            next(source), next(target)
        steady = time.perf_counter() - start
    finally:
        source.close()
        target.close()
    return {"workers": cfg.data.workers, "cache": cfg.data.cache, "first_pair_s": first,
            "reads_prepared_labels": bool(getattr(source.dataset, "uses_prepared_labels", False)),
            "pairs_per_s": pairs / steady, "ms_per_pair": 1e3 * steady / pairs,
            "images_per_s": pairs * 2 * cfg.optim.batch_size / steady}


def time_step(cfg, *, steps: int, warmup: int, real_streams: bool) -> dict[str, Any]:
    """Steps/s of ``Trainer.fit`` on fixed batches (``real_streams=False``) or with its own streams."""
    from benchmarks.step import _batches
    from trainables.engine import Trainer

    trainer = Trainer(cfg, None)
    try:
        if not real_streams:
            setting = {"source_size": cfg.data.source.size, "target_size": cfg.data.target.size,
                       "num_classes": cfg.data.num_classes}
            sources, targets = _batches(setting, batch=cfg.optim.batch_size, pin=False)
            trainer.streams = {"source": C.RepeatingStream(sources), "target": C.RepeatingStream(targets)}
        trainer.fit(until_iteration=warmup)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            trainer.fit(until_iteration=trainer.iteration + 1)
            times.append(time.perf_counter() - start)
    finally:
        trainer.close()
    stats = C.summarize(times)
    return {**stats, "per_s": 1e3 / stats["median_ms"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="datasets/synth", help="synthetic benchmark (generated when absent)")
    parser.add_argument("--small", action="store_true", help="a tiny benchmark instead of the demo's (tests)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts (default 0,1,2)")
    parser.add_argument("--cache", choices=("off", "on", "both"), default="both")
    parser.add_argument("--labels", choices=("raw", "prepared", "both"), default="both",
                        help="SYNTHIA labels as generated (16-bit, pypng) and/or converted to 8-bit trainIds "
                             "(dastudy data prepare, on a copy)")
    parser.add_argument("--pairs", type=int, default=60, help="timed source+target batch pairs (default 60)")
    parser.add_argument("--epochs-before", type=int, default=1, help="epochs drawn before timing a cached loader")
    parser.add_argument("--steps", type=int, default=15, help="timed steps for the step/iteration rates")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config change, e.g. --set optim.batch_size=2 --set data.source.size=[64,32]")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default="loader_demo_cpu")
    return parser.parse_args(argv)


def _changes(pairs: list[str]) -> dict[str, Any]:
    import tomllib as toml

    out = {}
    for text in pairs:
        key, _, value = text.partition("=")
        out[key.strip()] = toml.loads(f"v = {value}")["v"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = ensure_benchmark(Path(args.data), small=args.small)
    changes = _changes(args.set)
    caches = {"off": [False], "on": [True], "both": [False, True]}[args.cache]
    rows, iterations = [], []
    step = time_step(demo_config(data, **changes), steps=args.steps, warmup=args.warmup, real_streams=False)
    with C.scratch_dir("dastudy-bench-loader-") as scratch:
        roots = label_variants(data, scratch, args.labels)
        for labels, root in roots.items():
            for cache in caches:
                for workers in (int(w) for w in args.workers.split(",")):
                    cfg = demo_config(root, **{**changes, "data.cache": cache, "data.workers": workers})
                    row = {"labels": labels, **time_loader(cfg, pairs=args.pairs, epochs_before=args.epochs_before)}
                    row["vs_step_rate"] = row["pairs_per_s"] / step["per_s"]
                    rows.append(row)
            for cache in caches:
                cfg = demo_config(root, **{**changes, "data.cache": cache})
                it = time_step(cfg, steps=args.steps, warmup=args.warmup, real_streams=True)
                iterations.append({"labels": labels, "cache": cache, "workers": cfg.data.workers, **it})
    payload = {"machine": C.machine_info(torch.device("cpu")), "changes": changes, "loader": rows,
               "step": step, "iterations": iterations}
    table = C.markdown_table(rows, ["labels", "workers", "cache", "first_pair_s", "ms_per_pair", "pairs_per_s", "images_per_s",
                                    "vs_step_rate"])
    table += (f"\n\nStep on fixed batches: {step['median_ms']:.1f} ms (p10–p90 {step['p10_ms']:.1f}–"
              f"{step['p90_ms']:.1f}), {step['per_s']:.2f} steps/s.\n\n")
    table += C.markdown_table([{"iteration": f"Trainer.fit, {r['labels']} labels, workers {r['workers']}, "
                                             f"cache {r['cache']}",
                                "median_ms": r["median_ms"], "p10_ms": r["p10_ms"], "p90_ms": r["p90_ms"],
                                "data_ms": r["median_ms"] - step["median_ms"]} for r in iterations],
                              ["iteration", "median_ms", "p10_ms", "p90_ms", "data_ms"])
    json_path, _ = C.write_report(args.out or C.default_out_dir(), args.tag, payload, table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
