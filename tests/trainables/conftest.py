"""Helpers for the engine tests: tiny run configs on the session's tiny synthetic benchmark."""
from __future__ import annotations

from typing import Any

import pytest

from trainables.config import TrainConfig, from_dict, merge, replace_path


def tiny_config_dict(root, *, mode: str = "adversarial", multi_level: bool = True) -> dict[str, Any]:
    """deeplabv2_tiny, 16 classes, 64×32 images, batch 1, a handful of iterations, CPU, no workers."""
    return {
        "name": "tiny",
        "data": {"source": {"dataset": "synthia", "root": str(root / "source"), "split": "train", "size": [64, 32]},
                 "target": {"dataset": "cityscapes", "root": str(root / "target"), "split": "train",
                            "size": [64, 32], "max_items": 12},
                 "val": {"dataset": "cityscapes", "root": str(root / "target"), "split": "val", "size": [64, 32]},
                 "num_classes": 16, "workers": 0},
        "model": {"name": "deeplabv2_tiny", "multi_level": multi_level},
        "optim": {"lr": 1e-3, "iter_max": 20, "iter_stop": 4, "batch_size": 1},
        "adapt": {"mode": mode, "d_ndf": 8},
        "eval": {"interval": 100, "max_images": 2},
        "runtime": {"device": "cpu", "log_interval": 1, "progress": False, "seed": 7},
    }


def tiny_config(root, *, mode: str = "adversarial", multi_level: bool = True, **overrides: Any) -> TrainConfig:
    """``overrides`` use ``__`` for dots: ``optim__lr=0.1`` sets ``optim.lr``."""
    data = tiny_config_dict(root, mode=mode, multi_level=multi_level)
    for key, value in overrides.items():
        data = replace_path(data, key.replace("__", "."), value) if "__" in key else merge(data, {key: value})
    return from_dict(TrainConfig, data, source="<test>")


@pytest.fixture
def make_config(tiny_benchmark):
    def make(**kwargs) -> TrainConfig:
        return tiny_config(tiny_benchmark, **kwargs)

    return make


@pytest.fixture(autouse=True)
def single_thread_torch():
    """One intra-op thread: the tiny models gain nothing from two, and OpenMP threads spin-waiting on a shared
    2-core machine made the same steps 20-30x slower while other processes ran."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
