"""Time the AdaptSegNet adversarial step: a reference written in the published code's style vs the engine's step.

The *reference* (:class:`PublishedStyleStep`) is the body of AdaptSegNet's ``train_gta2cityscapes_multi.py`` loop
(Tsai et al., CVPR 2018, https://arxiv.org/abs/1802.10349), rewritten here in that code's style around this project's
model classes: plain fp32 eager, ``nn.Upsample`` modules, the published masked ``CrossEntropy2d``-style loss,
``BCEWithLogitsLoss`` against label tensors built on the host and copied over, blocking host-to-device copies, and
a host sync (``.item()``) for every logged loss at every step, as the published code's ``.data.cpu().numpy()``.

The *project* step is the engine's own: a :class:`trainables.engine.Trainer` built from a run config with the same
model, sizes and batch, driven through ``Trainer.fit`` (poly schedule, :func:`trainables.steps.adaptation_step`,
loss accumulation, host syncs only at log intervals). Its batch streams are replaced by fixed pre-collated
batches so that only the step is timed (``benchmarks.loader`` times the data pipeline).

Both run in one process, interleaved, after a warm-up; times are medians with their p10–p90 spread. FLOPs come
from ``FlopCounterMode`` over one step; peak memory is CUDA ``max_memory_allocated`` or the CPU peak-RSS delta of
building and warming up each variant. ``--procs N`` runs N processes of the project step at once (after a common
start barrier) and compares their aggregate throughput with one process: the packing of N trials per device.

Examples::

    python -m benchmarks.step                                  # demo size on this machine (CPU)
    python -m benchmarks.step --setting published --device cuda --ref-batch 1 --precision bf16 --channels-last --batch 4
    python -m benchmarks.step --setting published --device cuda --precision bf16 --channels-last --procs 4
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

from benchmarks import _common as C

# The two settings the issue names. "published": AdaptSegNet's SYNTHIA/GTA5 → Cityscapes step (DeeplabMulti
# ResNet-101 with the published two-branch ASPP, 19 classes, 1280×720 + 1024×512, discriminators of width 64).
# "demo": the CPU demo study's run config (study/presets/demo.toml).
SETTINGS: dict[str, dict[str, Any]] = {
    "published": dict(model="deeplabv2_resnet101", num_classes=19, aspp=(6, 12), source_size=(1280, 720),
                      target_size=(1024, 512), batch=1, ndf=64),
    "demo": dict(model="deeplabv2_tiny", num_classes=16, aspp=(6, 12, 18, 24), source_size=(128, 64),
                 target_size=(128, 64), batch=4, ndf=16),
}
LR, LR_D, MOMENTUM, WEIGHT_DECAY, POWER, ITER_MAX = 2.5e-4, 1e-4, 0.9, 5e-4, 0.9, 250_000
LAMBDA_SEG, LAMBDA_ADV_TARGET1, LAMBDA_ADV_TARGET2 = 0.1, 0.0002, 0.001


# ---------------------------------------------------------------------------------------------------------
# the reference, in the published code's style


def lr_poly(base_lr, iter, max_iter, power):
    return base_lr * ((1 - float(iter) / max_iter) ** (power))


def adjust_learning_rate(optimizer, i_iter, learning_rate):
    lr = lr_poly(learning_rate, i_iter, ITER_MAX, POWER)
    optimizer.param_groups[0]['lr'] = lr
    if len(optimizer.param_groups) > 1:
        optimizer.param_groups[1]['lr'] = lr * 10


class CrossEntropy2d(nn.Module):
    """The published segmentation loss: gather the non-ignored pixels (a boolean mask, hence a host sync), then
    mean cross-entropy over them."""

    def __init__(self, size_average=True, ignore_label=255):
        super(CrossEntropy2d, self).__init__()
        self.size_average = size_average
        self.ignore_label = ignore_label

    def forward(self, predict, target, weight=None):
        n, c, h, w = predict.size()
        target_mask = (target >= 0) * (target != self.ignore_label)
        target = target[target_mask]
        if not target.data.dim():
            return torch.zeros(1, device=predict.device)
        predict = predict.transpose(1, 2).transpose(2, 3).contiguous()
        predict = predict[target_mask.view(n, h, w, 1).repeat(1, 1, 1, c)].view(-1, c)
        loss = F.cross_entropy(predict, target, weight=weight, reduction='mean' if self.size_average else 'sum')
        return loss


def loss_calc(pred, label, device):
    label = label.long().to(device)
    criterion = CrossEntropy2d().to(device)
    return criterion(pred, label)


class PublishedStyleStep:
    """One iteration of the published AdaptSegNet multi-level loop (``iter_size = 1``), on our model classes."""

    def __init__(self, model, model_D1, model_D2, input_size, input_size_target, device):
        self.device = device
        self.model = model
        self.model.train()
        self.model.to(device)
        self.model_D1, self.model_D2 = model_D1, model_D2
        self.model_D1.train()
        self.model_D1.to(device)
        self.model_D2.train()
        self.model_D2.to(device)
        self.optimizer = optim.SGD([{'params': [p for p in model.backbone_parameters() if p.requires_grad], 'lr': LR},
                                    {'params': [p for p in model.head_parameters() if p.requires_grad], 'lr': 10 * LR}],
                                   lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.optimizer.zero_grad()
        self.optimizer_D1 = optim.Adam(model_D1.parameters(), lr=LR_D, betas=(0.9, 0.99))
        self.optimizer_D1.zero_grad()
        self.optimizer_D2 = optim.Adam(model_D2.parameters(), lr=LR_D, betas=(0.9, 0.99))
        self.optimizer_D2.zero_grad()
        self.bce_loss = torch.nn.BCEWithLogitsLoss()
        self.interp = nn.Upsample(size=(input_size[1], input_size[0]), mode='bilinear', align_corners=True)
        self.interp_target = nn.Upsample(size=(input_size_target[1], input_size_target[0]), mode='bilinear',
                                         align_corners=True)
        self.source_label = 0
        self.target_label = 1
        self.i_iter = 0
        self.loss_values = {}

    def __call__(self, source_batch, target_batch):
        model, model_D1, model_D2 = self.model, self.model_D1, self.model_D2
        device = self.device
        loss_seg_value1 = loss_adv_target_value1 = loss_D_value1 = 0
        loss_seg_value2 = loss_adv_target_value2 = loss_D_value2 = 0

        self.optimizer.zero_grad()
        adjust_learning_rate(self.optimizer, self.i_iter, LR)
        self.optimizer_D1.zero_grad()
        self.optimizer_D2.zero_grad()
        adjust_learning_rate(self.optimizer_D1, self.i_iter, LR_D)
        adjust_learning_rate(self.optimizer_D2, self.i_iter, LR_D)

        # train G
        for param in model_D1.parameters():
            param.requires_grad = False
        for param in model_D2.parameters():
            param.requires_grad = False

        # train with source
        images, labels = source_batch['image'], source_batch['label']
        images = images.to(device)
        out = model(images)
        pred1, pred2 = out['aux'], out['out']
        pred1 = self.interp(pred1)
        pred2 = self.interp(pred2)
        loss_seg1 = loss_calc(pred1, labels, device)
        loss_seg2 = loss_calc(pred2, labels, device)
        loss = loss_seg2 + LAMBDA_SEG * loss_seg1
        loss.backward()
        loss_seg_value1 += loss_seg1.item()
        loss_seg_value2 += loss_seg2.item()

        # train with target
        images = target_batch['image']
        images = images.to(device)
        out = model(images)
        pred_target1, pred_target2 = out['aux'], out['out']
        pred_target1 = self.interp_target(pred_target1)
        pred_target2 = self.interp_target(pred_target2)
        D_out1 = model_D1(F.softmax(pred_target1, dim=1))
        D_out2 = model_D2(F.softmax(pred_target2, dim=1))
        loss_adv_target1 = self.bce_loss(D_out1, torch.FloatTensor(D_out1.data.size()).fill_(self.source_label).to(device))
        loss_adv_target2 = self.bce_loss(D_out2, torch.FloatTensor(D_out2.data.size()).fill_(self.source_label).to(device))
        loss = LAMBDA_ADV_TARGET1 * loss_adv_target1 + LAMBDA_ADV_TARGET2 * loss_adv_target2
        loss.backward()
        loss_adv_target_value1 += loss_adv_target1.item()
        loss_adv_target_value2 += loss_adv_target2.item()

        # train D
        for param in model_D1.parameters():
            param.requires_grad = True
        for param in model_D2.parameters():
            param.requires_grad = True

        # train with source
        pred1 = pred1.detach()
        pred2 = pred2.detach()
        D_out1 = model_D1(F.softmax(pred1, dim=1))
        D_out2 = model_D2(F.softmax(pred2, dim=1))
        loss_D1 = self.bce_loss(D_out1, torch.FloatTensor(D_out1.data.size()).fill_(self.source_label).to(device))
        loss_D2 = self.bce_loss(D_out2, torch.FloatTensor(D_out2.data.size()).fill_(self.source_label).to(device))
        loss_D1 = loss_D1 / 2
        loss_D2 = loss_D2 / 2
        loss_D1.backward()
        loss_D2.backward()
        loss_D_value1 += loss_D1.item()
        loss_D_value2 += loss_D2.item()

        # train with target
        pred_target1 = pred_target1.detach()
        pred_target2 = pred_target2.detach()
        D_out1 = model_D1(F.softmax(pred_target1, dim=1))
        D_out2 = model_D2(F.softmax(pred_target2, dim=1))
        loss_D1 = self.bce_loss(D_out1, torch.FloatTensor(D_out1.data.size()).fill_(self.target_label).to(device))
        loss_D2 = self.bce_loss(D_out2, torch.FloatTensor(D_out2.data.size()).fill_(self.target_label).to(device))
        loss_D1 = loss_D1 / 2
        loss_D2 = loss_D2 / 2
        loss_D1.backward()
        loss_D2.backward()
        loss_D_value1 += loss_D1.item()
        loss_D_value2 += loss_D2.item()

        self.optimizer.step()
        self.optimizer_D1.step()
        self.optimizer_D2.step()
        self.i_iter += 1
        self.loss_values = {'loss_seg1': loss_seg_value1, 'loss_seg2': loss_seg_value2,
                            'loss_adv1': loss_adv_target_value1, 'loss_adv2': loss_adv_target_value2,
                            'loss_D1': loss_D_value1, 'loss_D2': loss_D_value2}


# ---------------------------------------------------------------------------------------------------------
# building both variants


def _batches(setting: dict[str, Any], *, batch: int, pin: bool, count: int = 2):
    sources = [C.synthetic_batch(batch=batch, size=setting["source_size"], num_classes=setting["num_classes"],
                                 seed=10 + i, pin=pin) for i in range(count)]
    targets = [C.synthetic_batch(batch=batch, size=setting["target_size"], num_classes=setting["num_classes"],
                                 seed=20 + i, pin=pin, with_label=False) for i in range(count)]
    return sources, targets


def build_reference(setting: dict[str, Any], *, batch: int, device: torch.device) -> Callable[[], None]:
    """The published-style step on fixed batches, as a no-argument callable (one call = one iteration)."""
    import models

    torch.manual_seed(0)
    model = models.create_model(setting["model"], num_classes=setting["num_classes"], multi_level=True,
                                aspp_dilations=setting["aspp"])
    discriminators = [models.create_model("fc_discriminator", in_channels=setting["num_classes"], ndf=setting["ndf"])
                      for _ in range(2)]
    step = PublishedStyleStep(model, *discriminators, setting["source_size"], setting["target_size"], device)
    sources, targets = _batches(setting, batch=batch, pin=device.type == "cuda")
    state = {"i": 0}

    def run() -> None:
        i = state["i"] = state["i"] + 1
        step(sources[i % len(sources)], targets[i % len(targets)])

    return run


def project_config(setting: dict[str, Any], *, data_root: Path, batch: int, device: torch.device, precision: str,
                   channels_last: bool, compile: bool, log_interval: int = 50):
    """The run config of the engine for this setting (datasets from a tiny synthetic benchmark: the streams are
    replaced by fixed batches, but the Trainer checks and lists its datasets)."""
    from trainables.config import TrainConfig, from_dict

    source_w, source_h = setting["source_size"]
    target_w, target_h = setting["target_size"]
    table = {
        "name": "bench-step",
        "data": {"source": {"dataset": "synthia", "root": str(data_root / "source"), "split": "train",
                            "size": [source_w, source_h]},
                 "target": {"dataset": "cityscapes", "root": str(data_root / "target"), "split": "train",
                            "size": [target_w, target_h]},
                 "val": {"dataset": "cityscapes", "root": str(data_root / "target"), "split": "val",
                         "size": [target_w, target_h]},
                 "num_classes": setting["num_classes"], "workers": 0},
        "model": {"name": setting["model"], "multi_level": True, "aspp_dilations": list(setting["aspp"])},
        "optim": {"lr": LR, "iter_max": 10 ** 8, "batch_size": batch},
        "adapt": {"mode": "adversarial", "d_ndf": setting["ndf"]},
        "eval": {"interval": 10 ** 8},
        "runtime": {"device": str(device), "amp": "bf16" if precision == "bf16" else "off",
                    "channels_last": channels_last, "compile": compile, "log_interval": log_interval,
                    "progress": False, "seed": 0},
    }
    return from_dict(TrainConfig, table, source="benchmarks.step")


def build_project(setting: dict[str, Any], *, data_root: Path, batch: int, device: torch.device, precision: str,
                  channels_last: bool, compile: bool) -> tuple[Callable[[], None], Any]:
    from trainables.engine import Trainer

    cfg = project_config(setting, data_root=data_root, batch=batch, device=device, precision=precision,
                         channels_last=channels_last, compile=compile)
    trainer = Trainer(cfg, None)
    sources, targets = _batches(setting, batch=batch, pin=device.type == "cuda")
    trainer.streams = {"source": C.RepeatingStream(sources), "target": C.RepeatingStream(targets)}

    def run() -> None:
        trainer.fit(until_iteration=trainer.iteration + 1)

    return run, trainer


# ---------------------------------------------------------------------------------------------------------
# one process: reference vs project


def _variant_row(name: str, *, batch: int, precision: str, channels_last: bool, times: list[float], flops: int,
                 memory: dict[str, Any], first_step_s: float) -> dict[str, Any]:
    stats = C.summarize(times)
    row = {"variant": name, "batch": batch, "precision": precision, "channels_last": channels_last, **stats,
           "ms_per_image": stats["median_ms"] / batch, "tflop_per_step": flops / 1e12,
           "tflops": flops / 1e12 / (stats["median_ms"] / 1e3), "first_step_s": first_step_s, "memory": memory,
           "spread_pct": 100 * stats["spread"]}
    row["peak_mem"] = (f"{memory['peak_above_entry_gib']:.2f} GiB" if "peak_above_entry_gib" in memory
                       else f"{memory.get('peak_above_entry_mib', float('nan')):.0f} MiB RSS")
    return row


def _warm_runtime(device: torch.device) -> None:
    """Imports and one small convolution forward/backward, so that one-time set-up (modules, thread pools,
    oneDNN/cuDNN handles) counts in neither variant's memory nor first step."""
    import models  # noqa: F401
    import trainables.engine  # noqa: F401

    conv = torch.nn.Conv2d(3, 8, 3).to(device)
    conv(torch.randn(1, 3, 16, 16, device=device)).sum().backward()
    C.synchronize(device)


def _measure_alone(build: Callable[[], tuple[Callable[[], None], Any]], *, device: torch.device, warmup: int,
                   count_flops: bool) -> dict[str, Any]:
    """Build a variant with nothing else alive, warm it up inside a peak-memory window, count one step's FLOPs, and
    free it again: the peak is what one trial of this configuration needs."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with C.peak_memory(device) as memory:
        run, owner = build()
        C.synchronize(device)
        start = time.perf_counter()
        run()
        C.synchronize(device)
        first = time.perf_counter() - start
        for _ in range(max(0, warmup - 1)):
            run()
    flops = C.count_flops(run) if count_flops else 0
    if owner is not None:
        owner.close()
    del run, owner
    gc.collect()
    return {"memory": dict(memory), "first": first, "flops": flops}


def compare(args: argparse.Namespace, setting: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Each variant alone first, twice (cold: first step and FLOPs; warm: peak memory without the one-time set-up
    the first variant of a process pays, e.g. oneDNN kernels), then both rebuilt and timed interleaved."""
    with C.scratch_dir("dastudy-bench-step-") as scratch:
        root = C.tiny_benchmark(scratch / "synth")
        builders: dict[str, Callable[[], tuple[Callable[[], None], Any]]] = {}
        info: dict[str, dict[str, Any]] = {}
        if not args.no_reference:
            builders["reference"] = lambda: (build_reference(setting, batch=args.ref_batch, device=device), None)
            info["reference"] = dict(batch=args.ref_batch, precision="fp32", channels_last=False)
        builders["project"] = lambda: build_project(setting, data_root=root, batch=args.batch, device=device,
                                                    precision=args.precision, channels_last=args.channels_last,
                                                    compile=args.compile)
        info["project"] = dict(batch=args.batch, precision=args.precision, channels_last=args.channels_last)
        _warm_runtime(device)
        for name, build in builders.items():  # cold: the first step (compilation, autotuning) and the FLOPs
            # FlopCounterMode does not see through a compiled graph: a compiled step reuses the eager count
            cold = _measure_alone(build, device=device, warmup=1,
                                  count_flops=not (name == "project" and args.compile))
            info[name].update(first=cold["first"], flops=cold["flops"])
        for name, build in builders.items():  # warm: the memory of the variant itself, one-time set-up excluded
            info[name]["memory"] = _measure_alone(build, device=device, warmup=args.warmup,
                                                  count_flops=False)["memory"]
        variants, owners = {}, []
        for name, build in builders.items():
            variants[name], owner = build()
            owners.append(owner)
        times = C.time_interleaved(variants, device=device, warmup=args.warmup, repeats=args.steps, block=args.block)
        for owner in owners:
            if owner is not None:
                owner.close()
    rows = [_variant_row(name, batch=d["batch"], precision=d["precision"], channels_last=d["channels_last"],
                         times=times[name], flops=d["flops"], memory=d["memory"], first_step_s=d["first"])
            for name, d in info.items()]
    if "reference" in info:
        reference = rows[0]["ms_per_image"]
        for row in rows:
            row["ratio_vs_reference"] = row["ms_per_image"] / reference
    if args.compile:
        project = rows[-1]
        project["tflop_per_step"] = (rows[0]["tflop_per_step"] * args.batch / rows[0]["batch"]
                                     if "reference" in info else math.nan)
        project["tflops"] = project["tflop_per_step"] / (project["median_ms"] / 1e3)
        project["compile_s"] = project["first_step_s"] - project["median_ms"] / 1e3
    return {"rows": rows}


# ---------------------------------------------------------------------------------------------------------
# N processes: packing


def _child(args: argparse.Namespace, setting: dict[str, Any], device: torch.device) -> None:
    """One packed process: build and warm up the project step, wait for the common start, time ``--steps``."""
    sync = Path(args.child_sync)
    with C.peak_memory(device) as memory:
        run, trainer = build_project(setting, data_root=sync / "synth", batch=args.batch, device=device,
                                     precision=args.precision, channels_last=args.channels_last, compile=args.compile)
        for _ in range(args.warmup):
            run()
        C.synchronize(device)
        (sync / f"ready_{args.child_id}").write_text("")
        deadline = time.monotonic() + 900
        while not (sync / "go").exists():
            if time.monotonic() > deadline:
                raise SystemExit("child: no start signal within 900 s")
            time.sleep(0.005)
        start = time.monotonic()  # CLOCK_MONOTONIC: comparable between the processes of one machine
        for _ in range(args.steps):
            run()
        C.synchronize(device)
        end = time.monotonic()
    trainer.close()
    (sync / f"result_{args.child_id}.json").write_text(json.dumps(
        {"start": start, "end": end, "steps": args.steps, "images": args.steps * args.batch, "memory": dict(memory),
         "threads": torch.get_num_threads(), "pid": os.getpid()}))


def _child_command(args: argparse.Namespace, sync: Path, child_id: int, threads: int) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.step", "--setting", args.setting, "--device", args.device_resolved,
               "--batch", str(args.batch), "--precision", args.precision, "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--threads", str(threads), "--child-sync", str(sync),
               "--child-id", str(child_id)]
    for flag, value in (("--model", args.model), ("--num-classes", args.num_classes), ("--ndf", args.ndf)):
        if value is not None:
            command += [flag, str(value)]
    if args.source_size:
        command += ["--source-size", args.source_size]
    if args.target_size:
        command += ["--target-size", args.target_size]
    if args.aspp:
        command += ["--aspp", args.aspp]
    if args.channels_last:
        command.append("--channels-last")
    if args.compile:
        command.append("--compile")
    return command


def _run_packed(args: argparse.Namespace, procs: int) -> dict[str, Any]:
    threads = args.threads or max(1, (os.cpu_count() or 1) // procs)
    with C.scratch_dir("dastudy-bench-sync-") as sync:
        C.tiny_benchmark(sync / "synth")  # the children's Trainers list it; their streams are fixed batches
        children = [subprocess.Popen(_child_command(args, sync, i, threads), cwd=C.REPO) for i in range(procs)]
        try:
            deadline = time.monotonic() + args.child_timeout
            while not all((sync / f"ready_{i}").exists() for i in range(procs)):
                if any(child.poll() not in (None, 0) for child in children):
                    raise SystemExit("a packed child process failed before the start barrier (see its output above)")
                if time.monotonic() > deadline:
                    raise SystemExit(f"packed children not ready within {args.child_timeout} s")
                time.sleep(0.05)
            (sync / "go").write_text("")
            for child in children:
                child.wait(timeout=args.child_timeout)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        if any(child.returncode != 0 for child in children):
            raise SystemExit(f"packed children exited with {[c.returncode for c in children]}")
        results = [json.loads((sync / f"result_{i}.json").read_text()) for i in range(procs)]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    images = sum(r["images"] for r in results)
    return {"procs": procs, "threads_per_proc": threads, "wall_s": wall, "images": images,
            "images_per_s": images / wall, "per_proc_images_per_s": [r["images"] / (r["end"] - r["start"])
                                                                      for r in results],
            "memory": [r["memory"] for r in results]}


def packing(args: argparse.Namespace) -> dict[str, Any]:
    single = _run_packed(args, 1)
    packed = _run_packed(args, args.procs)
    packed["throughput_vs_one"] = packed["images_per_s"] / single["images_per_s"]
    single["throughput_vs_one"] = 1.0
    rows = []
    for result in (single, packed):
        memory = result["memory"][0]
        peak = (f"{memory['peak_above_entry_gib']:.2f} GiB" if "peak_above_entry_gib" in memory
                else f"{memory.get('peak_above_entry_mib', math.nan):.0f} MiB RSS")
        rows.append({"procs": result["procs"], "threads_per_proc": result["threads_per_proc"],
                     "images_per_s": result["images_per_s"], "throughput_vs_one": result["throughput_vs_one"],
                     "wall_s": result["wall_s"], "peak_mem_per_proc": peak})
    return {"packing": [single, packed], "rows": rows}


# ---------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="demo",
                        help="defaults for model, classes, sizes, batch (default: demo)")
    parser.add_argument("--model", default=None, help="a registered multi-level segmentation model")
    parser.add_argument("--num-classes", type=int, default=None, choices=(16, 19))
    parser.add_argument("--aspp", default=None, help="ASPP dilations, comma-separated (published: 6,12)")
    parser.add_argument("--ndf", type=int, default=None, help="discriminator width")
    parser.add_argument("--source-size", default=None, metavar="WxH")
    parser.add_argument("--target-size", default=None, metavar="WxH")
    parser.add_argument("--batch", type=int, default=None, help="project step batch (default: the setting's)")
    parser.add_argument("--ref-batch", type=int, default=None, help="reference batch (default: --batch)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="project step precision")
    parser.add_argument("--channels-last", action="store_true", help="project step in channels_last")
    parser.add_argument("--compile", action="store_true", help="project step with runtime.compile (reports the "
                        "compile time; set TORCHINDUCTOR_CACHE_DIR to reuse compiled kernels across processes)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; packed: "
                        "cores / procs)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (default 3)")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--block", type=int, default=1, help="steps per timed block between syncs (default 1)")
    parser.add_argument("--no-reference", action="store_true", help="time the project step only")
    parser.add_argument("--procs", type=int, default=0, help="packing: N concurrent processes of the project step "
                        "vs one (0: off)")
    parser.add_argument("--child-timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="output folder (default: $OUT or benchmarks/results)")
    parser.add_argument("--tag", default=None, help="file name stem (default: derived from the options)")
    parser.add_argument("--child-sync", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-id", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_setting(args: argparse.Namespace) -> dict[str, Any]:
    setting = dict(SETTINGS[args.setting])
    if args.model:
        setting["model"] = args.model
    if args.num_classes:
        setting["num_classes"] = args.num_classes
    if args.aspp:
        setting["aspp"] = tuple(int(v) for v in args.aspp.split(","))
    if args.ndf:
        setting["ndf"] = args.ndf
    if args.source_size:
        setting["source_size"] = C.parse_size(args.source_size)
    if args.target_size:
        setting["target_size"] = C.parse_size(args.target_size)
    args.batch = args.batch or setting["batch"]
    args.ref_batch = args.ref_batch or args.batch
    return setting


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setting = resolve_setting(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    args.device_resolved = str(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the published code's setting; the engine sets it from its config
    if args.child_sync:
        _child(args, setting, device)
        return {}
    payload: dict[str, Any] = {"machine": C.machine_info(device), "setting": {**setting, "batch": args.batch,
                               "ref_batch": args.ref_batch, "precision": args.precision,
                               "channels_last": args.channels_last, "compile": args.compile}}
    if args.procs:
        payload.update(packing(args))
        columns = ["procs", "threads_per_proc", "images_per_s", "throughput_vs_one", "wall_s", "peak_mem_per_proc"]
        stem = args.tag or f"step_{args.setting}_{device.type}_{args.precision}{'_cl' if args.channels_last else ''}" \
                           f"_b{args.batch}_procs{args.procs}"
    else:
        payload.update(compare(args, setting, device))
        columns = ["variant", "batch", "precision", "channels_last", "median_ms", "ms_per_image", "p10_ms", "p90_ms",
                   "spread_pct", "ratio_vs_reference", "tflop_per_step", "tflops", "peak_mem", "first_step_s"]
        stem = args.tag or f"step_{args.setting}_{device.type}_{args.precision}{'_cl' if args.channels_last else ''}" \
                           f"_b{args.batch}_ref{'-' if args.no_reference else args.ref_batch}" \
                           f"{'_compile' if args.compile else ''}"
    table = C.markdown_table(payload["rows"], columns)
    json_path, _ = C.write_report(args.out or C.default_out_dir(), stem, payload, table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
