"""Cityscapes between-city splits (the seed's Table 4 setting): two variants of the same city groups.

``clean`` (splits ``group{0,1}_{train,val}``): the first ``GROUP_VAL_PER_CITY`` = 10 sorted images of every city of
the group are val, the rest train. This is what the seed's ``arrange.py`` set out to do.

``seed`` (splits ``group{0,1}_{train,val}_seed``): the seed's published list files
(``datasets/between_city_list/{train,val}{0,1}.txt``), reproduced exactly. Its loop over the sorted Cityscapes
train list drops the first image of every city except the list's first city (aachen) and then takes the next 10
images of the city as val, so 8-9 val images per group differ from the clean rule and 17 images are in neither
list. Use it where numbers must be comparable with the seed's between-city table; use ``clean`` otherwise.

No torch here: the CLI and tests use it without building a dataset.
"""
from __future__ import annotations

from pathlib import Path

from .io import DatasetError
from .layouts import CITYSCAPES_CITY_GROUPS, CITYSCAPES_TRAIN_CITIES, GROUP_VAL_PER_CITY, cityscapes_city_images

__all__ = ["BETWEEN_CITY_VARIANTS", "parse_between_city_split", "between_city_images", "seed_list_ids",
           "write_seed_lists"]

BETWEEN_CITY_VARIANTS = ("clean", "seed")
# The first city of the sorted Cityscapes train list: the only one whose first image the seed's loop kept.
_SEED_FIRST_CITY = CITYSCAPES_TRAIN_CITIES[0]


def parse_between_city_split(split: str) -> tuple[str, str, str] | None:
    """``group0_val`` → (group0, val, clean); ``group1_train_seed`` → (group1, train, seed); else None."""
    parts = split.split("_")
    if len(parts) == 2:
        parts.append("clean")
    if len(parts) != 3 or parts[0] not in CITYSCAPES_CITY_GROUPS or parts[1] not in ("train", "val"):
        return None
    if parts[2] not in BETWEEN_CITY_VARIANTS or (len(split.split("_")) == 3 and parts[2] == "clean"):
        return None  # "group0_val_clean" is not a split name: the clean variant is the plain one
    return parts[0], parts[1], parts[2]


def between_city_images(root: Path, group: str, part: str, variant: str = "clean") -> list[Path]:
    """The images of one between-city split, in the order of the seed's lists (cities sorted, images sorted)."""
    if variant not in BETWEEN_CITY_VARIANTS:
        raise DatasetError(f"between-city variant {variant!r}: allowed {', '.join(BETWEEN_CITY_VARIANTS)}")
    folder = root / "leftImg8bit" / "train"
    present = [c for c in CITYSCAPES_CITY_GROUPS[group] if (folder / c).is_dir()]
    if not present:
        raise DatasetError(f"{folder}: none of the {group} cities ({', '.join(CITYSCAPES_CITY_GROUPS[group])}) "
                           f"is present; the between-city split is built from the train cities")
    images: list[Path] = []
    for city in present:
        city_images = cityscapes_city_images(root, "train", city)
        if variant == "seed" and city != _SEED_FIRST_CITY:
            city_images = city_images[1:]
        images += city_images[:GROUP_VAL_PER_CITY] if part == "val" else city_images[GROUP_VAL_PER_CITY:]
    return images


def seed_list_ids(images: list[Path]) -> list[str]:
    """Image ids as the seed's list files write them: ``train_<city>_<seq>_<frame>``."""
    return [f"train_{p.name[: -len('_leftImg8bit.png')]}" for p in images]


def write_seed_lists(root: Path, out_dir: Path, variant: str = "seed") -> list[Path]:
    """``{train,val}{0,1}.txt`` in the seed's format for ``variant``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, group in enumerate(sorted(CITYSCAPES_CITY_GROUPS)):
        for part in ("train", "val"):
            path = out_dir / f"{part}{index}.txt"
            path.write_text("".join(i + "\n" for i in seed_list_ids(between_city_images(root, group, part, variant))))
            written.append(path)
    return written
