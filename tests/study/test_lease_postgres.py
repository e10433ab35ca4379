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
    with pytest.raises(FileExistsError) as refused:
        with hold_study(location, study, new=True):
            pass
    assert str(refused.value) == (f"{postgres_url} already holds an Optuna study named 'exists'; continue it with "
                                  "`dastudy study resume`, choose another --name, or delete it there (optuna "
                                  "delete-study --study-name exists --storage ...)")
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


# --- the lease's own words and settings, checked exactly (found by the mutation run over lease.py) -----------


def test_a_sqlalchemy_url_reaches_libpq_without_its_driver_and_without_its_password():
    lease = PostgresLease("postgresql+psycopg://optuna:s3cret@db.example:5433/studies?sslrootcert=file://ca.pem",
                          "demo", Holder(), LeaseTiming())
    assert lease.url == "postgresql://optuna:s3cret@db.example:5433/studies?sslrootcert=file://ca.pem"
    assert lease.where == "postgresql://optuna@db.example:5433/studies?sslrootcert=file://ca.pem (Optuna study 'demo')"


@pytest.mark.parametrize("ttl_s, heartbeat_s, ttl_ms, keepalive_s", [(2.5, 0.5, 2500, 1), (7, 3, 7000, 3)])
def test_the_lease_session_ends_after_the_ttl_and_probes_its_peer_every_heartbeat(postgres_url, ttl_s, heartbeat_s,
                                                                                   ttl_ms, keepalive_s):
    lease = PostgresLease(postgres_url, "demo", Holder(pid=4242, host="node-7"), LeaseTiming(ttl_s, heartbeat_s))
    conn = lease._connect()
    try:
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "idle_session_timeout", "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
            "application_name")}
        assert shown == {"idle_session_timeout": f"{ttl_ms}ms" if ttl_ms % 1000 else f"{ttl_ms // 1000}s",
                         "tcp_keepalives_idle": f"{keepalive_s}", "tcp_keepalives_interval": f"{keepalive_s}",
                         "tcp_keepalives_count": "3", "application_name": "dastudy 4242@node-7"}
        assert conn.autocommit and conn.info.get_parameters().get("connect_timeout") == "10"
    finally:
        conn.close()


def _holding(url: str, key: int, *, application_name: str, host: str | None = None):
    import psycopg

    conn = psycopg.connect(url, autocommit=True, application_name=application_name, **({"host": host} if host else {}))
    assert conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
    backend_start = conn.execute("SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                                 ).fetchone()[0]
    return conn, f"since {backend_start:%Y-%m-%dT%H:%M:%S%z}"


def test_the_holder_is_named_from_the_server_word_for_word(postgres_url):
    import psycopg

    lease = PostgresLease(postgres_url, "named", Holder(), LeaseTiming())
    with psycopg.connect(postgres_url, autocommit=True) as asker:
        assert lease.holder_line(asker) == ("a driver that just let go", None, None)
        holder, since = _holding(postgres_url, lease.key, application_name="dastudy 4242@node@7")
        try:
            time.sleep(0.3)
            who, age, beat_at = lease.holder_line(asker)
            assert who == f"pid 4242 on node@7 (server backend {holder.info.backend_pid}, from 127.0.0.1/32), {since}"
            assert 0.25 <= age < 30 and isinstance(age, float)
            assert beat_at == asker.execute("SELECT query_start FROM pg_stat_activity WHERE pid = %s",
                                            (holder.info.backend_pid,)).fetchone()[0]
        finally:
            holder.close()
        socket_dir = asker.execute("SHOW unix_socket_directories").fetchone()[0].split(",")[0].strip()
        # another study: the closed session above may not have ended on the server yet, its lock with it
        lease = PostgresLease(postgres_url, "named over a socket", Holder(), LeaseTiming())
        holder, since = _holding(postgres_url, lease.key, application_name="psql@laptop", host=socket_dir)
        try:
            who, _, _ = lease.holder_line(asker)
            assert who == f"'psql@laptop' (server backend {holder.info.backend_pid}, from a local socket), {since}"
        finally:
            holder.close()


def test_a_refusal_and_a_resume_watching_a_live_holder_say_what_they_do(postgres_url, capsys):
    import re

    timing = LeaseTiming(ttl_s=2, heartbeat_s=0.5)
    lease = PostgresLease(postgres_url, "watched", Holder(), timing)
    holder, since = _holding(postgres_url, lease.key, application_name="dastudy 4242@node-7")
    stop = threading.Event()

    def beat():  # a live driver's heartbeat, as PostgresLease.renew does it
        while not stop.wait(0.3):
            holder.execute("SELECT 1")

    who = rf"pid 4242 on node-7 \(server backend {holder.info.backend_pid}, from 127\.0\.0\.1/32\), {re.escape(since)}"
    refusal = (rf"{re.escape(lease.where)}: study is being driven by {who}, heartbeat \d+ s ago; if it died, "
               r"PostgreSQL releases its lock when its connection ends \(at once when the process is gone, within "
               r"the ttl when its host is\): run the command again then \(lease ttl 2 s\)")
    thread = threading.Thread(target=beat, daemon=True)
    try:
        with pytest.raises(StudyLocked) as refused:
            lease.acquire()
        assert re.fullmatch(refusal, str(refused.value)), str(refused.value)
        assert capsys.readouterr().err == ""
        thread.start()
        started = time.monotonic()
        with pytest.raises(StudyLocked) as refused:
            lease.acquire(wait=True)
        assert time.monotonic() - started < timing.ttl_s + 3 and re.fullmatch(refusal, str(refused.value))
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and re.fullmatch(
            rf"{re.escape(lease.where)}: held by {who}; waiting up to 5 s: a live driver keeps beating \(then this "
            r"one stops\), a dead one's session ends", err[0]), err
    finally:
        stop.set()
        thread.join(timeout=10)
        holder.close()


class _Session:
    """A lease's connection whose end the server has not seen yet (``close`` does nothing), or, with ``broken``,
    one the server already dropped (every call fails)."""

    def __init__(self, conn, *, broken: bool = False):
        self.conn, self.broken = conn, broken

    def execute(self, *args):
        if self.broken:
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return self.conn.execute(*args)

    def close(self):
        if self.broken:
            raise OSError("already closed")


def test_release_unlocks_at_once_and_never_raises(postgres_url):
    first = PostgresLease(postgres_url, "released", Holder(command="first"), LeaseTiming())
    first.acquire()
    conn = first._conn
    first._conn = _Session(conn)  # still connected after release: only the unlock can free the study
    try:
        first.release()
        assert first._conn is None
        second = PostgresLease(postgres_url, "released", Holder(command="second"), LeaseTiming())
        second.acquire()  # no wait, no retry
        second._conn, kept = _Session(second._conn, broken=True), second._conn
        second.release()  # the server already dropped it: nothing to unlock, nothing raised
        assert second._conn is None
        kept.close()
    finally:
        conn.close()


def test_a_renewal_after_the_session_ended_takes_the_lock_again_unless_another_driver_has_it(postgres_url):
    import re

    import psycopg

    from study.state.lease import LeaseLost

    lease = PostgresLease(postgres_url, "renewed", Holder(command="first"), LeaseTiming())
    lease.acquire()
    session = lease._conn.info.backend_pid
    lease.renew()
    assert lease._conn.info.backend_pid == session  # a live session is kept: its lock never lets go
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        def end_session():  # what idle_session_timeout, a server restart or a dropped connection do
            admin.execute("SELECT pg_terminate_backend(%s)", (lease._conn.info.backend_pid,))
            time.sleep(0.5)

        end_session()
        lease.renew()  # nobody took it meanwhile: a new session, the lock again
        assert PostgresLease(postgres_url, "renewed", Holder(), LeaseTiming()).holder_line(admin)[0].startswith(
            f"pid {os.getpid()} on {platform.node()} (server backend {lease._conn.info.backend_pid}, ")
        end_session()
        other = PostgresLease(postgres_url, "renewed", Holder(pid=4243, host="node-8"), LeaseTiming())
        other.acquire()
        with pytest.raises(LeaseLost) as lost:
            lease.renew()
        assert re.fullmatch(
            rf"{re.escape(lease.where)}: this driver's session ended and pid 4243 on node-8 \(server backend "
            rf"{other._conn.info.backend_pid}, from 127\.0\.0\.1/32\), since \S+ holds the study now; this "
            r"driver stops", str(lost.value))
        other.release()


def test_a_lost_lease_stops_the_driver_with_a_sigint_to_its_main_thread(capsys):
    import signal

    from study.state.lease import _stop_driver

    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        _stop_driver("s3://b/p/driver.lease: lease taken over by pid 7 on other; this driver stops")
        time.sleep(0.1)  # the handler runs between two bytecodes of this thread
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]
    assert capsys.readouterr().err == ("error: s3://b/p/driver.lease: lease taken over by pid 7 on other; this driver "
                                       "stops\n")
