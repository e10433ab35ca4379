"""The Optuna state in PostgreSQL (``search.storage = "postgresql://..."``), against a real server: Debian's
``postgresql`` package (``make test`` installs it), started here with initdb/pg_ctl on a private port and data
directory as the unprivileged ``postgres`` user, stopped by PID. A study runs with it; every trial is in the
database and none in a journal file; ``study status`` reads it back."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import optuna
import pytest

from study.study_config import study_from_dict
from study_helpers import TEST_RAY_ENV, study_table

ray = pytest.importorskip("ray")
# SQLAlchemy 2.1 drives postgresql:// URLs with psycopg 3
pytest.importorskip("psycopg", reason="psycopg is missing: `make test` installs it (pip extra 'postgres')")


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name)
                                                                       else [])
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_url():
    initdb, postgres = _bin("initdb"), _bin("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed (`make test` installs Debian's postgresql package with apt-get; "
                    "it could not here)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the package's system user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="dastudy-pg-", dir="/tmp")
    data = os.path.join(base, "data")
    if as_user:
        shutil.chown(base, user="postgres")
    port = _free_port()
    subprocess.run([*as_user, initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    log = open(os.path.join(base, "server.log"), "w")
    proc = subprocess.Popen([*as_user, postgres, "-D", data, "-p", str(port), "-k", base, "-h", "127.0.0.1",
                             "-c", "fsync=off"], stdout=log, stderr=subprocess.STDOUT)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        import psycopg

        deadline = time.time() + 60
        while True:
            try:
                psycopg.connect(url).close()
                break
            except psycopg.OperationalError:
                assert proc.poll() is None and time.time() < deadline, open(os.path.join(base, "server.log")).read()
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()  # SIGTERM to our server (runuser forwards it): a smart shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


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
    from study.tuner import run_study
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
