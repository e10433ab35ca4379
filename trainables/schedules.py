"""Polynomial learning-rate decay, set on every parameter group before each step.

``lr(it) = base_lr · (1 − it / iter_max) ** power`` (DeepLab "poly", power 0.9, used by AdaptSegNet, ADVENT and
MaxSquareLoss for the segmentation network *and* every discriminator). The rate depends on the iteration only,
so a resumed run recomputes it from the checkpointed iteration and needs no scheduler state of its own.
"""
from __future__ import annotations

import torch

__all__ = ["poly_lr", "remember_base_lrs", "apply_poly"]


def poly_lr(base_lr: float, iteration: int, iter_max: int, power: float) -> float:
    """The poly-decayed rate at ``iteration`` (0-based); 0 at and after ``iter_max``."""
    if iteration >= iter_max:
        return 0.0
    return base_lr * (1.0 - iteration / iter_max) ** power


def remember_base_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Store each group's configured rate as ``base_lr`` (the 10× head group keeps its multiplier)."""
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])


def apply_poly(optimizer: torch.optim.Optimizer, iteration: int, *, iter_max: int, power: float) -> list[float]:
    """Set every group's ``lr`` from its ``base_lr``; returns the rates set (in group order)."""
    rates = []
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["base_lr"], iteration, iter_max, power)
        rates.append(group["lr"])
    return rates
