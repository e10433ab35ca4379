"""`dastudy demo` converts the source's 16-bit labels once, next to the originals, and the reader then uses them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

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


@pytest.mark.slow
def test_dastudy_demo_end_to_end(tmp_path):
    """`dastudy demo` as a user runs it (a subprocess through the console script), shrunk to seconds: the benchmark
    is generated into --data, the baseline and the trials both read it (the baseline ignored --data before), the
    study ends with exit 0, its table and the TensorBoard/report hints, and every trial finished."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from study_helpers import TEST_RAY_ENV

    small = ["train.optim.iter_max=4", "train.optim.iter_stop=4", "train.eval.interval=2",
             "train.data.source.size=[64,32]", "train.data.target.size=[64,32]", "train.data.val.size=[64,32]",
             "baseline.overrides.optim.iter_max=4", "baseline.overrides.optim.iter_stop=4",
             "baseline.overrides.eval.interval=2", "baseline.overrides.data.source.size=[64,32]",
             "baseline.overrides.data.val.size=[64,32]", "num_samples=2"]
    dastudy = Path(sys.executable).with_name("dastudy")
    env = {**os.environ, **TEST_RAY_ENV}
    proc = subprocess.run([str(dastudy), "demo", "--data", "bench", "--storage", "st", "--num-cpus", "2", *small],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "bench" / "manifest.json").is_file()
    assert not (tmp_path / "datasets").exists()  # nothing read from or written to the default location
    assert "study ended: 2 trials, 0 failed" in proc.stdout and "2 of 2 trials (" in proc.stdout
    assert "dastudy study report demo --storage st" in proc.stdout
    home = tmp_path / "st" / "demo"
    assert (home / "study.toml").is_file() and (home / "baseline" / "result.json").is_file()
    baseline = json.loads((home / "baseline" / "result.json").read_text())
    assert baseline["status"] == "completed" and baseline["iterations"] == baseline["total_iterations"] == 4
