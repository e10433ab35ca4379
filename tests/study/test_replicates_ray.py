"""One real study with replicates on a local Ray: 2 configurations x 2 seeds, replicate-aware ASHA, tiny model."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import optuna
import pytest

from study.config.study_config import study_from_dict
from study_helpers import TEST_RAY_ENV, study_table

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    saved = {k: os.environ.get(k) for k in TEST_RAY_ENV}
    os.environ.update(TEST_RAY_ENV)
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: unix socket paths are limited to ~107 characters
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             object_store_memory=200 * 1024 ** 2, _temp_dir=tmp)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_every_configuration_runs_on_every_seed_in_a_real_study(local_ray, tiny_benchmark, tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from study.run.tuner import run_study

    table = study_table(tiny_benchmark, name="reps", num_samples=2)
    table["search"] = {**table["search"], "seeds": [3, 5]}
    study = study_from_dict(table, source="test")
    results, location = run_study(study, storage=str(tmp_path / "studies"))
    home = location.home
    assert len(results) == 4 and results.num_errors == 0  # 2 configurations x 2 seeds
    assert (home / "replicate_rungs.json").is_file() and not (home / "asha_rungs.json").exists()

    trials = optuna.load_study(study_name="reps", storage=JournalStorage(JournalFileBackend(
        str(home / "optuna.journal")))).trials
    assert len(trials) == 2  # Optuna learned from one value per configuration
    for ot in trials:
        dirs = ot.user_attrs["replicate_trials"]
        assert sorted(dirs) == ["3", "5"]
        rows = {seed: _rows(home / name) for seed, name in dirs.items()}
        for seed, seed_rows in rows.items():
            params = json.loads((home / dirs[seed] / "params.json").read_text())
            assert params["runtime.seed"] == int(seed)
            assert {k: v for k, v in params.items() if k != "runtime.seed"} == {
                k: v for k, v in ot.params.items()}  # the same configuration on every seed
        # the seeds were stopped or promoted together: both full runs, or neither
        assert len({bool(r[-1].get("finished")) for r in rows.values()}) == 1
        common = min(len(r) for r in rows.values())
        mean = sum(r[common - 1]["val/mIoU16"] for r in rows.values()) / 2
        assert ot.value == pytest.approx(mean)
        assert ot.state.name == ("COMPLETE" if rows["3"][-1].get("finished") else "PRUNED")


@pytest.mark.slow
@pytest.mark.extended
def test_replicates_survive_a_driver_kill_in_the_middle_of_a_configuration(tiny_benchmark, tmp_path,
                                                                           remove_driver_temp_dirs):
    """SIGKILL the driver while one seed of the first configuration is done and its sibling is held mid-run;
    `study resume` finishes the sibling and tells Optuna the configuration's mean once, then runs the rest."""
    import queue
    import re
    import subprocess
    import threading
    import time

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from study_helpers import kill_tree, write_study_file
    from test_tune_resume import _cli, _env, _wait_until_recorded

    table = study_table(tiny_benchmark, name="reps", num_samples=2, max_concurrent_trials=2,
                        scheduler={"kind": "fifo"}, checkpoints_to_keep=1)
    table["search"] = {**table["search"], "seeds": [3, 5]}
    table["train"]["optim"].update(iter_max=12, iter_stop=12)  # 6 evaluations per trial
    study_file = write_study_file(tmp_path / "reps.toml", table)
    storage = tmp_path / "studies"
    remove_driver_temp_dirs(storage / "reps")
    env = _env(tmp_path)
    faults = tmp_path / "faults"
    faults.mkdir()
    env.update(DASTUDY_FAULT="pause_at:step:7", DASTUDY_FAULT_DIR=str(faults), DASTUDY_FAULT_PAUSE_S="900")
    driver = subprocess.Popen(_cli("study", "run", str(study_file), "--storage", str(storage), "--num-cpus", "2"),
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in driver.stdout], daemon=True).start()
    output, done_before, dirs = [], set(), {}
    deadline = time.time() + 300
    while not done_before and time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert driver.poll() is None, "driver ended early:\n" + "".join(output)
            continue
        output.append(line)
        # progress lines name a trial by its label; its directory is on its "started   in trial_<id>" line
        started = re.search(r"\] (.+) started   in (trial_\w+)", line)
        if started:
            dirs[started.group(1)] = started.group(2)
        match = re.search(r"\] (.+) COMPLETE", line)
        if match:
            done_before.add(dirs[match.group(1)])
    assert done_before, "no trial completed in time:\n" + "".join(output)
    home = storage / "reps"
    _wait_until_recorded(home, done_before, timeout=60)
    deadline = time.time() + 120
    while not any(faults.iterdir()):  # a sibling is held mid-run
        assert time.time() < deadline and driver.poll() is None, "no trial reached the pause:\n" + "".join(output)
        time.sleep(0.2)
    kill_tree(driver)
    ot_before = optuna.load_study(study_name="reps", storage=JournalStorage(JournalFileBackend(
        str(home / "optuna.journal")))).trials
    assert ot_before and ot_before[0].state.name == "RUNNING"  # the first configuration is not told yet

    resumed = subprocess.run(_cli("study", "resume", "reps", "--storage", str(storage), "--num-cpus", "2"),
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = optuna.load_study(study_name="reps", storage=JournalStorage(JournalFileBackend(
        str(home / "optuna.journal")))).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], resumed.stdout[-3000:]
    trial_dirs = sorted(p.name for p in home.iterdir() if p.name.startswith("trial_") and (p / "params.json").is_file())
    named = sorted(name for t in trials for name in t.user_attrs["replicate_trials"].values())
    assert named == trial_dirs and len(trial_dirs) == 4  # every configuration on both seeds, no trial twice
    for ot in trials:
        finals = [_rows(home / name)[-1] for name in ot.user_attrs["replicate_trials"].values()]
        assert all(r.get("finished") for r in finals)
        assert ot.value == pytest.approx(sum(r["val/mIoU16"] for r in finals) / 2)
