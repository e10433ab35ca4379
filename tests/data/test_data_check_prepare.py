"""`data check` finds every problem without writing; `data prepare` writes next to originals, never over them."""
from __future__ import annotations

import json

import numpy as np
import pytest
from data_trees import SIZE, SYNTHIA_TRAIN_IDS, banded, snapshot, truncate, write_cityscapes, write_synthia
from PIL import Image

from data import DatasetError, create_dataset
from data.check import PUBLISHED_COUNTS, check_dataset
from data.io import read_label
from data.prepare import prepare_synthia


def test_synthetic_benchmark_checks_clean_against_its_manifest(tiny_benchmark):
    for root, dataset in ((tiny_benchmark / "source", "synthia"), (tiny_benchmark / "target", "cityscapes")):
        before = snapshot(root)
        report = check_dataset(root, dataset)
        assert report.ok, report.problems
        assert snapshot(root) == before
        assert all(c.basis == "manifest.json" and c.found == c.expected for c in report.counts)
        assert len(report.present_classes()) >= 10
        assert "road" in report.format() and "no problems found" in report.format()


def test_broken_tree_reports_every_problem_and_writes_nothing(cityscapes_root):
    missing_label = cityscapes_root / "gtFine/train/aachen/aachen_000003_000019_gtFine_labelIds.png"
    missing_label.unlink()
    broken_image = cityscapes_root / "leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png"
    truncate(broken_image, 0.4)
    broken_label = cityscapes_root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"
    truncate(broken_label, 0.3)
    before = snapshot(cityscapes_root)
    report = check_dataset(cityscapes_root, "cityscapes", full=True)
    assert snapshot(cityscapes_root) == before
    assert not report.ok
    text = "\n".join(report.problems)
    assert f"{missing_label}: missing label for image aachen_000003_000019_leftImg8bit.png" in text
    assert f"{broken_image}: cannot decode the image" in text
    assert f"{broken_label}: cannot decode the label" in text
    assert "split 'train' has 26 images, expected 2975 (published)" in text
    assert "split 'val' has 3 images, expected 500 (published)" in text
    assert len(report.problems) == 5
    assert "... and 3 more" in report.format(max_problems=2)
    assert report.labels_decoded == 27  # every label that could be decoded (full=True)


def test_sampled_check_decodes_about_twenty_per_split(tmp_path):
    root = write_cityscapes(tmp_path / "cs", {"train": {"aachen": 30}, "val": {"lindau": 2}})
    report = check_dataset(root, "cityscapes")
    assert report.labels_decoded == 20 + 2
    assert report.histograms["train"].sum() == 20 * SIZE[0] * SIZE[1]
    ignored = report.histograms["val"][19]
    assert ignored == 2 * int((banded([7, 26, 0, 33, 24, 21]) == 0).sum())  # labelId 0 → ignored


def test_check_synthia_flags_8bit_labels_and_missing_layout(tmp_path):
    root = write_synthia(tmp_path / "syn", train=3, val=1)
    Image.fromarray(np.zeros(SIZE[::-1], dtype=np.uint8)).save(root / "GT/LABELS/0000002.png")
    report = check_dataset(root, "synthia")
    assert any("0000002.png: expected a 16-bit SYNTHIA label" in p for p in report.problems)
    assert [c.expected for c in report.counts] == [PUBLISHED_COUNTS["synthia"]["train"], 400]
    empty = tmp_path / "empty"
    empty.mkdir()
    report = check_dataset(empty, "synthia")
    assert any(p.startswith(f"{empty / 'RGB'}: missing folder") for p in report.problems)
    assert any(p.startswith(f"{empty / 'GT/LABELS'}: missing folder") for p in report.problems)
    assert check_dataset(tmp_path / "absent", "gta5").problems == [f"{tmp_path / 'absent'}: gta5 root folder does not exist"]
    with pytest.raises(DatasetError, match="not known"):
        check_dataset(root, "kitti")


def test_prepare_writes_trainid_labels_next_to_the_originals(synthia_root):
    originals = snapshot(synthia_root / "GT/LABELS")
    result = prepare_synthia(synthia_root, workers=0)
    assert result.written == 7 and result.skipped == 0
    assert snapshot(synthia_root / "GT/LABELS") == originals  # originals untouched
    out = synthia_root / "GT/LABELS_TRAINID"
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:07d}.png" for i in range(7)]
    np.testing.assert_array_equal(read_label(out / "0000004.png"), banded(SYNTHIA_TRAIN_IDS))
    assert json.loads((out / "prepared.json").read_text())["files"] == 7
    # the reader now uses the converted files, with the same labels (16-class space here)
    ds = create_dataset("synthia", root=synthia_root, split="train", num_classes=16, transforms=None)
    assert ds.uses_prepared_labels and ds.samples[0].label.parent == out
    np.testing.assert_array_equal(ds[0]["label"].numpy(), banded([9, 0, 12, 255, 10, 3]))
    report = check_dataset(synthia_root, "synthia")
    assert all("expected 9000 (published)" in p or "expected 400 (published)" in p for p in report.problems)
    assert any("7 of 7 labels have a converted trainId copy" in n for n in report.notes)
    Image.fromarray(np.zeros(SIZE[::-1], dtype=np.uint8)).save(out / "0000000.png")  # a stale copy
    assert any(p.startswith(f"{out / '0000000.png'}: differs from the conversion")
               for p in check_dataset(synthia_root, "synthia").problems)


def test_prepare_refuses_to_overwrite_unless_asked(synthia_root):
    prepare_synthia(synthia_root, workers=0)
    out = synthia_root / "GT/LABELS_TRAINID"
    before = snapshot(out)
    with pytest.raises(FileExistsError, match="7 converted label\\(s\\) already exist"):
        prepare_synthia(synthia_root, workers=0)
    assert snapshot(out) == before
    (out / "0000006.png").unlink()  # e.g. an interrupted run
    result = prepare_synthia(synthia_root, existing="skip", workers=0)
    assert (result.written, result.skipped) == (1, 6)
    result = prepare_synthia(synthia_root, existing="overwrite", workers=2)
    assert result.written == 7


def test_prepare_reports_bad_labels_and_writes_no_marker(synthia_root):
    truncate(synthia_root / "GT/LABELS/0000003.png")
    with pytest.raises(DatasetError, match=r"(?s)1 of 7 SYNTHIA labels could not be converted.*0000003.png"):
        prepare_synthia(synthia_root, workers=0)
    assert not (synthia_root / "GT/LABELS_TRAINID/prepared.json").exists()
    ds = create_dataset("synthia", root=synthia_root, split="val", num_classes=19, transforms=None)
    assert not ds.uses_prepared_labels  # an incomplete conversion is never used
