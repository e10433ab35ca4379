"""``dastudy models``: the registered networks, their parameter counts and input normalisation."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
List the registered networks (the values allowed for model.name in a run config).

Columns: kind; normalization = the input normalisation the backbone's pretrained weights expect (caffe: BGR,
0-255, mean-subtracted, for the DeepLab init file; imagenet: RGB/255 with mean/std, for torchvision weights);
OS = encoder output stride; logits = stride of the returned logits (the caller upsamples them to the label size);
aux = has the optional auxiliary head (multi_level); parameters at 16 and 19 classes with the factory defaults
(DeepLabV2: four ASPP branches and both heads). Models are built on PyTorch's meta device: nothing is allocated
and nothing is downloaded."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list registered networks with parameter counts",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="Example: dastudy models --kind segmentation")
    parser.add_argument("--kind", choices=("segmentation", "discriminator"), default=None,
                        help="only models of this kind (default: all)")
    parser.add_argument("--json", action="store_true",
                        help="print the table as a JSON list (one object per model) instead")
    parser.set_defaults(func=run)


def _count(name: str, num_classes: int) -> int:
    import torch

    import models

    with torch.device("meta"):  # counting needs shapes only; a ResNet-101 is then built in milliseconds
        if models.model_info(name).kind == "segmentation":
            model = models.create_model(name, num_classes=num_classes)
        else:
            model = models.create_model(name, in_channels=num_classes)
    return models.count_parameters(model)


def run(args: argparse.Namespace) -> int:
    import models

    if args.json:
        import json

        print(json.dumps([{"name": name, "kind": info.kind, "normalization": info.normalization,
                           "output_stride": info.output_stride, "logits_stride": info.logits_stride,
                           "multi_level": info.multi_level_capable, "params_16": _count(name, 16),
                           "params_19": _count(name, 19), "description": info.description}
                          for name, info in ((n, models.model_info(n)) for n in models.list_models(args.kind))],
                         indent=2))
        return 0
    header = ("name", "kind", "normalization", "OS", "logits", "aux", "params@16", "params@19")
    rows = []
    for name in models.list_models(args.kind):
        info = models.model_info(name)
        rows.append((name, info.kind, info.normalization or "-", str(info.output_stride), str(info.logits_stride),
                     "yes" if info.multi_level_capable else "no", f"{_count(name, 16):,}", f"{_count(name, 19):,}"))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    numeric = {3, 4, 6, 7}
    for row in (header, *rows):
        print("  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    print()
    for name in models.list_models(args.kind):
        print(f"{name}: {models.model_info(name).description}")
    return 0
