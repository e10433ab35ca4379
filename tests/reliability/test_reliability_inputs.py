"""Bad inputs at the command line: each is refused (or fails its run) with one message naming the file, the key
or the value, and what is allowed; nothing is left half-written. Readers and config classes are tested on their
own in tests/data, tests/trainables and tests/study; here every case goes through `dastudy` as a user meets it.
(A study name that exists: tests/study/test_study_cli.py::test_existing_study_directory_is_never_overwritten.)"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.cli import main
from study_helpers import study_table, write_study_file

pytestmark = pytest.mark.timeout(300)


def _run_table(bench: Path, **changes) -> dict:
    """A source-only run of 2 iterations on the tiny model (evaluates the target val split at iteration 2)."""
    table = study_table(bench)["train"]
    table["adapt"] = {"mode": "source_only"}
    table["optim"].update(iter_max=2, iter_stop=2)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = table
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return table


def _train(tmp_path: Path, table: dict, capsys, *extra: str) -> tuple[int, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_file = write_study_file(tmp_path / "run.toml", table)
    code = main(["train-source", str(run_file), "--out", str(tmp_path / "out"), "--no-progress", *extra])
    return code, capsys.readouterr().err


@pytest.fixture
def bench(tiny_benchmark, tmp_path) -> Path:
    """A private copy of the tiny benchmark that a test may damage."""
    return Path(shutil.copytree(tiny_benchmark, tmp_path / "bench"))


@pytest.mark.parametrize("key, value, expected", [
    ("optim.lrr", 0.01, ["optim.lrr", "one of the known keys", "lr"]),          # unknown key
    ("optim.batch_size", "two", ["optim.batch_size", "'two'", "an integer"]),    # wrong type
    ("eval.interval", 0, ["eval.interval = 0", "a positive integer"]),           # out of range
    ("data.num_classes", 21, ["data.num_classes = 21", "16 or 19"]),             # out of range
])
def test_bad_run_config_names_file_key_value_and_what_is_allowed(tiny_benchmark, tmp_path, capsys, key, value,
                                                                 expected):
    code, err = _train(tmp_path, _run_table(tiny_benchmark, **{key: value}), capsys)
    assert code == 2
    assert err.startswith("dastudy: error: ") and str(tmp_path / "run.toml") in err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("key, value, expected", [
    ("max_failure", 1, ["max_failure", "one of the known keys", "max_failures"]),  # unknown key (a typo)
    ("num_samples", "many", ["num_samples", "'many'", "an integer"]),              # wrong type
    ("resources.cpu", -1, ["resources.cpu", "-1"]),                                # out of range
])
def test_bad_study_file_names_file_key_value(tiny_benchmark, tmp_path, capsys, key, value, expected):
    table = study_table(tiny_benchmark, name="bad")
    section, _, leaf = key.rpartition(".")
    (table.setdefault(section, {}) if section else table)[leaf] = value
    study_file = write_study_file(tmp_path / "bad.toml", table)
    assert main(["study", "run", str(study_file), "--storage", str(tmp_path / "studies")]) == 2
    err = capsys.readouterr().err
    assert str(study_file) in err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "studies").exists()


def test_missing_dataset_root_and_split_list_name_the_path(bench, tmp_path, capsys):
    code, err = _train(tmp_path, _run_table(bench, **{"data.val.root": str(tmp_path / "nowhere")}), capsys)
    assert code == 2 and str(tmp_path / "nowhere") in err
    assert not (tmp_path / "out").exists()  # a run that never started leaves no directory
    (bench / "source" / "lists" / "train.txt").unlink()  # SYNTHIA then needs the standard ids: absent here
    code, err = _train(tmp_path, _run_table(bench), capsys)
    assert code == 2 and str(bench / "source") in err, err


def _first(pattern_dir: Path, pattern: str) -> Path:
    return sorted(pattern_dir.rglob(pattern))[0]


def test_truncated_image_fails_the_run_naming_the_file(bench, tmp_path, capsys):
    image = _first(bench / "target" / "leftImg8bit" / "val", "*.png")
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    code, err = _train(tmp_path, _run_table(bench), capsys)
    assert code == 2 and f"{image}: cannot decode the image" in err, err
    result = json.loads((tmp_path / "out" / "result.json").read_text())  # the run records why it stopped
    assert result["status"] == "failed" and str(image) in result["message"]
    assert main(["data", "check", str(bench / "target"), "--dataset", "cityscapes", "--full"]) == 1
    assert str(image.name) in capsys.readouterr().out


def test_corrupt_label_fails_the_run_naming_the_file(bench, tmp_path, capsys):
    label = _first(bench / "target" / "gtFine" / "val", "*_labelIds.png")
    label.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    code, err = _train(tmp_path, _run_table(bench), capsys)
    assert code == 2 and f"{label}: cannot decode the label" in err, err


def test_8bit_synthia_label_where_16bit_is_expected_names_the_file(bench, tmp_path, capsys):
    labels = sorted((bench / "source" / "GT" / "LABELS").glob("*.png"))
    for label in labels:  # every one, so that whichever the first batch reads is 8-bit
        Image.fromarray(np.zeros((40, 64), dtype=np.uint8)).save(label)
    code, err = _train(tmp_path, _run_table(bench), capsys)
    assert code == 2 and "expected a 16-bit SYNTHIA label PNG" in err and "found a 8-bit PNG" in err, err
    assert any(str(label) in err for label in labels)
    assert main(["data", "check", str(bench / "source"), "--dataset", "synthia"]) == 1
    assert "16-bit" in capsys.readouterr().out


def test_resuming_from_a_checkpoint_of_another_model_is_refused(tiny_benchmark, tmp_path, capsys):
    other = tmp_path / "v3plus"
    code, _ = _train(other, _run_table(tiny_benchmark, **{"model.name": "deeplabv3plus_tiny",
                                                            "model.multi_level": False}), capsys)
    assert code == 0
    checkpoint = other / "out" / "checkpoints" / "last.pt"
    code, err = _train(tmp_path, _run_table(tiny_benchmark), capsys, "--resume-from", str(checkpoint))
    assert code == 2
    assert str(checkpoint) in err and "deeplabv3plus_tiny" in err and "deeplabv2_tiny" in err, err
