"""A small name -> factory registry (the idea of timm's ``_registry.py``, written for this project).

Factories register themselves with ``@register_model(...)``; importing :mod:`models` imports every family module,
so the registry is complete once the package is imported. Tests and ``dastudy models`` enumerate it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch.nn as nn

Kind = Literal["segmentation", "discriminator"]
_KINDS = ("segmentation", "discriminator")


@dataclass(frozen=True)
class ModelInfo:
    """What callers need to know about a registered model without building it.

    ``output_stride`` is the encoder's stride (8 for DeepLabV2, 16 for DeepLabV3+); ``logits_stride`` is the stride
    of the returned logits (DeepLabV3+'s decoder brings them back to stride 4). ``normalization`` is the input
    normalisation the backbone's pretrained weights expect (``None`` for discriminators, which see softmax maps).
    """

    name: str
    kind: Kind
    normalization: Literal["caffe", "imagenet"] | None
    output_stride: int
    logits_stride: int
    multi_level_capable: bool
    description: str


_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(*, kind: Kind, normalization: str | None, output_stride: int, logits_stride: int | None = None,
                   multi_level_capable: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a keyword-only factory under its function name; the first docstring line describes it."""
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r}: allowed are {_KINDS}")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} is registered twice")
        description = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
        _FACTORIES[name] = factory
        _INFOS[name] = ModelInfo(name=name, kind=kind, normalization=normalization, output_stride=output_stride,
                                 logits_stride=logits_stride or output_stride,
                                 multi_level_capable=multi_level_capable, description=description)
        return factory

    return decorate


def _check_name(name: str) -> None:
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(_FACTORIES))}")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the factory's keyword arguments (``dastudy models`` lists names)."""
    _check_name(name)
    return _FACTORIES[name](**kwargs)


def list_models(kind: Kind | None = None) -> list[str]:
    """Sorted names of the registered models, optionally only those of one ``kind``."""
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind={kind!r}: allowed are {_KINDS} or None")
    return sorted(name for name, info in _INFOS.items() if kind is None or info.kind == kind)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` record of a registered model."""
    _check_name(name)
    return _INFOS[name]


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory function itself (``build_model`` inspects its signature)."""
    _check_name(name)
    return _FACTORIES[name]
