"""One real study with replicates on a local Ray: 2 configurations x 2 seeds, replicate-aware ASHA, tiny model."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import optuna
import pytest

from study.study_config import study_from_dict
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

    from study.tuner import run_study

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
