"""Kill the driver of a running study (SIGKILL, as a crash or a lost head node would), then `dastudy study resume`:
no trial lost or duplicated, finished trials not rerun, the Optuna study consistent."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest

from study_helpers import TEST_RAY_ENV, study_table, write_study_file

NUM_SAMPLES = 4


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "study.cli", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, **TEST_RAY_ENV}
    env["RAY_TMPDIR"] = str(tmp_path)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def _kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the driver, then whatever it had started (raylet, workers) that survived it, by PID."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return [c.pid for c in children]


@pytest.mark.slow
def test_resume_after_driver_sigkill(tiny_benchmark, tmp_path):
    table = study_table(tiny_benchmark, name="crash", num_samples=NUM_SAMPLES, max_concurrent_trials=2,
                        scheduler={"kind": "fifo"},
                        # Keep every checkpoint: Ray snapshots its state every ~10 s, and these tiny trials report
                        # several checkpoints in that time; a deleted one cannot be resumed (docs/reliability.md).
                        checkpoints_to_keep=6)
    table["train"]["optim"].update(iter_max=12, iter_stop=12)  # 6 evaluations per trial
    study_file = write_study_file(tmp_path / "crash.toml", table)
    storage = tmp_path / "studies"
    env = _env(tmp_path)

    driver = subprocess.Popen(_cli("study", "run", str(study_file), "--storage", str(storage), "--num-cpus", "2"),
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in driver.stdout], daemon=True).start()
    output, done_before = [], set()
    deadline = time.time() + 240
    while not done_before and time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert driver.poll() is None, "driver ended early:\n" + "".join(output)
            continue
        output.append(line)
        match = re.search(r"(trial_\w+) COMPLETE", line)
        if match:
            done_before.add(match.group(1))
    assert done_before, "no trial completed in time:\n" + "".join(output)
    home = storage / "crash"
    _kill_tree(driver)
    time.sleep(1)
    snapshot = {name: ((home / name / "result.json").read_bytes(), (home / name / "run" / "metrics.jsonl").read_bytes())
                for name in done_before}

    resumed = subprocess.run(_cli("study", "resume", "crash", "--storage", str(storage), "--num-cpus", "2"),
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    # Every trial exactly once in Ray's directory and in Optuna, none left RUNNING.
    trial_dirs = sorted(p for p in home.iterdir() if p.name.startswith("trial_") and (p / "params.json").is_file())
    assert len(trial_dirs) == NUM_SAMPLES
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    trials = optuna.load_study(study_name="crash",
                               storage=JournalStorage(JournalFileBackend(str(home / "optuna.journal")))).trials
    assert len(trials) == NUM_SAMPLES
    assert [t.state.name for t in trials] == ["COMPLETE"] * NUM_SAMPLES
    assert sorted(t.user_attrs["trial_dir"] for t in trials) == [p.name for p in trial_dirs]
    # Trials finished before the crash were not run again.
    for name, (result, metrics) in snapshot.items():
        assert (home / name / "result.json").read_bytes() == result
        assert (home / name / "run" / "metrics.jsonl").read_bytes() == metrics
    # Every trial reached the end, each evaluation once in its metrics file.
    for trial_dir in trial_dirs:
        rows = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines() if x.strip()]
        assert rows[-1]["finished"] == 1.0 and rows[-1]["iteration"] == 12
        evals = [json.loads(x)["iteration"] for x in (trial_dir / "run" / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "eval"]
        assert evals == [2, 4, 6, 8, 10, 12], trial_dir.name
    # The trial that was running when the driver died went on from its checkpoint (or restarted, keeping the
    # earlier attempt, if it had none yet).
    interrupted = [d for d in trial_dirs if d.name not in done_before
                   and (json.loads((d / "run" / "provenance.json").read_text())["resumes"]
                        or list(d.glob("run.attempt-*")))]
    assert interrupted, "no trial was interrupted by the kill"
    provenance = json.loads((home / "provenance.json").read_text())
    assert len(provenance["resumes"]) == 1
    assert "of 4 trials (4 COMPLETE)" in resumed.stdout
