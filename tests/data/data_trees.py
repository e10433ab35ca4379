"""Tiny dataset trees in the real layouts, written by the tests themselves (helpers for tests/data).

SYNTHIA labels are written with ``data.io.encode_png`` (numpy + zlib), never with pypng, which reads them:
the reader is always tested on files from a different encoder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from data.io import encode_png

SIZE = (24, 12)  # (W, H) of fixture images

# labelIds painted in vertical bands of every Cityscapes/GTA5 fixture label, and their trainIds
LABEL_IDS = (7, 26, 0, 33, 24, 21)  # road, car, unlabeled, bicycle, person, vegetation
TRAIN_IDS = (0, 13, 255, 18, 11, 8)
# SYNTHIA ids painted in bands: sky, road, car, lane-marking (ignored), pedestrian, wall
SYNTHIA_IDS = (1, 3, 8, 22, 10, 21)
SYNTHIA_TRAIN_IDS = (10, 0, 13, 255, 11, 3)


def banded(values, size=SIZE) -> np.ndarray:
    """(H, W) map whose columns are split into len(values) bands of the given values."""
    width, height = size
    columns = np.asarray(values)[np.arange(width) * len(values) // width]
    return np.repeat(columns[None, :], height, axis=0)


def random_rgb(rng: np.random.Generator, size=SIZE) -> np.ndarray:
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def write_cityscapes(root: Path, cities: dict[str, dict[str, int]], size=SIZE, seed: int = 0) -> Path:
    """``cities = {"train": {"aachen": 12}, "val": {"frankfurt": 2}}`` → leftImg8bit/ + gtFine/ labelIds."""
    rng = np.random.default_rng(seed)
    for split, per_city in cities.items():
        for city, count in per_city.items():
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                stem = f"{city}_{k:06d}_000019"
                Image.fromarray(random_rgb(rng, size)).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                Image.fromarray(banded(LABEL_IDS, size).astype(np.uint8)).save(
                    root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root


def synthia_label(size=SIZE) -> np.ndarray:
    """(H, W, 3) uint16: class ids in channel 0; channels 1 and 2 hold values that are not class ids."""
    ids = banded(SYNTHIA_IDS, size).astype(np.uint16)
    instance = (np.arange(ids.size, dtype=np.uint16).reshape(ids.shape) + 300)
    return np.stack([ids, instance, np.full_like(ids, 999)], axis=-1)


def write_synthia(root: Path, train: int, val: int, *, size=SIZE, lists: bool = True, seed: int = 0,
                  filter_types=(0, 1, 2, 3, 4)) -> Path:
    rng = np.random.default_rng(seed)
    (root / "RGB").mkdir(parents=True)
    (root / "GT" / "LABELS").mkdir(parents=True)
    for index in range(train + val):
        Image.fromarray(random_rgb(rng, size)).save(root / "RGB" / f"{index:07d}.png")
        payload = encode_png(synthia_label(size), filter_type=filter_types[index % len(filter_types)])
        (root / "GT" / "LABELS" / f"{index:07d}.png").write_bytes(payload)
    if lists:
        (root / "lists").mkdir()
        # both entry styles seen in the wild: bare ids and file names
        (root / "lists" / "train.txt").write_text("".join(f"{i:07d}.png\n" for i in range(train)))
        (root / "lists" / "val.txt").write_text("".join(f"{i}\n" for i in range(train, train + val)))
    return root


def write_gta5(root: Path, count: int, size=SIZE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    palette = [v for i in range(256) for v in ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)]
    for index in range(1, count + 1):
        Image.fromarray(random_rgb(rng, size)).save(root / "images" / f"{index:05d}.png")
        label = Image.fromarray(banded(LABEL_IDS, size).astype(np.uint8))
        label.putpalette(palette)  # GTA5 labels are palette PNGs whose indices are the labelIds
        label.save(root / "labels" / f"{index:05d}.png")
    return root


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """path → (size, mtime_ns) of every file: proves a function wrote nothing."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}
