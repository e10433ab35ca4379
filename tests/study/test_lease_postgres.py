"""One writer per study whose Optuna state is in PostgreSQL (study/state/lease.py: a session advisory lock), against a
real server (tests/study/postgres_server.py): drivers racing for a study get exactly one winner every round; the
refusal names the holder; a killed driver's lock goes with its connection, a frozen driver's after the ttl (the
server ends its idle session), and that driver, woken, is told it lost the study; `study run` of a study that
already exists in the database is refused."""
from __future__ import annotations

import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from postgres_server import postgres_server
from study.state.lease import Holder, LeaseTiming, PostgresLease, hold_study
from study.state.lock import StudyLocked

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("psycopg", reason="psycopg is missing: `make test` installs it (pip extra 'postgres')")


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as (url, _):
        yield url


def _race(leases: list, order: list[int]) -> dict[int, str]:
    barrier = threading.Barrier(len(leases))
    outcome: dict[int, str] = {}

    def driver(index: int) -> None:
        barrier.wait()
        try:
            leases[index].acquire()
            outcome[index] = "won"
        except StudyLocked as err:
            outcome[index] = str(err)

    threads = [threading.Thread(target=driver, args=(i,)) for i in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcome


def test_drivers_racing_for_one_study_have_exactly_one_winner_every_round(postgres_url):
    rng = random.Random(20)
    for round_ in range(6):
        drivers = 2 + round_ % 3
        leases = [PostgresLease(postgres_url, "demo", Holder(command=f"#{round_}.{i}"), LeaseTiming())
                  for i in range(drivers)]
        outcome = _race(leases, rng.sample(range(drivers), drivers))
        winners = [i for i, result in outcome.items() if result == "won"]
        assert len(outcome) == drivers and len(winners) == 1, (round_, outcome)
        for i, refusal in outcome.items():
            if i != winners[0]:
                assert f"pid {os.getpid()} on {platform.node()}" in refusal and "heartbeat" in refusal, refusal
                assert "'demo'" in refusal and "\n" not in refusal
        leases[winners[0]].release()
    other = PostgresLease(postgres_url, "another study", Holder(), LeaseTiming())
    mine = PostgresLease(postgres_url, "demo", Holder(), LeaseTiming())
    other.acquire()  # the lock is the study's, not the database's
    mine.acquire()
    other.release()
    mine.release()


HOLD = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
from study.state.lease import LeaseTiming, hold_study
location = SimpleNamespace(shared_fs=True, home=Path(sys.argv[2]))
study = SimpleNamespace(name="demo", search=SimpleNamespace(storage=sys.argv[1]))
with hold_study(location, study, command="the first driver", timing=LeaseTiming(ttl_s=2, heartbeat_s=0.5)):
    print("holding", flush=True)
    time.sleep(60)
"""


def _holder(url: str, home: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, url, str(home)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
    return proc


@pytest.mark.slow  # > 3 s: outside make test-quick
def test_a_killed_drivers_lock_goes_with_it_and_a_frozen_ones_after_the_ttl(postgres_url, tmp_path):
    timing = LeaseTiming(ttl_s=2, heartbeat_s=0.5)
    killed = _holder(postgres_url, tmp_path)
    with pytest.raises(StudyLocked, match=f"pid {killed.pid} on "):
        PostgresLease(postgres_url, "demo", Holder(), timing).acquire()
    killed.kill()
    killed.communicate(timeout=30)
    second = PostgresLease(postgres_url, "demo", Holder(), timing)
    deadline = time.time() + 5  # the server sees the closed socket at once
    while True:
        try:
            second.acquire()
            break
        except StudyLocked:
            assert time.time() < deadline, "a SIGKILLed driver's advisory lock was not released"
            time.sleep(0.1)
    second.release()

    frozen = _holder(postgres_url, tmp_path)
    try:
        frozen.send_signal(signal.SIGSTOP)  # alive, connected, silent: a hung driver or a host cut off
        started = time.time()
        third = PostgresLease(postgres_url, "demo", Holder(command="the third driver"), timing)
        with pytest.raises(StudyLocked, match=f"pid {frozen.pid} on "):
            third.acquire()
        third.acquire(wait=True)  # a resume waits while the server ends the silent session
        assert timing.ttl_s - 0.5 <= time.time() - started < timing.ttl_s + 10  # not before its ttl
    finally:
        frozen.send_signal(signal.SIGCONT)
    _, err = frozen.communicate(timeout=30)  # woken, it finds the study held by the third driver and stops
    assert "this driver stops" in err and f"pid {os.getpid()} on " in err, err  # the line names who has it now
    assert frozen.returncode != 0
    third.release()
    live = _holder(postgres_url, tmp_path)  # beats every 0.5 s: a resume that sees a beat is refused at once
    started = time.time()
    with pytest.raises(StudyLocked, match=f"pid {live.pid} on "):
        third.acquire(wait=True)
    assert time.time() - started < timing.ttl_s
    live.kill()
    live.communicate(timeout=30)


def test_study_run_of_a_study_already_in_the_database_is_refused(postgres_url, tmp_path):
    import optuna

    optuna.create_study(study_name="exists", storage=postgres_url)
    location = SimpleNamespace(shared_fs=True, home=tmp_path / "exists")
    study = SimpleNamespace(name="exists", search=SimpleNamespace(storage=postgres_url))
    with pytest.raises(FileExistsError, match="already holds an Optuna study named 'exists'"):
        with hold_study(location, study, new=True):
            pass
    with hold_study(location, study):  # its resume
        pass
    fresh = SimpleNamespace(name="fresh", search=SimpleNamespace(storage=postgres_url))
    with hold_study(location, fresh, new=True) as leases:
        assert len(leases) == 1


def test_an_unreachable_database_is_refused_in_one_line(tmp_path):
    from moto_server import free_port
    from study.config.resources import PreflightError

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    study = SimpleNamespace(name="demo", search=SimpleNamespace(storage=url))
    with pytest.raises(PreflightError) as refused:
        with hold_study(SimpleNamespace(shared_fs=True, home=tmp_path), study):
            pass
    message = str(refused.value)
    assert "\n" not in message and "OperationalError" in message and "127.0.0.1" in message, message
