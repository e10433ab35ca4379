"""Folder layouts and split definitions of the supported datasets (no torch: used by the CLI tools too)."""
from __future__ import annotations

from pathlib import Path

from .io import DatasetError

__all__ = ["CITYSCAPES_CITY_GROUPS", "CITYSCAPES_TRAIN_CITIES", "CITYSCAPES_VAL_CITIES", "GROUP_VAL_PER_CITY",
           "PREPARED_LABEL_DIR", "PREPARED_MARKER", "SYNTHIA_STANDARD_SPLITS", "cityscapes_label_path",
           "cityscapes_city_images", "read_split_list"]

# The seed's between-city split (Adversarial_DA_Exp datasets/between_city_list/arrange.py).
CITYSCAPES_CITY_GROUPS: dict[str, tuple[str, ...]] = {
    "group0": ("aachen", "bremen", "darmstadt", "erfurt", "hanover", "krefeld", "strasbourg", "tubingen", "weimar"),
    "group1": ("bochum", "cologne", "dusseldorf", "hamburg", "jena", "monchengladbach", "stuttgart", "ulm", "zurich"),
}
CITYSCAPES_TRAIN_CITIES = tuple(sorted(CITYSCAPES_CITY_GROUPS["group0"] + CITYSCAPES_CITY_GROUPS["group1"]))
CITYSCAPES_VAL_CITIES = ("frankfurt", "lindau", "munster")
GROUP_VAL_PER_CITY = 10

PREPARED_LABEL_DIR = "GT/LABELS_TRAINID"  # written by `dastudy data prepare`; 19-space trainIds, 255 = ignore
PREPARED_MARKER = "prepared.json"  # written last, so an interrupted conversion is never used

SYNTHIA_STANDARD_SPLITS = {"train": range(0, 9000), "val": range(9000, 9400)}


def cityscapes_city_images(root: Path, split: str, city: str) -> list[Path]:
    """Images of one city, sorted (the order the between-city split takes its first 10 from)."""
    return sorted((root / "leftImg8bit" / split / city).glob("*_leftImg8bit.png"))


def cityscapes_label_path(root: Path, image: Path) -> Path:
    """gtFine labelIds file of a leftImg8bit image."""
    stem = image.name[: -len("_leftImg8bit.png")]
    return root / "gtFine" / image.parent.parent.name / image.parent.name / f"{stem}_gtFine_labelIds.png"


def read_split_list(root: Path, split: str, digits: int) -> list[str] | None:
    """Names in ``root/lists/{split}.txt`` (one per line: an id, ``NNNN.png`` or a path); None if absent."""
    path = root / "lists" / f"{split}.txt"
    if not path.is_file():
        return None
    names = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        entry = Path(line.strip()).stem
        if not entry:
            continue
        if not entry.isdigit():
            raise DatasetError(f"{path}:{line_no}: {line.strip()!r} is not an image id (expected e.g. "
                               f"{0:0{digits}d} or {0:0{digits}d}.png)")
        names.append(entry.zfill(digits))
    return names
