"""Checkpoint volume of a study of checkpointing probes, with and without removing the checkpoints of PRUNED and
FAILED trials (``keep_pruned_checkpoints``), and the pre-launch estimate for both (issue 12).

``python -m benchmarks.checkpoint_volume --trials 64 --checkpoint-kib 256`` runs two studies of
:func:`trainables.tune.checkpoint_probe` (no torch training: 8 evaluations, each with a checkpoint of the given
size, ASHA with reduction factor 2) on a private local Ray and prints one JSON object: bytes left in
``checkpoint_*`` directories, trials by state, wall time. A real DeepLabV2 checkpoint is ~400 MiB
(``trainables.tune.checkpoint_state_bytes``); the volume scales with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--checkpoint-kib", type=int, default=256)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import ray

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "study"))
    from data.synthetic import generate
    from study_helpers import TEST_RAY_ENV
    from test_economy import _checkpoint_bytes, run_probe_study

    os.environ.update(TEST_RAY_ENV)
    os.environ["DASTUDY_PROBE_CKPT_BYTES"] = str(args.checkpoint_kib * 1024)
    os.environ["DASTUDY_PROBE_DIVERGE_BELOW"] = "0.05"  # ~5 % of the trials diverge at their second evaluation
    out: dict = {"trials": args.trials, "checkpoint_bytes": args.checkpoint_kib * 1024,
                 "concurrent": args.concurrent}
    with tempfile.TemporaryDirectory(prefix="ckv-", dir="/tmp") as tmp:
        bench = Path(tmp) / "bench"
        generate(bench, seed=0, num_source=4, num_source_val=2, num_target_train=22, num_target_val=2,
                 source_size=(64, 40), target_size=(64, 32))
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False, object_store_memory=100 * 1024 ** 2, _temp_dir=str(Path(tmp) / "r"))
        try:
            for keep in (True, False):
                start = time.perf_counter()
                home, trials = run_probe_study(bench, Path(tmp) / "studies", name=f"keep-{keep}".lower(),
                                               num_samples=args.trials, keep_pruned=keep,
                                               concurrent=args.concurrent)
                states: dict[str, int] = {}
                for t in trials:
                    states[t.state.name] = states.get(t.state.name, 0) + 1
                out["keep" if keep else "cleaned"] = {
                    "checkpoint_bytes_left": sum(_checkpoint_bytes(p) for p in home.glob("trial_*")),
                    "checkpoint_dirs_left": len(list(home.glob("trial_*/checkpoint_*"))),
                    "states": states, "wall_s": round(time.perf_counter() - start, 1)}
        finally:
            ray.shutdown()
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
