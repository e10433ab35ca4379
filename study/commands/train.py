"""``dastudy train-source``, ``dastudy adapt`` and ``dastudy evaluate``: single runs, the seed codebase's three
workflows (source-only / oracle training, SYNTHIA→Cityscapes adaptation, evaluation of a checkpoint).

Configs are TOML files or names of configs shipped in :mod:`study.configs` (``dastudy config list``), with
``key.sub=value`` overrides. torch is imported inside the command functions only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

SOURCE_MODES = ("source_only",)
ADAPT_MODES = ("adversarial", "target_loss")

_CONFIG_HELP = "a TOML run config, or the name of a shipped one (`dastudy config list`)"
_OVERRIDES_HELP = "overrides key.sub=value, e.g. optim.lr=1e-3 model.name=deeplabv2_tiny (values are TOML)"


def register(subparsers) -> None:
    for name, modes, summary in (
        ("train-source", SOURCE_MODES,
         "train on the labelled source domain only (source-only baseline; the oracle when the source is the target)"),
        ("adapt", ADAPT_MODES,
         "adapt a source-only model to the target domain (AdaptSegNet output-space adversarial training and/or "
         "target losses)"),
    ):
        parser = subparsers.add_parser(
            name, help=summary, description=summary + ". Writes config.toml, provenance.json, metrics.jsonl, "
            "checkpoints/{last,best}.pt and result.json into the run directory.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="examples:\n  dastudy %s %s --out runs/try1\n  dastudy %s CONFIG optim.iter_stop=2000 --resume"
                   % (name, "synth_source" if name == "train-source" else "synth_adapt", name))
        parser.add_argument("config", help=_CONFIG_HELP)
        parser.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
        parser.add_argument("--out", type=Path, help="run directory (default: runs/<config name>)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an existing run of this tool in --out (other files there are kept)")
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
        parser.add_argument("--resume-from", type=Path, metavar="CHECKPOINT",
                            help="continue from this full checkpoint (a last.pt), writing into --out")
        parser.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
        parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events to <out>/tb")
        if name == "adapt":  # docs/pbt.md: a population-based-training member's schedule rerun as one run
            parser.add_argument("--schedule", type=Path, metavar="FILE",
                                help="replay a λ_adv / lr schedule: a PBT member's <study>/<trial>/run/lineage.jsonl "
                                     "or a JSON {\"segments\": [{\"iteration\": k, \"hparams\": {...}}]}")
        parser.set_defaults(func=_train, allowed_modes=modes, command_name=name)

    evaluate = subparsers.add_parser(
        "evaluate", help="evaluate a checkpoint on the config's target val split (mIoU19/16/13, per-class IoU)",
        description="Evaluate a checkpoint (a dastudy best.pt/last.pt, or a published DeeplabMulti checkpoint) on "
                    "data.val of CONFIG and print the per-class IoU table.",
        epilog="example: dastudy evaluate synth_adapt --checkpoint runs/synth_adapt/checkpoints/best.pt --flip")
    evaluate.add_argument("config", help=_CONFIG_HELP)
    evaluate.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="weight file to evaluate")
    evaluate.add_argument("--protocol", choices=("full", "seed"),
                          help="full: logits upsampled to the native label size (AdaptSegNet/ADVENT); seed: labels "
                               "resized to the input size (MaxSquareLoss/seed). Default: eval.protocol of CONFIG")
    evaluate.add_argument("--flip", action="store_true", help="average the softmax with that of the mirrored image")
    evaluate.add_argument("--json", type=Path, metavar="FILE", help="also write the metrics to FILE")
    evaluate.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: runtime.device of CONFIG)")
    evaluate.set_defaults(func=_evaluate)


def _load(args):
    from study.config.files import load_train_config
    from trainables.builders import validate_config

    cfg = load_train_config(args.config, args.overrides)
    validate_config(cfg, source=str(args.config))
    if getattr(args, "command_name", None):  # training: refuse a size that cannot fit before anything is built
        from trainables.builders import check_memory
        from trainables.engine import resolve_device

        check_memory(cfg, resolve_device(cfg.runtime.device), source=str(args.config))
    return cfg


def _train(args) -> int:
    from study.errors import UserError

    cfg = _load(args)
    if cfg.adapt.mode not in args.allowed_modes:
        other = "adapt" if args.command_name == "train-source" else "train-source"
        raise UserError(f"{args.config}: adapt.mode = {cfg.adapt.mode!r} is not a {args.command_name} run; use "
                        f"`dastudy {other} {args.config}` or override adapt.mode="
                        + " | ".join(args.allowed_modes))
    if args.resume and args.resume_from:
        raise UserError("give --resume or --resume-from, not both")
    if (args.resume or args.resume_from) and args.overwrite:
        raise UserError("--overwrite replaces a run and --resume continues it: give one of them")
    run_dir = args.out or Path("runs") / cfg.name
    resume = args.resume_from if args.resume_from else bool(args.resume)

    from trainables import run_training
    from trainables.reporters import ConsoleReporter

    reporters = [ConsoleReporter(progress=cfg.runtime.progress and not args.no_progress)]
    if getattr(args, "schedule", None):
        from trainables.lineage import ScheduleReporter, load_schedule

        if resume:  # the checkpoint holds the scheduled values, the config the first ones: refused by the engine
            raise UserError("--schedule replays from the start: give it without --resume / --resume-from")
        try:
            reporters.append(ScheduleReporter(load_schedule(args.schedule)))
        except (OSError, ValueError) as err:
            raise UserError(str(err)) from None
    if args.tensorboard:
        from trainables.tensorboard import TensorBoardReporter

        reporters.append(TensorBoardReporter(run_dir / "tb"))
    result = run_training(cfg, run_dir, reporters=reporters, resume=resume, overwrite=args.overwrite)
    print(f"run directory: {run_dir}")
    if result["status"] in ("diverged", "failed"):
        print(f"dastudy: {result['message']}", file=sys.stderr)
        return 1
    return 0


def _evaluate(args) -> int:
    from trainables.evaluation import evaluate_checkpoint
    from trainables.metrics import format_iou_table

    cfg = _load(args)
    eval_cfg = dataclasses.replace(cfg.eval, protocol=args.protocol or cfg.eval.protocol,
                                   flip=args.flip or cfg.eval.flip)
    cfg = dataclasses.replace(cfg, eval=eval_cfg)
    out = evaluate_checkpoint(cfg, args.checkpoint, device=args.device)
    val = cfg.data.val
    print(f"checkpoint: {out['load_summary']}")
    title = (f"{val.dataset}/{val.split} ({out['images']} images, input {val.size[0]}x{val.size[1]}, protocol "
             f"{cfg.eval.protocol}{', flip' if cfg.eval.flip else ''}, {out['wall_s']:.1f} s)")
    print(format_iou_table(out["metrics"], cfg.data.num_classes, prefix="val/", title=title))
    if args.json:
        record = {"checkpoint": str(args.checkpoint), "config": str(args.config), "protocol": cfg.eval.protocol,
                  "flip": cfg.eval.flip, "images": out["images"],
                  "metrics": {k: (v if v == v else None) for k, v in out["metrics"].items()}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0
