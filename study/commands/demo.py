"""``dastudy demo``: the whole platform end to end on the embedded synthetic benchmark, in minutes on a laptop CPU.

Steps: generate the synthetic two-domain benchmark if absent (``datasets/synth``) → train the source-only
baseline (reused when it exists) → run the ``demo`` study (λ_adv × learning rate, TPE, ASHA, two trials at a
time; four trials per GPU where CUDA is present) → print the results table and the TensorBoard command.
Re-runnable: the benchmark and the baseline are reused, and each run gets a new study name (demo, demo-2, ...).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DESCRIPTION = """\
Run the demo study end to end on the synthetic benchmark:

  1. generate the synthetic benchmark into datasets/synth (skipped when present)
  2. train the source-only baseline (reused when an identical one exists in STORAGE/baselines)
  3. run the `demo` study: adversarial adaptation from the baseline, λ_adv × learning rate searched by
     Optuna TPE, ASHA early stopping, 2 trials at a time on CPU (0.25 GPU each where CUDA is present)
  4. print the trials (parameters, metric, state: COMPLETE / PRUNED / FAILED) and the best configuration

Nothing is overwritten: every run creates a new study (demo, demo-2, ...) unless --name is given."""

SYNTH_DIR = Path("datasets/synth")
# Sizes of the synthetic benchmark the shipped synth_* run configs expect (data.synthetic defaults).
SYNTH_KWARGS: dict = {}


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="end-to-end demo study on the synthetic benchmark (CPU, minutes)",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="study overrides (e.g. num_samples=4)")
    _options(parser)
    parser.set_defaults(func=_demo)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=None, help="study name (default: demo, demo-2, ... the first unused)")
    parser.add_argument("--storage", default=None, metavar="PATH",
                        help="where studies live (default: $DASTUDY_STORAGE or ./studies)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help=f"synthetic benchmark folder (default: {SYNTH_DIR}; generated when absent)")
    parser.add_argument("--preset", default=None, help="study preset (default: demo)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--cpu", action="store_true", default=None,
                        help="stay on CPU even when CUDA is available")


def free_name(base: str, storage_root: Path) -> str:
    """``base`` if unused in the storage, else ``base-2``, ``base-3``, ..."""
    if not (storage_root / base).exists():
        return base
    n = 2
    while (storage_root / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _ensure_benchmark(root: Path) -> None:
    from data.synthetic import generate

    existed = (root / "manifest.json").is_file()
    start = time.perf_counter()
    result = generate(root, seed=0, progress=not existed and sys.stderr.isatty(), **SYNTH_KWARGS)
    if result.created:
        print(f"synthetic benchmark: generated {root} in {time.perf_counter() - start:.1f}s")
    else:
        print(f"synthetic benchmark: reusing {root}")
    _ensure_prepared_labels(root / "source")


def _ensure_prepared_labels(source_root: Path) -> None:
    """Convert the source's 16-bit labels to 8-bit trainIds once (written next to them, never over them).

    Decoding 16-bit PNGs in pure Python was 28% of every demo iteration (docs/performance.md, data path)."""
    from data.layouts import PREPARED_LABEL_DIR, PREPARED_MARKER
    from data.prepare import prepare_synthia

    if (source_root / PREPARED_LABEL_DIR / PREPARED_MARKER).is_file():
        return
    start = time.perf_counter()
    prepare_synthia(source_root, existing="skip", workers=0)
    print(f"synthetic benchmark: source labels converted to 8-bit trainIds in {time.perf_counter() - start:.1f}s")


def demo_overrides(*, data: Path, cuda: bool) -> list[str]:
    """Overrides the demo applies to its preset: the benchmark location and, with CUDA, GPU packing."""
    out = []
    if data != SYNTH_DIR:
        # The trials and the source-only baseline they start from both read the benchmark given with --data.
        for section in ("train.data", "baseline.overrides.data"):
            for domain, sub in (("source", "source"), ("target", "target"), ("val", "target")):
                out.append(f"{section}.{domain}.root={json.dumps(str(data / sub))}")
    if cuda:
        # Four trials share one GPU (0.25 each, memory capped per trial); more trials fit at once than on CPU.
        out += ["resources.gpu=0.25", "resources.cpu=1", "max_concurrent_trials=4", "train.runtime.device=\"auto\""]
    return out


def _demo(args: argparse.Namespace) -> int:
    from study.commands.study import _summarize, as_user_errors, split_overrides
    from study.config.study_config import load_study_config
    from study.state.location import default_storage, locate
    from study.run.tuner import run_study

    @as_user_errors
    def run(args: argparse.Namespace) -> int:
        start = time.perf_counter()
        args = split_overrides(args, _options)
        args.preset = args.preset or "demo"
        data = Path(args.data or SYNTH_DIR)
        _ensure_benchmark(data)
        cuda = _cuda_available() and not args.cpu
        overrides = demo_overrides(data=data, cuda=cuda) + list(args.overrides)
        storage = args.storage or default_storage()
        name = args.name or free_name(args.preset, locate(args.preset, storage).home.parent)
        study_cfg = load_study_config(args.preset, overrides, name=name)
        where = "one GPU, 0.25 per trial" if cuda else f"CPU, {study_cfg.resources.cpu:g} per trial"
        print(f"demo study {name}: {study_cfg.num_samples} trials, {study_cfg.max_concurrent_trials} at a time "
              f"({where})")
        _, location = run_study(study_cfg, storage=args.storage, num_cpus=args.num_cpus)
        code = _summarize(location, args.storage)
        print(f"\ndemo finished in {time.perf_counter() - start:.0f}s")
        return code

    return run(args)
