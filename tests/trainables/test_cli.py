"""End to end: `dastudy config show`, `train-source`, `adapt`, `evaluate` with the shipped synth configs on the
session's tiny synthetic benchmark (linked as datasets/synth in a scratch working directory)."""
from __future__ import annotations

import json
import tomllib

import pytest

from study.cli import main

# shrink the shipped synth configs to the tiny benchmark and a few iterations
SMALL = ["data.source.size=[64, 32]", "data.target.size=[64, 32]", "data.val.size=[64, 32]", "optim.batch_size=2",
         "optim.iter_max=4", "optim.iter_stop=2", "eval.interval=2", "eval.holdout_size=4", "eval.max_images=2",
         "runtime.log_interval=1", "runtime.device=cpu"]


@pytest.fixture
def workdir(tiny_benchmark, tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "synth").symlink_to(tiny_benchmark)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", "synth_adapt", "adapt.lambda_adv_main=0.5"]) == 0
    text = capsys.readouterr().out
    resolved = tomllib.loads(text)
    assert resolved["name"] == "synth_adapt" and resolved["adapt"]["lambda_adv_main"] == 0.5
    assert resolved["model"]["name"] == "deeplabv2_tiny"  # inherited through extends = "synth_source"
    assert resolved["optim"]["momentum"] == 0.9  # defaults are shown too
    assert main(["config", "list"]) == 0
    assert "synthia2cityscapes_v2_multi" in capsys.readouterr().out


def test_config_show_reports_bad_values(capsys):
    assert main(["config", "show", "synth_source", "optim.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "-1" in err and "> 0" in err
    assert main(["config", "show", "synth_source", "model.name=resnet9000", "--check"]) == 2
    assert "model.name" in capsys.readouterr().err


def test_train_source_adapt_evaluate(workdir, capsys):
    assert main(["train-source", "synth_source", *SMALL, "--no-progress"]) == 0
    out = capsys.readouterr()
    best = workdir / "runs/synth_source/checkpoints/best.pt"
    assert best.is_file() and "iteration 2: target val" in out.err and "sky" in out.err
    result = json.loads((workdir / "runs/synth_source/result.json").read_text())
    assert result["status"] == "completed" and result["best_metric"] == "select/mIoU16"

    assert main(["train-source", "synth_source", *SMALL]) == 2  # the run directory exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train-source", "synth_adapt", *SMALL]) == 2  # an adaptation config
    assert "dastudy adapt" in capsys.readouterr().err

    # the shipped synth_adapt initialises from runs/synth_source/checkpoints/best.pt and says so
    assert main(["adapt", "synth_adapt", *SMALL, "--no-progress"]) == 0
    out = capsys.readouterr()
    assert f"loaded" in out.err and "runs/synth_source/checkpoints/best.pt" in out.err
    adapted = workdir / "runs/synth_adapt/checkpoints/best.pt"
    assert adapted.is_file()
    metrics = [json.loads(line) for line in (workdir / "runs/synth_adapt/metrics.jsonl").read_text().splitlines()]
    assert "train/loss_d_main" in metrics[0] and any(r["kind"] == "eval" for r in metrics)

    assert main(["adapt", "synth_adapt", *SMALL, "optim.iter_stop=3", "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    assert json.loads((workdir / "runs/synth_adapt/result.json").read_text())["iterations"] == 3

    assert main(["evaluate", "synth_adapt", *SMALL, "--checkpoint", str(adapted), "--protocol", "seed", "--flip",
                 "--json", "eval.json"]) == 0
    out = capsys.readouterr().out
    assert "protocol seed, flip" in out and "bicycle" in out and "mIoU16" in out
    record = json.loads((workdir / "eval.json").read_text())
    assert record["protocol"] == "seed" and record["flip"] is True and "val/mIoU13" in record["metrics"]


def test_adapt_without_the_source_checkpoint_fails_before_training(workdir, capsys):
    assert main(["adapt", "synth_adapt", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "model.init_checkpoint" in err and "runs/synth_source/checkpoints/best.pt" in err
    assert not (workdir / "runs/synth_adapt").exists()
