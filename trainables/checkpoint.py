"""Checkpoint files: atomic writes, strict loading, and the ``meta`` record.

A checkpoint is a plain dict saved with ``torch.save``: tensors, numbers, strings, lists and dicts only, so that it
loads with ``torch.load(weights_only=True)``. Keys: ``model`` (state dict), ``meta`` ({"model", "num_classes",
"multi_level", "dastudy_version", "config"}), and for a full training state also ``discriminators``,
``optimizers``, ``iteration``, ``best``, ``rng``, ``streams``, ``scaler``. The ``model`` + ``meta`` part is what
``models.pretrained.load_weights`` reads.
"""
from __future__ import annotations

import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "atomic_save", "read_checkpoint", "checkpoint_meta", "dastudy_version",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not belong to the run's model/config."""


def dastudy_version() -> str:
    try:
        return metadata.version("dastudy")
    except metadata.PackageNotFoundError:
        return "unknown"


def checkpoint_meta(model: torch.nn.Module, *, config: dict[str, Any]) -> dict[str, Any]:
    """``models.pretrained.checkpoint_meta`` (model name, num_classes, head options) plus format, version, config."""
    from models.pretrained import checkpoint_meta as model_meta

    return {**model_meta(model), "format": "dastudy", "format_version": FORMAT_VERSION,
            "dastudy_version": dastudy_version(), "config": config}


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``: a crash leaves either
    the old file or the new one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def read_checkpoint(path: str | Path, *, what: str = "checkpoint") -> dict[str, Any]:
    """Load a dastudy checkpoint on the CPU (``weights_only=True``); errors name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a directory; give the checkpoint file "
                              f"(e.g. {path / 'checkpoints' / 'best.pt'})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        from models.pretrained import describe_unreadable

        raise CheckpointError(f"{what} {path} cannot be read: {describe_unreadable(path, err)}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{what} {path} is not a dastudy checkpoint (no 'model' entry)")
    return state
