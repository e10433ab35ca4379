"""Segmentation networks (DeepLabV2, DeepLabV3+), the output-space discriminator, and weight loading.

Public API::

    create_model(name, **kwargs)           # keyword-only factories, e.g. create_model("deeplabv2_tiny", num_classes=16)
    list_models(kind=None)                 # "segmentation" | "discriminator"
    model_info(name) -> ModelInfo          # kind, normalization, output_stride, logits_stride, multi_level_capable
    build_model(model_cfg, *, num_classes) # the one config -> kwargs mapping
    param_groups(model, *, lr, head_lr_mult=10.0)
    load_weights(model, path, *, kind="auto") -> LoadSummary   (raises WeightsError)

Segmentation models return ``{"out": logits}`` plus ``"aux"`` when multi-level, at ``model_info(name).logits_stride``;
the caller upsamples to the label size (bilinear, ``align_corners=True``). This package never imports Ray or Optuna.
"""
from __future__ import annotations

from . import deeplabv2, deeplabv3plus, discriminator  # noqa: F401  (imports register the factories)
from ._build import build_model, count_parameters, param_groups
from ._registry import ModelInfo, create_model, list_models, model_info, register_model
from .deeplabv2 import DeepLabV2, deeplabv2_resnet50, deeplabv2_resnet101, deeplabv2_tiny
from .deeplabv3plus import DeepLabV3Plus, deeplabv3plus_resnet101, deeplabv3plus_tiny
from .discriminator import FCDiscriminator, fc_discriminator
from .pretrained import LoadSummary, WeightsError, checkpoint_meta, load_weights, resolve_weights

__all__ = [
    "DeepLabV2", "DeepLabV3Plus", "FCDiscriminator", "LoadSummary", "ModelInfo", "WeightsError",
    "build_model", "checkpoint_meta", "count_parameters", "create_model", "deeplabv2_resnet50",
    "deeplabv2_resnet101", "deeplabv2_tiny", "deeplabv3plus_resnet101", "deeplabv3plus_tiny", "fc_discriminator",
    "list_models", "load_weights", "model_info", "param_groups", "register_model", "resolve_weights",
]
