"""Class tables shared by every dataset, metric and figure.

All label maps inside dastudy use Cityscapes *trainIds* (19 classes) or the 16-class SYNTHIA subset of them,
with ``IGNORE_INDEX = 255`` for every pixel that is not scored. Raw dataset ids are converted once, by a
256-entry lookup table, right after decoding.

Sources (transcribed, not copied):
- Cityscapes labelId → trainId and the official colours: cityscapesScripts ``helpers/labels.py``;
  the same table is used by AdaptSegNet (``dataset/cityscapes_list/info.json``) and MaxSquareLoss
  (``datasets/cityscapes_Dataset.py``). GTA5 labels use the same ids.
- SYNTHIA-RAND-CITYSCAPES id → trainId: MaxSquareLoss ``datasets/synthia_Dataset.py`` (identical in DAFormer
  ``tools/convert_datasets/synthia.py``). SYNTHIA ids 0 (void), 13, 14 and 22 have no Cityscapes class.
- The 16- and 13-class subsets (mIoU16 / mIoU13 = "mIoU*", without wall, fence, pole): MaxSquareLoss
  ``utils/eval.py``.

Class names use underscores (``traffic_light``) so that they can be used verbatim in metric tags
(``IoU/traffic_light``).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "IGNORE_INDEX", "CITYSCAPES_CLASSES", "CITYSCAPES_COLORS", "CITYSCAPES_LABELID_TO_TRAINID",
    "SYNTHIA_ID_TO_TRAINID", "CLASSES_16", "CLASSES_13_IN_16", "CLASSES_13_IN_19", "CITYSCAPES_VALID_LABELIDS",
    "SYNTHIA_MAX_ID", "class_names", "class_colors", "labelid_lut", "synthia_lut", "trainid_lut",
    "color_palette",
]

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# Official Cityscapes colours (cityscapesScripts helpers/labels.py), indexed by trainId.
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# Cityscapes labelId → trainId; every labelId not listed (0-6, 9, 10, 14-16, 18, 29, 30, license plate) is ignored.
CITYSCAPES_LABELID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# labelIds that occur in gtFine *_labelIds.png (0 unlabeled … 33 bicycle); used by `data check` to spot
# files that are not labelId maps (e.g. trainId or colour images).
CITYSCAPES_VALID_LABELIDS: frozenset[int] = frozenset(range(34))

# SYNTHIA-RAND-CITYSCAPES class id (channel 0 of GT/LABELS) → Cityscapes trainId.
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18,
    12: 17, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3,
}
SYNTHIA_MAX_ID = 22  # ids 0..22 are defined; 0, 13, 14, 22 are void/parking-slot/road-work/lane-marking

# trainIds kept in the 16-class setting, in order: 16-space index i is trainId CLASSES_16[i].
# Dropped: terrain (9), truck (14), train (16), which SYNTHIA does not contain.
CLASSES_16: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
# mIoU* (13 classes) drops wall, fence, pole.
CLASSES_13_IN_16: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
CLASSES_13_IN_19: tuple[int, ...] = tuple(CLASSES_16[i] for i in CLASSES_13_IN_16)

_SUBSETS_OF_19 = {19: tuple(range(19)), 16: CLASSES_16, 13: CLASSES_13_IN_19}


def _subset(num_classes: int) -> tuple[int, ...]:
    try:
        return _SUBSETS_OF_19[num_classes]
    except KeyError:
        raise ValueError(f"num_classes = {num_classes!r} is not supported; allowed: 19, 16, 13") from None


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names of the classes in the order of the network's outputs (19, 16 or 13 classes)."""
    return tuple(CITYSCAPES_CLASSES[i] for i in _subset(num_classes))


def class_colors(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Official Cityscapes colours for the classes of :func:`class_names` (same order)."""
    return tuple(CITYSCAPES_COLORS[i] for i in _subset(num_classes))


def color_palette(num_classes: int, *, ignore_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A (256, 3) uint8 array: ``palette[label_map]`` colours a label map; 255 and unused indices get ``ignore_color``."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:] = ignore_color
    palette[:num_classes] = np.asarray(class_colors(num_classes), dtype=np.uint8)
    return palette


def _lut_from_trainids(id_to_trainid: dict[int, int], num_classes: int) -> np.ndarray:
    # Compose raw id → trainId with trainId → index in the chosen subset; everything else → IGNORE_INDEX.
    position = {train_id: index for index, train_id in enumerate(_subset(num_classes))}
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw_id, train_id in id_to_trainid.items():
        if train_id in position:
            lut[raw_id] = position[train_id]
    return lut


def labelid_lut(num_classes: int) -> np.ndarray:
    """256-entry uint8 table mapping Cityscapes/GTA5 labelIds to class indices (19 or 16 space), 255 = ignore."""
    return _lut_from_trainids(CITYSCAPES_LABELID_TO_TRAINID, num_classes)


def synthia_lut(num_classes: int) -> np.ndarray:
    """256-entry uint8 table mapping SYNTHIA class ids to class indices (19 or 16 space), 255 = ignore."""
    return _lut_from_trainids(SYNTHIA_ID_TO_TRAINID, num_classes)


def trainid_lut(num_classes: int) -> np.ndarray:
    """256-entry uint8 table mapping 19-space trainIds (255 = ignore) to the 19/16/13 space."""
    return _lut_from_trainids({i: i for i in range(19)}, num_classes)
