"""Label tables, dataset readers, paired transforms and the synthetic two-domain benchmark.

Public API (contracts in ``docs/design.md``)::

    from data import create_dataset, list_datasets, DatasetError, TrainPreset, EvalPreset
    ds = create_dataset("synthia", root="datasets/synthia", split="train", num_classes=16,
                        transforms=TrainPreset(size=(1280, 720)))

Torch-dependent parts are imported lazily, so ``data.labels``, ``data.synthetic`` and the error type can be
used (e.g. by ``dastudy data synth``) without importing torch. Nothing here imports Ray or Optuna.
"""
from __future__ import annotations

import importlib

from .io import DatasetError
from .labels import IGNORE_INDEX, class_colors, class_names

__all__ = ["DatasetError", "IGNORE_INDEX", "class_names", "class_colors", "create_dataset", "list_datasets",
           "TrainPreset", "EvalPreset", "normalize", "denormalize", "check_dataset", "CheckReport",
           "generate_synthetic", "prepare_synthia"]

_LAZY = {
    "create_dataset": "datasets", "list_datasets": "datasets", "SegmentationDataset": "datasets",
    "TrainPreset": "transforms", "EvalPreset": "transforms", "normalize": "transforms", "denormalize": "transforms",
    "check_dataset": "check", "CheckReport": "check",
    "prepare_synthia": "prepare",
}


def __getattr__(name: str):
    if name == "generate_synthetic":
        return importlib.import_module(".synthetic", __name__).generate
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")
