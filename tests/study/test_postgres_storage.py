"""The Optuna state in PostgreSQL (``search.storage = "postgresql://..."``), against a real server: Debian's
``postgresql`` package (``make test`` installs it), started here with initdb/pg_ctl on a private port and data
directory as the unprivileged ``postgres`` user, stopped by PID. A study runs with it; every trial is in the
database and none in a journal file; ``study status`` reads it back."""
from __future__ import annotations

import os
import shutil
import tempfile

import optuna
import pytest

from postgres_server import postgres_server
from study.config.study_config import study_from_dict
from study_helpers import TEST_RAY_ENV, study_table

ray = pytest.importorskip("ray")
# SQLAlchemy 2.1 drives postgresql:// URLs with psycopg 3
pytest.importorskip("psycopg", reason="psycopg is missing: `make test` installs it (pip extra 'postgres')")


@pytest.fixture
def postgres_url():
    with postgres_server() as (url, _):
        yield url


@pytest.fixture
def local_ray(monkeypatch):
    for key, value in TEST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    tmp = tempfile.mkdtemp(prefix="rp", dir="/tmp")  # short: unix socket paths are limited to ~107 characters
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, object_store_memory=100 * 1024 ** 2, _temp_dir=tmp)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_study_keeps_its_optuna_state_in_postgres(postgres_url, local_ray, tiny_benchmark, tmp_path):
    """About 20-40 s: server start, 4 probe trials, ASHA."""
    from study.commands.study import collect_trials
    from study.run.tuner import run_study
    from trainables.tune import checkpoint_probe

    os.environ["DASTUDY_PROBE_CKPT_BYTES"] = "4096"
    try:
        table = study_table(tiny_benchmark, name="pg", num_samples=4, max_concurrent_trials=2,
                            search={"space": "lambda_lr", "sampler": "tpe", "seed": 1, "startup_trials": 2,
                                    "storage": postgres_url})
        table["train"]["optim"].update(iter_max=8, iter_stop=8)  # 4 evaluations
        results, location = run_study(study_from_dict(table, source="test"), storage=str(tmp_path / "studies"),
                                       trainable=checkpoint_probe)
    finally:
        os.environ.pop("DASTUDY_PROBE_CKPT_BYTES", None)
    assert len(results) == 4 and results.num_errors == 0
    assert not (location.home / "optuna.journal").exists()  # nothing of Optuna's on the driver's disk
    trials = optuna.load_study(study_name="pg", storage=postgres_url).trials
    assert len(trials) == 4
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"} and "COMPLETE" in {t.state.name for t in trials}
    assert sorted(t.user_attrs["trial_dir"] for t in trials) == sorted(
        p.name for p in location.home.glob("trial_*"))
    info = collect_trials(location.home)  # `dastudy study status` reads the same database
    assert sorted(t["trial"] for t in info["trials"]) == sorted(t.user_attrs["trial_dir"] for t in trials)
    assert info["best"] is not None
