"""Throughput of the engine's evaluator (:func:`trainables.evaluation.evaluate_model`), in images per second.

Settings:

- ``demo`` (CPU): ``deeplabv2_tiny``, 16 classes, 128×64 inputs, labels at the synthetic target's native 192×96
  (the ``full`` protocol: logits upsampled to the label). Timed on pre-collated batches (the evaluator alone) and
  through the engine's eval loader over the synthetic benchmark's val split (evaluator + data pipeline).
- ``published`` (GPU): DeeplabMulti ResNet-101 (two-branch ASPP), 19 classes, 1024×512 inputs upsampled to
  2048×1024 labels, as AdaptSegNet's Cityscapes evaluation. Goal: 500 images (the Cityscapes val split) ≤ 10 s;
  the 500-image time is extrapolated from ``--images`` timed images.

Example::

    python -m benchmarks.evaluate                                   # demo, CPU
    python -m benchmarks.evaluate --setting published --device cuda --precision bf16 --channels-last
"""
from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import _common as C

SETTINGS: dict[str, dict[str, Any]] = {
    "published": dict(model="deeplabv2_resnet101", num_classes=19, aspp=(6, 12), input_size=(1024, 512),
                      label_size=(2048, 1024), images=100, batch=1),
    "demo": dict(model="deeplabv2_tiny", num_classes=16, aspp=(6, 12, 18, 24), input_size=(128, 64),
                 label_size=(192, 96), images=100, batch=1),
}
CITYSCAPES_VAL = 500


def _model(setting: dict[str, Any], device: torch.device, channels_last: bool) -> torch.nn.Module:
    import models

    torch.manual_seed(0)
    model = models.create_model(setting["model"], num_classes=setting["num_classes"], multi_level=True,
                                aspp_dilations=setting["aspp"]).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _batches(setting: dict[str, Any], *, count: int, batch: int, pin: bool) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(count):
        image = C.synthetic_batch(batch=batch, size=setting["input_size"], num_classes=setting["num_classes"],
                                  seed=100 + i, pin=pin, with_label=False)["image"]
        label = C.synthetic_batch(batch=batch, size=setting["label_size"], num_classes=setting["num_classes"],
                                  seed=200 + i, pin=pin)["label"]
        out.append({"image": image, "label": label})
    return out


def time_evaluator(model, batches, *, setting, device, precision, channels_last, repeats: int) -> dict[str, Any]:
    from trainables.evaluation import evaluate_model

    autocast = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if precision == "bf16" \
        else contextlib.nullcontext
    kwargs = dict(num_classes=setting["num_classes"], device=device, autocast=autocast, channels_last=channels_last)
    evaluate_model(model, batches[:2], **kwargs)  # warm-up (cudnn autotuning, allocator)
    times, images = [], 0
    with C.peak_memory(device) as memory:
        for _ in range(repeats):
            C.synchronize(device)
            start = time.perf_counter()
            out = evaluate_model(model, batches, **kwargs)
            C.synchronize(device)
            times.append(time.perf_counter() - start)
            images = out.images
    best = sorted(times)[len(times) // 2]
    return {"images": images, "median_s": best, "images_per_s": images / best,
            "s_per_500": CITYSCAPES_VAL * best / images, "memory": dict(memory), "runs_s": times}


def time_with_loader(model, *, setting, device, data: Path, workers: int, cache: bool) -> dict[str, Any]:
    """The engine's eval dataset and loader (demo run config) over the synthetic val split."""
    from benchmarks.loader import demo_config
    from trainables import builders
    from trainables.evaluation import evaluate_model

    cfg = demo_config(data, **{"data.workers": workers, "data.cache": cache})
    dataset = builders.build_eval_dataset(cfg, normalization=builders.resolve_normalization(cfg))
    loader = builders.eval_loader(dataset, cfg, pin_memory=device.type == "cuda")
    start = time.perf_counter()
    out = evaluate_model(model, loader, num_classes=cfg.data.num_classes, device=device)
    seconds = time.perf_counter() - start
    return {"workers": workers, "cache": cache, "images": out.images, "seconds": seconds,
            "images_per_s": out.images / seconds}


def time_decoding(setting: dict[str, Any], *, images: int) -> dict[str, Any]:
    """CPU cost per image of the engine's eval dataset at this setting's sizes: Cityscapes-layout PNGs at the label
    size (synthetic scenes, written once in a scratch folder) decoded, resized to the input size (bicubic) and
    normalised, the label decoded and mapped, in one process. With the GPU's share this says how many loader
    workers evaluation needs to keep up."""
    import data
    from data.synthetic import generate
    from data.transforms import EvalPreset

    with C.scratch_dir("dastudy-bench-decode-") as scratch:
        generate(scratch / "synth", seed=0, num_source=1, num_source_val=1, num_target_train=6,
                 num_target_val=images, source_size=(64, 40), target_size=setting["label_size"])
        dataset = data.create_dataset("cityscapes", root=scratch / "synth" / "target", split="val",
                                      num_classes=setting["num_classes"],
                                      transforms=EvalPreset(size=setting["input_size"], label_size=None))
        dataset[0]  # warm-up (imports, lookup tables)
        start = time.perf_counter()
        for index in range(len(dataset)):
            item = dataset[index]
        seconds = (time.perf_counter() - start) / len(dataset)
    return {"images": len(dataset), "ms_per_image": 1e3 * seconds,
            "image_shape": list(item["image"].shape), "label_shape": list(item["label"].shape),
            "workers_for_500_in_10s": math.ceil(CITYSCAPES_VAL * seconds / 10.0)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--images", type=int, default=None, help="timed images per pass (default: the setting's)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (eval.batch_size)")
    parser.add_argument("--input-size", default=None, metavar="WxH")
    parser.add_argument("--label-size", default=None, metavar="WxH")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    parser.add_argument("--data", default=None, help="demo only: also time the engine's eval loader over this "
                        "synthetic benchmark's val split (generated when absent)")
    parser.add_argument("--decode", type=int, default=0, metavar="N",
                        help="also time the CPU side: N synthetic Cityscapes-layout images at the label size read "
                             "through the engine's eval dataset (decode, resize, normalise), per image")
    parser.add_argument("--decode-only", action="store_true", help="time only the eval dataset (--decode N), no "
                        "network: the CPU side of the published setting on a machine without a GPU")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    setting = dict(SETTINGS[args.setting])
    if args.input_size:
        setting["input_size"] = C.parse_size(args.input_size)
    if args.label_size:
        setting["label_size"] = C.parse_size(args.label_size)
    batch = args.batch or setting["batch"]
    if args.decode_only:
        decoding = time_decoding(setting, images=args.decode or 4)
        payload = {"machine": C.machine_info(device), "setting": setting, "decoding": decoding}
        table = C.markdown_table([{"path": f"eval dataset only (CPU, 1 process): decode {setting['label_size']} PNGs, "
                                           f"resize to {setting['input_size']}", **decoding}],
                                 ["path", "images", "ms_per_image", "workers_for_500_in_10s"])
        json_path, _ = C.write_report(args.out or C.default_out_dir(), args.tag or f"decode_{args.setting}", payload,
                                      table)
        print(table)
        print(f"wrote {json_path}")
        return payload
    count = max(1, (args.images or setting["images"]) // batch)
    model = _model(setting, device, args.channels_last)
    batches = _batches(setting, count=count, batch=batch, pin=device.type == "cuda")
    image = batches[0]["image"][:1].to(device)
    if args.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    from trainables.evaluation import predict

    model.eval()
    with torch.no_grad():
        flops = C.count_flops(lambda: predict(model, image, tuple(setting["label_size"][::-1])))
    result = time_evaluator(model, batches, setting=setting, device=device, precision=args.precision,
                            channels_last=args.channels_last, repeats=args.repeats)
    result.update(batch=batch, tflop_per_image=flops / 1e12,
                  tflops=flops / 1e12 * result["images_per_s"], precision=args.precision,
                  channels_last=args.channels_last)
    payload: dict[str, Any] = {"machine": C.machine_info(device), "setting": setting, "evaluator": result}
    rows = [{"path": "evaluator, pre-collated batches", "images": result["images"], "batch": batch,
             "images_per_s": result["images_per_s"], "s_per_500": result["s_per_500"],
             "tflops": result["tflops"]}]
    if args.data and args.setting == "demo":
        from benchmarks.loader import ensure_benchmark

        data = ensure_benchmark(Path(args.data))
        payload["with_loader"] = []
        for workers, cache in ((0, False), (2, False)):
            entry = time_with_loader(model, setting=setting, device=device, data=data, workers=workers, cache=cache)
            payload["with_loader"].append(entry)
            rows.append({"path": f"evaluator + eval loader (workers {workers})", "images": entry["images"],
                         "batch": 1, "images_per_s": entry["images_per_s"],
                         "s_per_500": CITYSCAPES_VAL / entry["images_per_s"]})
    if args.decode:
        payload["decoding"] = decoding = time_decoding(setting, images=args.decode)
        rows.append({"path": f"eval dataset only (CPU, 1 process): decode {setting['label_size']} PNGs, resize to "
                             f"{setting['input_size']}", "images": decoding["images"], "batch": 1,
                     "images_per_s": 1e3 / decoding["ms_per_image"],
                     "s_per_500": CITYSCAPES_VAL * decoding["ms_per_image"] / 1e3})
    table = C.markdown_table(rows, ["path", "images", "batch", "images_per_s", "s_per_500", "tflops"])
    table += (f"\n\n{setting['model']}, {setting['num_classes']} classes, input {setting['input_size']}, labels "
              f"{setting['label_size']}, {args.precision}{' channels_last' if args.channels_last else ''}, "
              f"{flops / 1e12:.3g} TFLOP per image; peak memory {result['memory']}")
    stem = args.tag or f"evaluate_{args.setting}_{device.type}_{args.precision}{'_cl' if args.channels_last else ''}" \
                       f"_b{batch}"
    json_path, _ = C.write_report(args.out or C.default_out_dir(), stem, payload, table)
    print(table)
    print(f"wrote {json_path}")
    return payload


if __name__ == "__main__":
    main()
