"""Between-city splits: the ``seed`` variant reproduces the seed's list files exactly, ``clean`` is the rule."""
from __future__ import annotations

from pathlib import Path

import pytest

from data.layouts import CITYSCAPES_CITY_GROUPS
from data.splits import between_city_images, parse_between_city_split, seed_list_ids, write_seed_lists

LISTS = Path(__file__).parent / "seed_between_city_lists"
FILES = ("train0.txt", "val0.txt", "train1.txt", "val1.txt")


@pytest.fixture(scope="module")
def seed_tree(tmp_path_factory) -> Path:
    """Empty files in the Cityscapes layout for every image the seed's lists name, plus one image per city that
    sorts before them (the one the seed's loop dropped; aachen, the first city, lost none)."""
    root = tmp_path_factory.mktemp("cityscapes")
    stems = [line[len("train_"):] for name in FILES for line in (LISTS / name).read_text().split()]
    cities = sorted({s.split("_")[0] for s in stems})
    stems += [f"{city}_000000_000000" for city in cities if city != "aachen"]
    for stem in stems:
        city = stem.split("_")[0]
        for folder, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds")):
            path = root / folder / "train" / city / f"{stem}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return root


def test_seed_variant_reproduces_the_seed_list_files_byte_for_byte(seed_tree, tmp_path):
    written = write_seed_lists(seed_tree, tmp_path / "lists", "seed")
    assert sorted(p.name for p in written) == sorted(FILES)
    for name in FILES:
        assert (tmp_path / "lists" / name).read_bytes() == (LISTS / name).read_bytes(), name


def test_clean_variant_is_the_first_ten_per_city_and_differs_from_the_seed(seed_tree):
    for group in ("group0", "group1"):
        clean = between_city_images(seed_tree, group, "val", "clean")
        seed = between_city_images(seed_tree, group, "val", "seed")
        for city in CITYSCAPES_CITY_GROUPS[group]:
            everything = sorted((seed_tree / "leftImg8bit" / "train" / city).glob("*.png"))
            assert [p for p in clean if p.parent.name == city] == everything[:10]
        # the seed's lists differ by one image in every city but aachen: 8 (group0) or 9 (group1) val images
        assert len(set(clean) - set(seed)) == (8 if group == "group0" else 9)
        assert len(clean) == len(seed) == 90
    # 17 images (one per city but aachen) are in neither seed list, none is dropped by the clean split
    every = sorted((seed_tree / "leftImg8bit" / "train").glob("*/*.png"))
    seeded = {p for g in ("group0", "group1") for part in ("train", "val") for p in between_city_images(
        seed_tree, g, part, "seed")}
    clean = {p for g in ("group0", "group1") for part in ("train", "val") for p in between_city_images(
        seed_tree, g, part, "clean")}
    assert len(every) - len(seeded) == 17 and clean == set(every)


def test_dataset_split_names(seed_tree):
    from data.datasets import create_dataset

    ds = create_dataset("cityscapes", root=seed_tree, split="group1_val_seed", num_classes=19, transforms=None)
    assert seed_list_ids([s.image for s in ds.samples]) == (LISTS / "val1.txt").read_text().split()
    assert parse_between_city_split("group0_train") == ("group0", "train", "clean")
    assert parse_between_city_split("group1_val_seed") == ("group1", "val", "seed")
    for bad in ("group0_val_clean", "group2_val", "group0_test", "group0_val_other", "train"):
        assert parse_between_city_split(bad) is None
