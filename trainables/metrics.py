"""Confusion-matrix segmentation metrics: per-class IoU, mIoU over 19/16/13 classes, pixel accuracy.

The matrix (rows = ground truth, columns = prediction) is accumulated on the device with one ``torch.bincount``
per batch and read back once, when the metrics are computed. IoU_c = TP / (GT_c + Pred_c − TP); a class absent
from both the ground truth and the predictions has IoU NaN and is skipped by the means (``nanmean``, as
AdaptSegNet's ``compute_iou.py`` and MaxSquareLoss's ``utils/eval.py``).

Subsets: a 16-class model reports mIoU16 (all its classes) and mIoU13 (without wall, fence, pole); a 19-class
model reports mIoU19 and, from the *same* 19-class matrix, mIoU16 and mIoU13 as the nanmean of the per-class IoUs
of those subsets. mIoU19 is not defined for a 16-class model and is not reported.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from data import labels

__all__ = ["ConfusionMatrix", "metrics_from_matrix", "format_iou_table", "SUBSET_KEYS"]

SUBSET_KEYS = ("mIoU19", "mIoU16", "mIoU13")


class ConfusionMatrix:
    """Accumulates a (C, C) int64 matrix on ``device``; pixels whose label is not in [0, C) are ignored."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """``pred`` and ``label``: integer tensors of the same shape (any batch layout)."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
        n = self.num_classes
        label = label.to(self.matrix.device).reshape(-1)
        pred = pred.to(self.matrix.device).reshape(-1)
        valid = (label >= 0) & (label < n) & (pred >= 0) & (pred < n)
        # ignored pixels go to an extra bin instead of being masked out: boolean indexing would sync with the host
        index = torch.where(valid, label * n + pred, torch.full_like(label, n * n))
        self.matrix += torch.bincount(index, minlength=n * n + 1)[: n * n]

    def compute(self) -> dict[str, float]:
        return metrics_from_matrix(self.matrix.view(self.num_classes, self.num_classes).cpu().numpy(),
                                   self.num_classes)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def metrics_from_matrix(matrix: np.ndarray, num_classes: int) -> dict[str, float]:
    """``{"mIoU19"?, "mIoU16", "mIoU13", "pixel_acc", "IoU/<class>"...}`` from a (C, C) matrix (C = 16 or 19)."""
    if num_classes not in (16, 19):
        raise ValueError(f"num_classes = {num_classes} is not supported; allowed: 16, 19")
    matrix = np.asarray(matrix, dtype=np.float64).reshape(num_classes, num_classes)
    true_positive = np.diag(matrix)
    union = matrix.sum(axis=1) + matrix.sum(axis=0) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / np.where(union > 0, union, 1), np.nan)
    out: dict[str, float] = {}
    if num_classes == 19:
        out["mIoU19"] = _nanmean(iou)
        out["mIoU16"] = _nanmean(iou[list(labels.CLASSES_16)])
        out["mIoU13"] = _nanmean(iou[list(labels.CLASSES_13_IN_19)])
    else:
        out["mIoU16"] = _nanmean(iou)
        out["mIoU13"] = _nanmean(iou[list(labels.CLASSES_13_IN_16)])
    total = matrix.sum()
    out["pixel_acc"] = float(true_positive.sum() / total) if total > 0 else math.nan
    for name, value in zip(labels.class_names(num_classes), iou):
        out[f"IoU/{name}"] = float(value)
    return out


def format_iou_table(metrics: dict[str, float], num_classes: int, *, prefix: str = "", title: str = "") -> str:
    """A per-class IoU table (percent) with the class names of ``data.labels`` and the summary means.

    ``prefix`` selects keys such as ``val/IoU/road`` when given ``"val/"``. Classes excluded from mIoU13 are
    marked with ``*``, absent classes print as ``n/a``.
    """
    excluded_from_13 = {labels.class_names(num_classes)[i] for i in range(num_classes)} - set(
        labels.class_names(19)[t] for t in labels.CLASSES_13_IN_19)
    names = labels.class_names(num_classes)
    width = max(len(n) for n in names) + 2
    lines = [title] if title else []
    lines.append(f"{'class':<{width}} {'IoU %':>7}")
    for name in names:
        value = metrics.get(f"{prefix}IoU/{name}", math.nan)
        mark = "*" if name in excluded_from_13 else " "
        shown = "n/a" if math.isnan(value) else f"{100 * value:.2f}"
        lines.append(f"{name + mark:<{width}} {shown:>7}")
    summary = []
    for key in (*SUBSET_KEYS, "pixel_acc"):
        if f"{prefix}{key}" in metrics:
            value = metrics[f"{prefix}{key}"]
            summary.append(f"{key} {'n/a' if math.isnan(value) else f'{100 * value:.2f}'}")
    lines.append("  ".join(summary) + "   (* not in mIoU13)")
    return "\n".join(lines)
