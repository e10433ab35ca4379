"""Synthetic benchmark: deterministic, loads through the real readers, covers the classes, has a domain gap."""
from __future__ import annotations

import json

import numpy as np
import pytest
from data_trees import snapshot

from data import create_dataset
from data.io import read_image, read_label, read_synthia_label
from data.labels import CITYSCAPES_CLASSES, CLASSES_16, labelid_lut, synthia_lut
from data.synthetic import GENERATOR_VERSION, generate

SMALL = dict(num_source=6, num_source_val=2, num_target_train=6, num_target_val=3, source_size=(48, 28),
             target_size=(48, 24))


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_bit_identical_files_and_another_seed_differs(tmp_path):
    generate(tmp_path / "a", seed=7, **SMALL)
    generate(tmp_path / "b", seed=7, **SMALL)
    generate(tmp_path / "c", seed=8, **SMALL)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 2 * 8 + 2 + 2 * 9 + 1  # source images+labels, 2 lists, target images+labels, manifest
    assert a == b
    images = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in images if "RGB" in k)


def test_layouts_load_through_the_real_readers(tiny_benchmark):
    source, target = tiny_benchmark / "source", tiny_benchmark / "target"
    assert len(create_dataset("synthia", root=source, split="train", num_classes=16, transforms=None)) == 12
    assert len(create_dataset("synthia", root=source, split="val", num_classes=16, transforms=None)) == 4
    assert len(create_dataset("cityscapes", root=target, split="train", num_classes=19, transforms=None)) == 66
    val = create_dataset("cityscapes", root=target, split="val", num_classes=19, transforms=None)
    assert len(val) == 6 and {s.name.split("_")[0] for s in val.samples} == {"frankfurt", "lindau", "munster"}
    # 11 images in each of 3 cities per group: 10 per city go to the group's val
    for group in ("group0", "group1"):
        assert len(create_dataset("cityscapes", root=target, split=f"{group}_val", num_classes=19,
                                  transforms=None)) == 30
        assert len(create_dataset("cityscapes", root=target, split=f"{group}_train", num_classes=19,
                                  transforms=None)) == 3
    item = create_dataset("synthia", root=source, split="train", num_classes=16, transforms=None)[0]
    assert item["image"].shape == (3, 40, 64) and item["label"].shape == (40, 64)


def test_source_labels_are_16bit_synthia_ids_and_target_labels_are_labelids(tiny_benchmark):
    ids = read_synthia_label(tiny_benchmark / "source/GT/LABELS/0000000.png")
    assert ids.dtype == np.uint16 and set(np.unique(ids).tolist()) <= set(range(23))
    assert 22 in set(np.unique(np.concatenate([read_synthia_label(p).ravel() for p in
                                               sorted((tiny_benchmark / "source/GT/LABELS").glob("*.png"))])))
    label_ids = read_label(next((tiny_benchmark / "target/gtFine/train/aachen").glob("*_labelIds.png")))
    assert 1 in label_ids  # ego vehicle (hood), as in Cityscapes
    assert set(np.unique(label_ids).tolist()) <= {0, 1, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 28, 32, 33}


def _class_pixels(paths, read, lut):
    counts = np.zeros(256, dtype=np.int64)
    for path in paths:
        counts += np.bincount(lut[np.minimum(read(path), 255).astype(np.uint8)].ravel(), minlength=256)
    return counts


def test_class_coverage_and_manifest_histograms(tiny_benchmark):
    manifest = json.loads((tiny_benchmark / "manifest.json").read_text())
    assert manifest["generator_version"] == GENERATOR_VERSION and manifest["seed"] == 0
    source = manifest["domains"]["source"]
    target = manifest["domains"]["target"]
    assert source["counts"] == {"train": 12, "val": 4} and target["counts"] == {"train": 66, "val": 6}
    src = _class_pixels(sorted((tiny_benchmark / "source/GT/LABELS").glob("*.png")), read_synthia_label, synthia_lut(19))
    tgt = _class_pixels(sorted((tiny_benchmark / "target/gtFine").rglob("*_labelIds.png")), read_label, labelid_lut(19))
    for counts, domain in ((src, source), (tgt, target)):
        present = [t for t in CLASSES_16 if counts[t] > 0]
        assert len(present) >= 10, [CITYSCAPES_CLASSES[t] for t in present]
        stored = {name: sum(domain["class_histogram"][s][name] for s in ("train", "val")) for name in CITYSCAPES_CLASSES}
        assert stored == {name: int(counts[i]) for i, name in enumerate(CITYSCAPES_CLASSES)}


def _mean_colors(image_paths, label_paths, read, lut):
    sums, counts = np.zeros((19, 3)), np.zeros(19)
    for image_path, label_path in zip(image_paths, label_paths):
        image = np.asarray(read_image(image_path), dtype=np.float64)
        label = lut[np.minimum(read(label_path), 255).astype(np.uint8)]
        for c in range(19):
            mask = label == c
            sums[c] += image[mask].sum(0)
            counts[c] += mask.sum()
    return sums / np.maximum(counts, 1)[:, None], counts


def test_appearance_differs_between_domains_for_the_large_classes(tiny_benchmark):
    src_images = sorted((tiny_benchmark / "source/RGB").glob("*.png"))
    src_labels = [p.parent.parent / "GT/LABELS" / p.name for p in src_images]
    tgt_images = sorted((tiny_benchmark / "target/leftImg8bit").rglob("*.png"))
    tgt_labels = [p.parents[3] / "gtFine" / p.parent.parent.name / p.parent.name /
                  p.name.replace("leftImg8bit", "gtFine_labelIds") for p in tgt_images]
    src_mean, _ = _mean_colors(src_images, src_labels, read_synthia_label, synthia_lut(19))
    tgt_mean, _ = _mean_colors(tgt_images, tgt_labels, read_label, labelid_lut(19))
    for name in ("road", "sidewalk", "building", "vegetation", "sky"):
        c = CITYSCAPES_CLASSES.index(name)
        assert np.linalg.norm(src_mean[c] - tgt_mean[c]) > 40, name  # a clear colour shift per class
    # target images are noisy/textured: neighbouring pixels differ; source ones are flat inside regions
    src = np.asarray(read_image(src_images[0]), dtype=float)
    tgt = np.asarray(read_image(tgt_images[0]), dtype=float)
    assert np.median(np.abs(np.diff(tgt, axis=1))) > np.median(np.abs(np.diff(src, axis=1))) + 1


def test_existing_output_is_never_overwritten(tmp_path):
    out = tmp_path / "bench"
    first = generate(out, seed=1, **SMALL)
    assert first.created and first.bytes_on_disk > 0
    before = snapshot(out)
    again = generate(out, seed=1, **SMALL)
    assert not again.created and snapshot(out) == before
    with pytest.raises(FileExistsError, match="different parameters"):
        generate(out, seed=2, **SMALL)
    assert snapshot(out) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no readable manifest.json"):
        generate(other, **SMALL)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_bad_parameters_are_explained(tmp_path):
    with pytest.raises(ValueError, match="num_source = 0"):
        generate(tmp_path / "x", num_source=0)
    with pytest.raises(ValueError, match="target_size"):
        generate(tmp_path / "x", target_size=(8, 4))
    assert not (tmp_path / "x").exists()
