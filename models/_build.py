"""The one place that turns a run configuration into factory kwargs, and the two learning-rate groups."""
from __future__ import annotations

import inspect
import logging
from typing import Any, Mapping

import torch.nn as nn

from ._registry import list_models, model_factory, model_info

logger = logging.getLogger(__name__)

# Fields of a model config (``trainables.config.ModelConfig``) that map to factory keyword arguments.
CONFIG_FIELDS = ("multi_level", "aspp_dilations", "bn_policy", "weights")
_DEFAULT_ASPP = (6, 12, 18, 24)


def _field(cfg: Any, name: str, default: Any = inspect.Parameter.empty) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def build_model(model_cfg: Any, *, num_classes: int) -> nn.Module:
    """Build the segmentation model a config describes (any object with the fields as attributes, or a mapping).

    Reads ``name`` and, where present, ``multi_level``, ``aspp_dilations``, ``bn_policy``, ``weights``, and passes
    only the keyword arguments the model's factory accepts. DeepLabV3+ has no aux head, fixed ASPP rates and trains
    every BatchNorm: ``multi_level=True`` or a non-default ``aspp_dilations`` is a ``ValueError`` for it, while
    ``bn_policy`` does not apply and is ignored (logged at DEBUG).
    """
    name = _field(model_cfg, "name")
    if name is inspect.Parameter.empty:
        raise ValueError("model config has no 'name'; registered segmentation models: "
                         + ", ".join(list_models("segmentation")))
    info = model_info(name)
    if info.kind != "segmentation":
        raise ValueError(f"model {name!r} is a {info.kind}, not a segmentation model; allowed: "
                         + ", ".join(list_models("segmentation")))
    factory = model_factory(name)
    accepted = {p.name for p in inspect.signature(factory).parameters.values() if p.kind is p.KEYWORD_ONLY}
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    for field in CONFIG_FIELDS:
        value = _field(model_cfg, field)
        if value is inspect.Parameter.empty:
            continue
        if field == "aspp_dilations":
            value = tuple(int(d) for d in value)
        if field in accepted:
            kwargs[field] = value
        elif field == "multi_level" and value:
            capable = [n for n in list_models("segmentation") if model_info(n).multi_level_capable]
            raise ValueError(f"model {name!r} has no auxiliary head: multi_level must be false for it "
                             f"(multi-level models: {', '.join(capable)})")
        elif field == "aspp_dilations" and value != _DEFAULT_ASPP:
            raise ValueError(f"model {name!r} has fixed ASPP rates; aspp_dilations={list(value)} applies to "
                             f"DeepLabV2 models only (leave it at the default {list(_DEFAULT_ASPP)})")
        elif field in ("bn_policy", "weights") and value is not None:
            logger.debug("model %s takes no %s argument; %r ignored", name, field, value)
    return factory(**kwargs)


def param_groups(model: nn.Module, *, lr: float, head_lr_mult: float = 10.0) -> list[dict[str, Any]]:
    """SGD parameter groups: backbone at ``lr``, heads/decoder at ``lr * head_lr_mult``; frozen parameters left out.

    The model must expose ``backbone_parameters()`` and ``head_parameters()``; every trainable parameter must be in
    exactly one of them (checked, so a new module cannot silently miss the optimiser).
    """
    if not (hasattr(model, "backbone_parameters") and hasattr(model, "head_parameters")):
        raise TypeError(f"{type(model).__name__} does not expose backbone_parameters()/head_parameters()")
    backbone = [p for p in model.backbone_parameters() if p.requires_grad]
    head = [p for p in model.head_parameters() if p.requires_grad]
    grouped = {id(p) for p in backbone} | {id(p) for p in head}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if len(grouped) != len(backbone) + len(head) or len(grouped) != len(trainable):
        raise RuntimeError(f"{type(model).__name__}: backbone/head parameter split does not cover every trainable "
                           f"parameter exactly once ({len(backbone)} + {len(head)} vs {len(trainable)})")
    return [{"params": backbone, "lr": lr, "name": "backbone"},
            {"params": head, "lr": lr * head_lr_mult, "name": "head"}]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
