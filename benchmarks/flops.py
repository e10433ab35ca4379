"""FLOPs of the engine's steps and of one evaluation image, counted on the ``meta`` device (no compute, seconds).

The engine's own step functions (:func:`trainables.steps.adaptation_step`, :func:`~trainables.steps.source_only_step`)
run on meta tensors under ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, forward and
backward; optimizer updates and element-wise work are not counted). With the card's dense bf16 rate this gives the
floor of a step: no implementation runs much faster (``/work/.library/device/METHOD.md``).

Example::

    python -m benchmarks.flops                       # the published setting; floor at 800 TFLOP/s bf16
"""
from __future__ import annotations

import argparse
import contextlib
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks import _common as C
from benchmarks.step import SETTINGS


class _NoOptimizer:
    """Optimizer updates hold no matrix products; on meta tensors some implementations cannot even run."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def _meta_trainer(setting: dict[str, Any], *, mode: str) -> SimpleNamespace:
    """What the step functions read from a Trainer, with the networks on the meta device."""
    import models
    from trainables.config import AdaptConfig, OptimConfig, RuntimeConfig
    from trainables.losses import GANLoss

    with torch.device("meta"):
        model = models.create_model(setting["model"], num_classes=setting["num_classes"], multi_level=True,
                                    aspp_dilations=setting["aspp"])
        discriminators = {level: models.create_model("fc_discriminator", in_channels=setting["num_classes"],
                                                     ndf=setting["ndf"]) for level in ("main", "aux")} \
            if mode == "adversarial" else {}
    cfg = SimpleNamespace(adapt=AdaptConfig(mode=mode, d_ndf=setting["ndf"]), optim=OptimConfig(),
                          runtime=RuntimeConfig(device="cpu"))
    return SimpleNamespace(cfg=cfg, device=torch.device("meta"), forward_model=model.train(), model=model,
                           discriminators=discriminators, optimizer=_NoOptimizer(),
                           d_optimizers={level: _NoOptimizer() for level in discriminators},
                           gan_loss=GANLoss("vanilla"), autocast=contextlib.nullcontext)


def _meta_batch(size: tuple[int, int], *, batch: int, label: bool) -> dict[str, torch.Tensor]:
    width, height = size
    out = {"image": torch.empty(batch, 3, height, width, device="meta")}
    if label:
        out["label"] = torch.empty(batch, height, width, dtype=torch.long, device="meta")
    return out


def count(setting: dict[str, Any], *, batch: int = 1) -> dict[str, float]:
    from trainables.evaluation import predict
    from trainables.steps import adaptation_step, source_only_step

    out: dict[str, float] = {}
    trainer = _meta_trainer(setting, mode="adversarial")
    source = _meta_batch(setting["source_size"], batch=batch, label=True)
    target = _meta_batch(setting["target_size"], batch=batch, label=False)
    out["adversarial_step"] = C.count_flops(lambda: adaptation_step(trainer, source, target))
    trainer = _meta_trainer(setting, mode="source_only")
    out["source_only_step"] = C.count_flops(lambda: source_only_step(trainer, source))
    model = trainer.model.eval()
    image = _meta_batch(setting["target_size"], batch=1, label=False)["image"]
    label_size = (setting["target_size"][1] * 2, setting["target_size"][0] * 2)  # Cityscapes: labels at 2x input
    with torch.no_grad():
        out["evaluation_image"] = C.count_flops(lambda: predict(model, image, label_size))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="published")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=800.0, help="dense bf16 rate for the floor "
                        "(default 800: an H100 SXM's ~790-990 TFLOP/s datasheet figure, rounded as environment.md)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    flops = count(setting, batch=args.batch)
    rows = [{"what": name, "tflop": value / 1e12, "floor_ms": value / 1e12 / args.peak_tflops * 1e3}
            for name, value in flops.items()]
    payload = {"machine": C.machine_info(torch.device("cpu")), "setting": {**setting, "batch": args.batch},
               "peak_tflops": args.peak_tflops, "rows": rows}
    table = C.markdown_table(rows, ["what", "tflop", "floor_ms"])
    table += (f"\n\n{setting['model']}, {setting['num_classes']} classes, source {setting['source_size']}, target "
              f"{setting['target_size']}, batch {args.batch}; floor at {args.peak_tflops:g} TFLOP/s")
    json_path, _ = C.write_report(args.out or C.default_out_dir(), args.tag or f"flops_{args.setting}", payload,
                                  table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
