"""Cost of the label-free validators (:mod:`trainables.validators`) against the evaluation they are part of.

Demo size (CPU): ``deeplabv2_tiny`` multi-level, 16 classes, 128×64 inputs, the synthetic target's 100 val images at
their native 192×96 labels (the demo's evaluation, ``full`` protocol), adversarial (D_main present). The validators
run with ``eval.validator_images`` target-train images × ``eval.validator_pixels`` pixels (defaults 4 × 256) and
the first ``validator_images`` source-val images. Variants, timed interleaved on the same model (random weights: the
cost does not depend on them):

- ``evaluation``: the target-val pass (:func:`trainables.evaluation.evaluate_model`), what every evaluation costs;
- ``all``: every validator; ``target``: entropy + IM + BNM (the shared target forward passes); ``snd``;
  ``source_val``; ``d_confusion`` (target and source passes plus D).

Goal: ``all`` ≤ 10 % of ``evaluation``. Example::

    python -m benchmarks.validators --data datasets/synth --repeats 5
    python -m benchmarks.validators --data datasets/synth --images 16 --pixels 256   # the validator study's sizes
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks import _common as C

VARIANTS = {"all": ("source_val", "entropy", "im", "bnm", "snd", "d_confusion"), "target": ("entropy", "im", "bnm"),
            "snd": ("snd",), "source_val": ("source_val",), "d_confusion": ("d_confusion",)}


def _config(data: Path, *, images: int, pixels: int, threads: int):
    from trainables.config import TrainConfig, from_dict

    target = {"dataset": "cityscapes", "root": str(data / "target"), "size": [128, 64]}
    return from_dict(TrainConfig, {
        "name": "validator_cost",
        "data": {"source": {"dataset": "synthia", "root": str(data / "source"), "split": "train", "size": [128, 64]},
                 "target": {**target, "split": "train"}, "val": {**target, "split": "val"},
                 "num_classes": 16, "workers": 0, "cache": True},
        "model": {"name": "deeplabv2_tiny", "multi_level": True},
        "adapt": {"mode": "adversarial", "d_ndf": 16},
        "eval": {"protocol": "full", "validators": list(VARIANTS["all"]), "validator_images": images,
                 "validator_pixels": pixels},
        "runtime": {"device": "cpu", "threads": threads, "progress": False},
    }, source="benchmarks.validators")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=C.REPO / "datasets" / "synth",
                        help="a synthetic benchmark (dastudy data synth; default datasets/synth)")
    parser.add_argument("--images", type=int, default=4, help="eval.validator_images (default 4)")
    parser.add_argument("--pixels", type=int, default=256, help="eval.validator_pixels (default 256)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)

    from trainables import builders
    from trainables.engine import Trainer
    from trainables.evaluation import evaluate_model
    from trainables.validators import ValidatorSet

    cfg = _config(args.data, images=args.images, pixels=args.pixels, threads=args.threads)
    trainer = Trainer(cfg, None)
    device = trainer.device
    machine = C.machine_info(device)
    loader = lambda ds: builders.eval_loader(ds, cfg, pin_memory=False)  # noqa: E731
    full = trainer.validators
    sets = {name: ValidatorSet(names, target=full.target.dataset, source_val=full.source_val.dataset,
                               images=args.images, pixels=args.pixels, num_classes=16, select_metric="mIoU13",
                               device=device) for name, names in VARIANTS.items()}
    for dataset in (trainer.val_dataset, full.target.dataset, full.source_val.dataset):
        preload = getattr(getattr(dataset, "dataset", dataset), "preload", None)
        if preload is not None:
            preload()  # decoded once: the timing is the network's and the validators', not PNG decoding
    discriminator = trainer.discriminators["main"]
    variants = {"evaluation": lambda: evaluate_model(trainer.model, loader(trainer.val_dataset), num_classes=16,
                                                     device=device)}
    for name, vset in sets.items():
        variants[name] = (lambda v=vset: v.score(trainer.model, loader, discriminator=discriminator))
    times = C.time_interleaved(variants, device=device, warmup=1, repeats=args.repeats)
    trainer.close()
    summary = {name: C.summarize(t) for name, t in times.items()}
    base = summary["evaluation"]["median_ms"]
    rows = [{"variant": name, "median ms": s["median_ms"], "spread": s["spread"],
             "% of evaluation": 100 * s["median_ms"] / base if name != "evaluation" else 100.0}
            for name, s in summary.items()]
    table = C.markdown_table(rows, ["variant", "median ms", "spread", "% of evaluation"])
    payload = {"machine": machine, "settings": {"val_images": len(trainer.val_dataset), "images": args.images,
                                                "pixels": args.pixels, "repeats": args.repeats},
               "summary": summary}
    json_path, md_path = C.write_report(args.out or C.default_out_dir(), f"validators_{args.images}x{args.pixels}",
                                        payload, table)
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
