"""Label tables against the published tables (cityscapesScripts labels.py, MaxSquareLoss, seed §8.2)."""
from __future__ import annotations

import numpy as np
import pytest

from data import labels as L

# cityscapesScripts helpers/labels.py, rows with a trainId in 0..18: (name, id, trainId, color)
CITYSCAPES_TABLE = [
    ("road", 7, 0, (128, 64, 128)), ("sidewalk", 8, 1, (244, 35, 232)), ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)), ("fence", 13, 4, (190, 153, 153)), ("pole", 17, 5, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)), ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)), ("terrain", 22, 9, (152, 251, 152)), ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)), ("rider", 25, 12, (255, 0, 0)), ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)), ("bus", 28, 15, (0, 60, 100)), ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)), ("bicycle", 33, 18, (119, 11, 32)),
]
# SYNTHIA-RAND-CITYSCAPES id → class name (MaxSquareLoss datasets/synthia_Dataset.py)
SYNTHIA_TABLE = {1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
                 8: "car", 9: "traffic sign", 10: "person", 11: "bicycle", 12: "motorcycle", 15: "traffic light",
                 16: "terrain", 17: "rider", 18: "truck", 19: "bus", 20: "train", 21: "wall"}
SEED_16 = ["road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation", "sky", "person",
           "rider", "car", "bus", "motorcycle", "bicycle"]


def _name(official: str) -> str:
    return official.replace(" ", "_")


def test_cityscapes_names_ids_colors_match_the_official_table():
    assert L.CITYSCAPES_CLASSES == tuple(_name(n) for n, _, _, _ in CITYSCAPES_TABLE)
    assert L.CITYSCAPES_COLORS == tuple(c for _, _, _, c in CITYSCAPES_TABLE)
    assert L.CITYSCAPES_LABELID_TO_TRAINID == {label_id: t for _, label_id, t, _ in CITYSCAPES_TABLE}


def test_labelid_lut_maps_listed_ids_and_ignores_everything_else():
    lut = L.labelid_lut(19)
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    for _, label_id, train_id, _ in CITYSCAPES_TABLE:
        assert lut[label_id] == train_id
    unlisted = set(range(256)) - {row[1] for row in CITYSCAPES_TABLE}
    assert {0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 255} <= unlisted
    assert all(lut[i] == 255 for i in unlisted)


def test_synthia_mapping_matches_the_published_table():
    trainid_of_name = {n: t for n, _, t, _ in CITYSCAPES_TABLE}
    assert L.SYNTHIA_ID_TO_TRAINID == {sid: trainid_of_name[name] for sid, name in SYNTHIA_TABLE.items()}
    lut = L.synthia_lut(19)
    for unmapped in (0, 13, 14, 22):
        assert lut[unmapped] == 255


def test_16_class_subset_order_and_names():
    assert L.CLASSES_16 == (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    short = {"traffic_light": "light", "traffic_sign": "sign"}
    assert [short.get(n, n) for n in L.class_names(16)] == SEED_16
    assert L.class_colors(16)[9] == (70, 130, 180)  # index 9 is sky in 16-space (the seed's S7 mislabel)


def test_13_class_subset_drops_wall_fence_pole_in_both_spaces():
    assert L.CLASSES_13_IN_16 == (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    assert L.CLASSES_13_IN_19 == (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    names16 = L.class_names(16)
    assert [names16[i] for i in L.CLASSES_13_IN_16] == list(L.class_names(13))
    assert {"wall", "fence", "pole"}.isdisjoint(L.class_names(13))
    assert [L.CITYSCAPES_CLASSES[i] for i in L.CLASSES_13_IN_19] == list(L.class_names(13))


def test_16_class_luts_compose_the_subset():
    lut16 = L.labelid_lut(16)
    assert lut16[26] == 12  # car: trainId 13 → 16-space index 12
    assert lut16[33] == 15  # bicycle
    assert lut16[22] == 255 and lut16[27] == 255 and lut16[31] == 255  # terrain, truck, train dropped
    syn16 = L.synthia_lut(16)
    assert syn16[1] == 9  # SYNTHIA sky → trainId 10 → 16-space 9
    assert syn16[16] == 255  # SYNTHIA terrain has no 16-class index
    train16 = L.trainid_lut(16)
    assert [int(train16[t]) for t in L.CLASSES_16] == list(range(16))
    assert train16[255] == 255 and train16[9] == 255


def test_palette_and_errors():
    palette = L.color_palette(19)
    assert palette.shape == (256, 3) and tuple(palette[13]) == (0, 0, 142) and tuple(palette[255]) == (0, 0, 0)
    with pytest.raises(ValueError, match="allowed: 19, 16, 13"):
        L.class_names(20)
    assert L.IGNORE_INDEX == 255
