"""Smoke tests of the validator benchmarks on the tiny synthetic benchmark (seconds): they run and report."""
from __future__ import annotations

import csv
import json

import pytest


def test_validator_cost_benchmark(tiny_benchmark, tmp_path):
    from benchmarks import validators

    assert validators.main(["--data", str(tiny_benchmark), "--images", "2", "--pixels", "16", "--repeats", "1",
                            "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "validators_2x16.json").read_text())
    assert set(payload["summary"]) == {"evaluation", "all", "target", "snd", "source_val", "d_confusion"}
    assert all(s["median_ms"] > 0 for s in payload["summary"].values())


@pytest.mark.slow  # ~35 s on the loaded 2-core machine: a baseline and two adversarial runs
def test_validator_study_runs_and_writes_agreement(tiny_benchmark, tmp_path, monkeypatch):
    from benchmarks import validator_study as S

    monkeypatch.setattr(S, "LAMBDAS", (0.001, 0.1))
    monkeypatch.setattr(S, "LRS", (0.01,))
    monkeypatch.setattr(S, "SEEDS", (1,))
    monkeypatch.setattr(S, "SIZE", [64, 32])
    monkeypatch.setattr(S, "ITERATIONS", 3)
    monkeypatch.setattr(S, "INTERVAL", 1)
    monkeypatch.setattr(S, "BASELINE_ITERATIONS", 2)
    monkeypatch.setattr(S, "VAL_IMAGES", 2)
    assert S.main(["--out", str(tmp_path), "--shift", "default", "--data", str(tiny_benchmark),
                   "--results", str(tmp_path / "results")]) == 0
    trials = sorted((tmp_path / "default").glob("trial_*"))
    assert len(trials) == 2 and all((t / "run" / "result.json").is_file() for t in trials)
    assert json.loads((trials[1] / "params.json").read_text())["adapt.lambda_adv_main"] == 0.1
    text = (tmp_path / "default" / "agreement.md").read_text()
    assert "2 trials" in text and "| `uda/snd` |" in text and "| `uda/d_confusion` |" in text
    rows = list(csv.DictReader(open(tmp_path / "results" / "validator_study_default.csv")))
    assert len(rows) == 2 * 3 and {r["adapt.lambda_adv_main"] for r in rows} == {"0.001", "0.1"}
    assert all(float(r["uda/snd"]) == float(r["uda/snd"]) and r["val/mIoU16"] for r in rows)


def test_validator_study_stores_per_trial_results_as_csv(tmp_path):
    """The CSV holds every evaluation of every trial exactly as the run logs hold it (issue 18: the raw per-trial
    results of the validator finding were not stored), in trial order, with empty cells for unreported metrics."""
    from benchmarks import validator_study as S

    home = tmp_path / "default"
    logs = {"trial_000": [{"iteration": 30, "val/mIoU16": 0.091, "uda/snd": 1.25, "uda/im": 0.5},
                          {"iteration": 60, "val/mIoU16": 0.1, "uda/snd": 1.5, "uda/im": 0.75}],
            "trial_001": [{"iteration": 30, "val/mIoU16": 0.08, "uda/snd": 2.0}]}
    for k, (name, evals) in enumerate(logs.items()):
        (home / name / "run").mkdir(parents=True)
        (home / name / "params.json").write_text(json.dumps({"adapt.lambda_adv_main": 0.01 * (k + 1),
                                                             "optim.lr": 0.002, "runtime.seed": 1}))
        (home / name / "run" / "metrics.jsonl").write_text(
            "".join(json.dumps({"kind": "eval", **e}) + "\n" for e in evals)
            + json.dumps({"kind": "train", "iteration": 61, "train/loss_seg": 1.0}) + "\n")
    assert S.main(["--out", str(tmp_path), "--shift", "default", "--data", str(tmp_path), "--report-only",
                   "--results", str(tmp_path / "results")]) == 0
    lines = (tmp_path / "results" / "validator_study_default.csv").read_text().splitlines()
    assert lines == ["trial,adapt.lambda_adv_main,optim.lr,runtime.seed,iteration,uda/im,uda/snd,val/mIoU16",
                     "trial_000,0.01,0.002,1,30,0.5,1.25,0.091",
                     "trial_000,0.01,0.002,1,60,0.75,1.5,0.1",
                     "trial_001,0.02,0.002,1,30,,2.0,0.08"]
    # the same rows from any study directory (the λ studies of docs/results.md): benchmarks/study_csv.py
    from benchmarks import study_csv

    assert study_csv.main([str(home), str(tmp_path / "any.csv")]) == 0
    assert (tmp_path / "any.csv").read_text().splitlines() == lines
    with pytest.raises(SystemExit):  # not a study directory: refused, nothing written
        study_csv.main([str(tmp_path / "results"), str(tmp_path / "none.csv")])
    assert not (tmp_path / "none.csv").exists()
