"""Evaluation of a segmentation network on a labelled split.

The logits of the main output are upsampled (bilinear, ``align_corners=True``) to the label resolution the
dataset delivers: the native resolution under the ``full`` protocol (AdaptSegNet/ADVENT: 1024×512 input,
2048×1024 labels), the input size under the ``seed`` protocol (MaxSquareLoss: labels resized with nearest).
Optional horizontal-flip test-time augmentation averages the softmax of the image and of its mirror (MaxSquareLoss
``--flip``). Nothing is copied to the host per batch: the confusion matrix and a non-finite-logit counter stay on
the device until the end.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from trainables.device import resolve_device
from trainables.losses import upsample
from trainables.metrics import ConfusionMatrix

__all__ = ["EvalOutput", "predict", "evaluate_model", "evaluate_checkpoint"]


@dataclass
class EvalOutput:
    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_logits: int = 0
    images: int = 0


def predict(model: torch.nn.Module, image: torch.Tensor, size: tuple[int, int], *, flip: bool = False,
            autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """Class scores (B, C, H, W) at ``size``: logits without flip, averaged softmax with flip."""
    with autocast():
        logits = model(image)["out"]
    scores = upsample(logits, size)
    if not flip:
        return scores
    with autocast():
        mirrored = model(image.flip(-1))["out"]
    return (F.softmax(scores, dim=1) + F.softmax(upsample(mirrored, size), dim=1).flip(-1)) / 2


def _sample(image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor, normalization: str) -> dict[str, Any]:
    """One panel for reporters: image (denormalised RGB uint8), label and prediction, all at the label size."""
    from data.transforms import denormalize

    if tuple(image.shape[-2:]) != tuple(label.shape[-2:]):
        image = F.interpolate(image[None].float(), size=tuple(label.shape[-2:]), mode="bilinear",
                              align_corners=True)[0]
    return {"image": denormalize(image.cpu(), normalization), "label": label.cpu().long().numpy(),
            "pred": pred.cpu().long().numpy()}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, batches: Iterable[dict], *, num_classes: int, device: torch.device,
                   flip: bool = False, normalization: str = "caffe", num_samples: int = 0,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                   channels_last: bool = False) -> EvalOutput:
    """Confusion-matrix metrics of ``model`` over ``batches`` of ``{"image", "label"}`` dicts.

    The model is put in eval mode for the pass and restored to its previous mode afterwards. The first
    ``num_samples`` images are returned as panels (``{"image", "label", "pred"}`` numpy arrays).
    """
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, device)
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)
    samples: list[dict[str, Any]] = []
    images = 0
    try:
        for batch in batches:
            image = batch["image"].to(device, non_blocking=True)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            label = batch["label"].to(device, non_blocking=True)
            scores = predict(model, image, tuple(label.shape[-2:]), flip=flip, autocast=autocast)
            nonfinite += (~torch.isfinite(scores)).sum()
            pred = scores.argmax(dim=1)
            matrix.update(pred, label)
            for i in range(min(num_samples - len(samples), image.shape[0])):
                samples.append(_sample(batch["image"][i], label[i], pred[i], normalization))
            images += image.shape[0]
    finally:
        model.train(was_training)
    return EvalOutput(metrics=matrix.compute(), samples=samples, nonfinite_logits=int(nonfinite), images=images)


def evaluate_checkpoint(cfg, checkpoint: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """Evaluate a weight file on ``cfg.data.val`` with ``cfg.eval`` (protocol, flip, max_images).

    ``checkpoint``: a dastudy checkpoint (``best.pt``/``last.pt``) or any format ``models.pretrained.load_weights``
    reads (published DeeplabMulti checkpoints). Returns ``{"metrics": {"val/…": …}, "load_summary": str,
    "images": n, "wall_s": s}``.
    """
    import time

    from models.pretrained import WeightsError, load_weights
    from trainables import builders
    from trainables.checkpoint import CheckpointError

    builders.validate_config(cfg)
    start = time.perf_counter()
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint {checkpoint} is a directory; give the checkpoint file (e.g. "
                              f"{Path(checkpoint) / 'checkpoints' / 'best.pt'})" if Path(checkpoint).is_dir()
                              else f"checkpoint {checkpoint} does not exist")
    torch_device = resolve_device(device or cfg.runtime.device)
    model = builders.build_segmentation_model(cfg)
    try:
        summary = load_weights(model, checkpoint)
    except WeightsError as err:
        raise CheckpointError(f"checkpoint {checkpoint} does not fit {cfg.model.name} with "
                              f"{cfg.data.num_classes} classes: {err}") from None
    model.to(torch_device)
    if cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    normalization = builders.resolve_normalization(cfg)
    dataset = builders.build_eval_dataset(cfg, normalization=normalization)
    autocast = (lambda: torch.autocast(device_type=torch_device.type, dtype=torch.bfloat16)) \
        if cfg.runtime.amp == "bf16" else contextlib.nullcontext
    out = evaluate_model(model, builders.eval_loader(dataset, cfg, pin_memory=torch_device.type == "cuda"),
                         num_classes=cfg.data.num_classes, device=torch_device, flip=cfg.eval.flip,
                         normalization=normalization, autocast=autocast, channels_last=cfg.runtime.channels_last)
    if out.nonfinite_logits:
        raise CheckpointError(f"checkpoint {checkpoint} gives {out.nonfinite_logits} non-finite logits")
    return {"metrics": {f"val/{k}": v for k, v in out.metrics.items()}, "load_summary": str(summary),
            "images": out.images, "wall_s": time.perf_counter() - start}
