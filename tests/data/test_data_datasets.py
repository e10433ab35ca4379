"""Readers on tiny trees in the real layouts: items, label mapping, splits, errors, cache."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from data_trees import SIZE, SYNTHIA_TRAIN_IDS, TRAIN_IDS, banded, truncate, write_synthia
from PIL import Image

import data
import data.datasets as D
from data import DatasetError, EvalPreset, TrainPreset, create_dataset, list_datasets


def _eval(**kw):
    return EvalPreset(size=SIZE, **kw)


def test_registry_lists_the_three_datasets():
    assert list_datasets() == ["cityscapes", "gta5", "synthia"]
    with pytest.raises(DatasetError, match="'kitti' is not known; available: cityscapes, gta5, synthia"):
        create_dataset("kitti", root=".", split="train", num_classes=19, transforms=None)


def test_cityscapes_items_and_label_mapping(cityscapes_root):
    ds = create_dataset("cityscapes", root=cityscapes_root, split="train", num_classes=19, transforms=_eval())
    assert len(ds) == 26
    item = ds[0]
    assert set(item) == {"image", "label", "name"}
    assert item["name"] == "aachen_000000_000019"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, SIZE[1], SIZE[0])
    assert item["label"].dtype == torch.int64 and item["label"].shape == (SIZE[1], SIZE[0])
    np.testing.assert_array_equal(item["label"].numpy(), banded(TRAIN_IDS))
    assert len(create_dataset("cityscapes", root=cityscapes_root, split="val", num_classes=19, transforms=_eval())) == 3


def test_cityscapes_16_class_labels(cityscapes_root):
    ds = create_dataset("cityscapes", root=cityscapes_root, split="val", num_classes=16, transforms=_eval())
    expected_16 = [0, 12, 255, 15, 10, 8]  # road, car, ignore, bicycle, person, vegetation in 16-space
    np.testing.assert_array_equal(ds[0]["label"].numpy(), banded(expected_16))


def test_between_city_splits_take_the_first_ten_images_per_city_as_val(cityscapes_root):
    def names(split):
        return [s.name for s in create_dataset("cityscapes", root=cityscapes_root, split=split, num_classes=19,
                                               transforms=None).samples]

    group0_val, group0_train = names("group0_val"), names("group0_train")
    # group0 holds aachen (12 images) and erfurt (3); bochum belongs to group1
    assert group0_val == [f"aachen_{k:06d}_000019" for k in range(10)] + [f"erfurt_{k:06d}_000019" for k in range(3)]
    assert group0_train == ["aachen_000010_000019", "aachen_000011_000019"]
    assert names("group1_val") == [f"bochum_{k:06d}_000019" for k in range(10)]
    assert names("group1_train") == ["bochum_000010_000019"]
    assert set(group0_val).isdisjoint(group0_train)


def test_group_cities_are_the_seeds_lists():
    assert D.CITYSCAPES_CITY_GROUPS["group0"] == ("aachen", "bremen", "darmstadt", "erfurt", "hanover", "krefeld",
                                                  "strasbourg", "tubingen", "weimar")
    assert D.CITYSCAPES_CITY_GROUPS["group1"] == ("bochum", "cologne", "dusseldorf", "hamburg", "jena",
                                                  "monchengladbach", "stuttgart", "ulm", "zurich")


def test_missing_root_split_and_label_name_the_path(cityscapes_root, tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nowhere")):
        create_dataset("cityscapes", root=tmp_path / "nowhere", split="train", num_classes=19, transforms=None)
    with pytest.raises(DatasetError, match=r"leftImg8bit/test: missing folder of split 'test'"):
        create_dataset("cityscapes", root=cityscapes_root, split="test", num_classes=19, transforms=None)
    label = cityscapes_root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(DatasetError, match=f"{label}: missing label file for image lindau_000000_000019_leftImg8bit.png"):
        create_dataset("cityscapes", root=cityscapes_root, split="val", num_classes=19, transforms=None)


def test_truncated_image_raises_naming_the_file(cityscapes_root):
    image = cityscapes_root / "leftImg8bit/val/frankfurt/frankfurt_000001_000019_leftImg8bit.png"
    truncate(image, 0.5)
    ds = create_dataset("cityscapes", root=cityscapes_root, split="val", num_classes=19, transforms=_eval())
    ds[0]
    with pytest.raises(DatasetError, match="frankfurt_000001_000019_leftImg8bit.png: cannot decode"):
        ds[1]


@pytest.mark.parametrize("cache", [False, True])
def test_label_of_another_size_than_its_image_is_refused_naming_both_files(cityscapes_root, cache):
    """It used to be resized to the configured size with its image and trained on silently (issue 11)."""
    label = cityscapes_root / "gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png"
    with Image.open(label) as im:
        width, height = im.size
        im.resize((width + 2, height), Image.NEAREST).save(label)
    transforms = TrainPreset(size=(12, 6), hflip_prob=0.0, blur_prob=0.0) if cache else _eval()
    ds = create_dataset("cityscapes", root=cityscapes_root, split="val", num_classes=19, transforms=transforms,
                        cache=cache)
    ds[0]
    with pytest.raises(DatasetError, match=rf"{label}: label is {width + 2}x{height} but its image "
                                           rf".*frankfurt_000001_000019_leftImg8bit.png is {width}x{height}"):
        ds[1]


def test_synthia_reads_channel_0_of_16bit_labels_from_lists(synthia_root):
    train = create_dataset("synthia", root=synthia_root, split="train", num_classes=19, transforms=_eval())
    val = create_dataset("synthia", root=synthia_root, split="val", num_classes=16, transforms=_eval())
    assert [s.name for s in train.samples] == [f"{i:07d}" for i in range(5)]
    assert [s.name for s in val.samples] == ["0000005", "0000006"]
    for index in range(len(train)):  # every PNG filter type, see write_synthia
        np.testing.assert_array_equal(train[index]["label"].numpy(), banded(SYNTHIA_TRAIN_IDS))
    np.testing.assert_array_equal(val[0]["label"].numpy(), banded([9, 0, 12, 255, 10, 3]))


def test_synthia_standard_split_without_lists_needs_all_ids(tmp_path):
    root = write_synthia(tmp_path / "synthia", train=3, val=0, lists=False)
    with pytest.raises(DatasetError, match=r"RGB/0000003.png: missing image file"):
        create_dataset("synthia", root=root, split="train", num_classes=16, transforms=None)
    with pytest.raises(DatasetError, match=r"lists/test.txt: missing list for split 'test'"):
        create_dataset("synthia", root=root, split="test", num_classes=16, transforms=None)


def test_synthia_8bit_label_is_a_clear_error(synthia_root):
    Image.fromarray(np.zeros(SIZE[::-1], dtype=np.uint8)).save(synthia_root / "GT/LABELS/0000001.png")
    ds = create_dataset("synthia", root=synthia_root, split="train", num_classes=16, transforms=_eval())
    with pytest.raises(DatasetError, match=r"0000001.png: expected a 16-bit SYNTHIA label"):
        ds[1]


def test_gta5_palette_labels_and_splits(gta5_root):
    ds = create_dataset("gta5", root=gta5_root, split="all", num_classes=19, transforms=_eval())
    assert [s.name for s in ds.samples] == ["00001", "00002", "00003"]
    np.testing.assert_array_equal(ds[2]["label"].numpy(), banded(TRAIN_IDS))
    (gta5_root / "lists").mkdir()
    (gta5_root / "lists/train.txt").write_text("00002.png\n")
    assert [s.name for s in create_dataset("gta5", root=gta5_root, split="train", num_classes=19,
                                           transforms=None).samples] == ["00002"]
    with pytest.raises(DatasetError, match="lists/val.txt: missing list"):
        create_dataset("gta5", root=gta5_root, split="val", num_classes=19, transforms=None)


def test_max_items_and_native_size_default(cityscapes_root):
    ds = create_dataset("cityscapes", root=cityscapes_root, split="train", num_classes=19, transforms=None, max_items=4)
    assert len(ds) == 4 and ds[-1]["name"] == "aachen_000003_000019"
    assert ds[0]["image"].shape == (3, SIZE[1], SIZE[0])


def test_cache_decodes_once_but_augments_every_call(cityscapes_root, monkeypatch):
    calls = []
    real = D.read_image
    monkeypatch.setattr(D, "read_image", lambda path: calls.append(path) or real(path))
    preset = TrainPreset(size=(12, 6), hflip_prob=0.5, blur_prob=0.0)
    ds = create_dataset("cityscapes", root=cityscapes_root, split="val", num_classes=19, transforms=preset, cache=True)
    random.seed(3)
    labels = [ds[0]["label"] for _ in range(12)]
    assert len(calls) == 1  # decoded and resized once
    flipped = [bool(torch.equal(lab, labels[0].flip(-1))) and not torch.equal(lab, labels[0]) for lab in labels]
    assert any(flipped) and not all(flipped)  # the random flip still runs per call
    assert labels[0].shape == (6, 12)
    ds.preload()
    assert len(calls) == 3  # the two items not yet cached


def test_cache_needs_a_two_stage_transform(cityscapes_root):
    with pytest.raises(ValueError, match="prepare\\(\\)/augment\\(\\)"):
        create_dataset("cityscapes", root=cityscapes_root, split="val", num_classes=19,
                       transforms=lambda img, lab: (img, lab), cache=True)


def test_lazy_package_attributes():
    assert data.create_dataset is create_dataset and data.TrainPreset is TrainPreset
    with pytest.raises(AttributeError):
        data.no_such_name
