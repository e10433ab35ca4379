"""The torch device a run or an evaluation uses (``runtime.device``).

Its own module so that :mod:`trainables.evaluation` (which :mod:`trainables.engine` and
:mod:`trainables.validators` build on) can resolve a device without importing the engine: the engine imports the
evaluation, so the evaluation importing the engine was an import circle.
"""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(spec: str) -> torch.device:
    """``"auto"``: CUDA where torch sees a device, else the CPU; ``"cuda…"`` without CUDA is refused (naming the
    value and what to use instead); anything else is passed to :class:`torch.device`."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device = {spec!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(spec)
