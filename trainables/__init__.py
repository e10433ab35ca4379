"""Training engines (source-only, AdaptSegNet adversarial adaptation, target losses) and run configuration.

Public API::

    from trainables import run_training, Trainer, TrainingDiverged, CheckpointError, reporters
    result = run_training(cfg, "runs/my_run", reporters=[reporters.ConsoleReporter()])

Nothing in this package except ``trainables/tune.py`` imports Ray. Heavy modules (torch) load on first use, so
``import trainables.config`` stays cheap.
"""
from __future__ import annotations

import importlib

__all__ = ["run_training", "Trainer", "TrainingDiverged", "CheckpointError", "StopTraining", "Reporter",
           "reporters", "validate_config", "evaluate_checkpoint"]

_LAZY = {
    "run_training": "engine", "Trainer": "engine", "TrainingDiverged": "engine",
    "CheckpointError": "checkpoint", "StopTraining": "reporters", "Reporter": "reporters",
    "validate_config": "builders", "evaluate_checkpoint": "evaluation",
}


def __getattr__(name: str):
    if name == "reporters":
        return importlib.import_module(".reporters", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
