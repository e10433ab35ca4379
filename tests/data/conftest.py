"""Fixtures of tests/data: tiny dataset trees in the real layouts (builders in data_trees.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_trees import write_cityscapes, write_gta5, write_synthia


@pytest.fixture
def cityscapes_root(tmp_path) -> Path:
    return write_cityscapes(tmp_path / "cityscapes", {
        "train": {"aachen": 12, "erfurt": 3, "bochum": 11},
        "val": {"frankfurt": 2, "lindau": 1},
    })


@pytest.fixture
def synthia_root(tmp_path) -> Path:
    return write_synthia(tmp_path / "synthia", train=5, val=2)


@pytest.fixture
def gta5_root(tmp_path) -> Path:
    return write_gta5(tmp_path / "gta5", 3)
