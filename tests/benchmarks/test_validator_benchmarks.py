"""Smoke tests of the validator benchmarks on the tiny synthetic benchmark (seconds): they run and report."""
from __future__ import annotations

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
    assert S.main(["--out", str(tmp_path), "--shift", "default", "--data", str(tiny_benchmark)]) == 0
    trials = sorted((tmp_path / "default").glob("trial_*"))
    assert len(trials) == 2 and all((t / "run" / "result.json").is_file() for t in trials)
    assert json.loads((trials[1] / "params.json").read_text())["adapt.lambda_adv_main"] == 0.1
    text = (tmp_path / "default" / "agreement.md").read_text()
    assert "2 trials" in text and "| `uda/snd` |" in text and "| `uda/d_confusion` |" in text
