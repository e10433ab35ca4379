"""`dastudy data synth|check|prepare` through the real console entry point."""
from __future__ import annotations

import pytest
from data_trees import truncate

from study.cli import main


def test_synth_check_prepare_round_trip(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["data", "synth", str(out), "--seed", "3", "--num-source", "4", "--num-source-val", "1",
            "--num-target-train", "6", "--num-target-val", "3", "--source-size", "48x28", "--target-size", "48x24"]
    assert main(args) == 0
    assert "wrote the synthetic benchmark" in capsys.readouterr().out
    assert main(args) == 0
    assert "already present" in capsys.readouterr().out

    assert main(["data", "check", str(out / "source"), "--dataset", "synthia"]) == 0
    text = capsys.readouterr().out
    assert "manifest.json" in text and "traffic_sign" in text and "no problems found" in text
    assert main(["data", "check", str(out / "target"), "--dataset", "cityscapes", "--full"]) == 0

    assert main(["data", "prepare", str(out / "source"), "--workers", "0"]) == 0
    assert "converted 5 label(s)" in capsys.readouterr().out
    assert main(["data", "prepare", str(out / "source"), "--workers", "0"]) == 2  # refuses to overwrite
    assert "already exist" in capsys.readouterr().err
    assert main(["data", "prepare", str(out / "source"), "--workers", "0", "--skip-existing"]) == 0


def test_check_exit_code_is_nonzero_on_problems(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["data", "synth", str(out), "--num-source", "3", "--num-source-val", "1", "--num-target-train", "6",
                 "--num-target-val", "3", "--source-size", "32x20", "--target-size", "32x16"]) == 0
    label = next((out / "target/gtFine/val").rglob("*_labelIds.png"))
    truncate(label)
    capsys.readouterr()
    assert main(["data", "check", str(out / "target"), "--dataset", "cityscapes"]) == 1
    assert f"{label}: cannot decode the label" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("")
    assert main(["data", "synth", str(tmp_path / "busy")]) == 2
    assert "holds no readable manifest.json" in capsys.readouterr().err
    assert main(["data", "prepare", str(tmp_path / "busy")]) == 2
    assert "GT/LABELS: missing folder" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["synth", "check", "prepare"])
def test_help_texts(action, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", action, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out) > 300


def test_bad_size_argument(capsys):
    with pytest.raises(SystemExit):
        main(["data", "synth", "x", "--target-size", "192by96"])
    assert "write WIDTHxHEIGHT" in capsys.readouterr().err


def test_check_of_a_missing_root_prints_its_problem_without_empty_tables(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "absent"), "--dataset", "cityscapes"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'absent'}: cityscapes root folder does not exist" in out and "1 problem(s):" in out
    assert "split" not in out and "histogram" not in out and "road" not in out  # no empty table, no empty histogram
    assert "docs/data.md" in out  # where to read the layout
