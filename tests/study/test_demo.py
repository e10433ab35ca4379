"""`dastudy demo` converts the source's 16-bit labels once, next to the originals, and the reader then uses them."""
from __future__ import annotations

import shutil

import numpy as np

import data
from data.layouts import PREPARED_LABEL_DIR
from study.commands.demo import _ensure_prepared_labels


def test_demo_prepares_source_labels_once_and_reader_uses_them(tiny_benchmark, tmp_path, capsys):
    source = tmp_path / "source"
    shutil.copytree(tiny_benchmark / "source", source)
    originals = sorted(p.name for p in (source / "GT" / "LABELS").iterdir())
    before = data.create_dataset("synthia", root=source, split="train", num_classes=16, transforms=None)
    assert not before.uses_prepared_labels

    _ensure_prepared_labels(source)
    assert "converted" in capsys.readouterr().out
    converted = sorted(p.name for p in (source / PREPARED_LABEL_DIR).glob("*.png"))
    assert converted == [n for n in originals if n.endswith(".png")]
    assert sorted(p.name for p in (source / "GT" / "LABELS").iterdir()) == originals  # originals untouched

    after = data.create_dataset("synthia", root=source, split="train", num_classes=16, transforms=None)
    assert after.uses_prepared_labels
    for index in range(min(3, len(after))):
        assert np.array_equal(before[index]["label"].numpy(), after[index]["label"].numpy())

    _ensure_prepared_labels(source)  # second call: nothing to do, nothing printed
    assert capsys.readouterr().out == ""
