"""Deterministic seeding and RNG state capture (Python, NumPy, torch CPU, CUDA).

Captured states are plain Python values and tensors so that checkpoints load with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "capture_rng_state", "restore_rng_state", "worker_init_fn", "derive_seed"]

_MASK_32 = 0xFFFF_FFFF


def derive_seed(*parts: int) -> int:
    """A 32-bit seed that depends on every part (e.g. run seed, stream id, epoch, position), stable across runs."""
    # SeedSequence mixes the entropy well; Python's hash() is salted per process and would not be stable.
    return int(np.random.SeedSequence([int(p) & _MASK_32 for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed & _MASK_32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding: derive Python/NumPy seeds from torch's per-worker seed.

    torch seeds each worker with ``base_seed + worker_id`` (``base_seed`` from the loader's generator) but leaves
    Python and NumPy alone, so forked workers would otherwise share NumPy's state.
    """
    seed = torch.initial_seed() & _MASK_32
    random.seed(seed)
    np.random.seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain Python types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
