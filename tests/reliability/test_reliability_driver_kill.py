"""SIGKILL of the study driver at chosen points, then `dastudy study resume`, until the study completes.

One study (four trials, one per run seed, two at a time) is killed three times, each time at a point picked
through DASTUDY_FAULT so that the kill lands exactly there (the process reaching the point writes a claim file and
sleeps; the test then kills the driver and everything it started, by PID):

  1. `study run`,    while a trial is being started: in the driver, right after Optuna trial #2 was asked for it
                     (the Optuna journal has the trial, Ray's saved experiment state does not)
  2. `study resume`, when trial #2 has written its checkpoint of iteration 4 and not yet handed it to Ray
  3. `study resume`, when trial #2 has computed the metrics of iteration 6 and not yet reported them
  4. `study resume` runs to the end.

Then: every seed completed exactly once (Optuna and Ray agree, nothing RUNNING, no extra Optuna trial), every
checkpoint and every Ray state file readable, and every trial's losses and metrics equal to an uninterrupted run.
(A kill after a trial completed, timed from the driver's output, is tests/study/test_tune_resume.py.)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reliability_helpers import (fault_env, log_tail, metrics_rows, optuna_trials, reference_rows, start_driver,
                                 trial_seed, wait_for_file)
from study_helpers import kill_tree, study_table, write_study_file

SEEDS = [1, 2, 3, 4]
KILL_DELAY_S = 1.0  # after the claim file appears (the other trial keeps running meanwhile)


def _session(root: Path, args: list[str], fault: str, claim: str | None, index: int) -> dict:
    log = root / f"session{index}.log"
    started = time.monotonic()
    driver = start_driver(args, env=fault_env(root / "faults", fault), cwd=root, log=log)
    if claim is None:
        code = driver.wait(timeout=400)
        assert code == 0, log_tail(log)
        return {"wall_s": time.monotonic() - started}
    waited = wait_for_file(root / "faults" / claim, driver, log, timeout=300)
    time.sleep(KILL_DELAY_S)
    killed = kill_tree(driver)
    return {"wall_s": time.monotonic() - started, "until_fault_s": waited, **killed}


def _readable_state(home: Path) -> None:
    from trainables.checkpoint import read_checkpoint

    checkpoints = sorted(home.glob("trial_*/checkpoint_*/state.pt"))
    for path in checkpoints:
        assert read_checkpoint(path)["iteration"] in (2, 4, 6), path
    for path in sorted(home.glob("experiment_state-*.json")):
        json.loads(path.read_text())  # Ray's state files are whole (study/state/atomic_fs.py), never torn
    for pattern in ("search_gen_state-*.json", "searcher-state-*.pkl"):
        for path in home.glob(pattern):
            assert path.stat().st_size > 0, path


@pytest.mark.slow
@pytest.mark.extended  # 80 s; make test keeps test_tune_resume.py::test_resume_after_driver_sigkill (43 s)
@pytest.mark.timeout(900)
def test_study_survives_driver_kills_at_trial_start_checkpoint_and_evaluation(tiny_benchmark, tmp_path,
                                                                              remove_driver_temp_dirs):
    table = study_table(tiny_benchmark, name="kills", num_samples=len(SEEDS), max_failures=1,
                        scheduler={"kind": "fifo"},
                        search={"space": "seeds", "sampler": "grid", "seed": 0, "params": {"seeds": SEEDS}})
    study_file = write_study_file(tmp_path / "kills.toml", table)
    (tmp_path / "faults").mkdir()
    storage = str(tmp_path / "studies")
    home = tmp_path / "studies" / "kills"
    remove_driver_temp_dirs(home)
    resume = ["study", "resume", "kills", "--storage", storage, "--num-cpus", "2"]
    sessions = []

    sessions.append(_session(tmp_path, ["study", "run", str(study_file), "--storage", storage, "--num-cpus", "2"],
                             "pause_at:suggest:2", "pause_at-suggest-2", 1))
    asked = {t.number: t for t in optuna_trials(home, "kills")}
    assert asked[2].state.name == "RUNNING"
    orphan_ray_id, seed = asked[2].user_attrs["ray_trial_id"], asked[2].params["runtime.seed"]
    _readable_state(home)

    for index, (fault, claim) in enumerate([
            (f"pause_at:checkpoint:4@seed={seed}", f"pause_at-checkpoint-4-seed{seed}"),
            (f"pause_at:evaluate:6@seed={seed}", f"pause_at-evaluate-6-seed{seed}")], start=2):
        sessions.append(_session(tmp_path, resume, fault, claim, index))
        _readable_state(home)
        running = [t for t in optuna_trials(home, "kills") if t.state.name == "RUNNING"]
        assert len(optuna_trials(home, "kills")) <= len(SEEDS) and running
    sessions.append(_session(tmp_path, resume, "", None, 4))
    print("\nsessions:", json.dumps(sessions))

    # Optuna: one trial per seed, all COMPLETE, the orphaned #2 taken over by the trial that ran its seed
    trials = optuna_trials(home, "kills")
    assert sorted(t.params["runtime.seed"] for t in trials) == SEEDS
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(SEEDS)
    adopted = [t.number for t in trials if t.user_attrs.get("adopted_from")]
    assert 2 in adopted  # (a later kill can orphan another freshly asked trial too)
    assert orphan_ray_id not in {t.user_attrs["ray_trial_id"] for t in trials}
    # Each seed's run finished exactly once among the trial folders, in the folder Optuna points to. The engine's
    # run/result.json says so: Ray's own files of a trial that ended within Ray's snapshot interval before a kill
    # never reach the study (the report reads such a trial from run/ and Optuna; study/report/collect.py).
    finished = {}
    for trial_dir in home.glob("trial_*"):
        engine = trial_dir / "run" / "result.json"
        if engine.is_file() and json.loads(engine.read_text()).get("status") == "completed":
            assert trial_seed(trial_dir) not in finished, f"seed {trial_seed(trial_dir)} finished twice"
            finished[trial_seed(trial_dir)] = trial_dir
    assert sorted(finished) == SEEDS
    assert {t.params["runtime.seed"]: t.user_attrs["trial_dir"] for t in trials} == {
        s: d.name for s, d in finished.items()}
    _readable_state(home)
    assert len(json.loads((home / "provenance.json").read_text())["resumes"]) == 3
    # each trial equals an uninterrupted run of its config, loss by loss and metric by metric
    for s, trial_dir in sorted(finished.items()):
        assert metrics_rows(trial_dir / "run" / "metrics.jsonl") == reference_rows(trial_dir, tmp_path / f"ref{s}")
        value = next(t.value for t in trials if t.params["runtime.seed"] == s)
        assert value == json.loads((trial_dir / "run" / "last_eval.json").read_text())["val/mIoU16"]
    # The report shows every seed's trial once, completed, with Optuna's value (whether or not Ray's files came).
    from study.report.collect import load_study

    reported = {t.name: t for t in load_study(home).trials}
    assert sorted(reported) == sorted(d.name for d in finished.values())
    assert {t.status for t in reported.values()} == {"completed"}
    for t in trials:
        assert reported[t.user_attrs["trial_dir"]].metric == t.value
