"""One writer per study on an object store (study/state/lease.py), against moto's S3 server (tests/study/moto_server.py):
drivers racing for a study's lease, each with its own client, get exactly one winner every round whatever the
start order; a second driver is refused with one line naming the holder; a dead driver's lease is taken over after
its ttl and not before; the heartbeat keeps a live one; a driver whose lease was taken is told; `study run` on a
study that already exists in the store is refused before anything is written."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from moto_server import moto_server
from study.state.lease import Heartbeat, Holder, LeaseTiming, ObjectStoreLease, hold_study, lease_lost
from study.state.lock import StudyLocked

pytestmark = pytest.mark.slow  # moto's S3 server per test, 3-8 s each: outside make test-quick

BUCKET = "dastudy-lease"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto"), BUCKET) as env:
        saved = {key: os.environ.get(key) for key in [*env, "AWS_ENDPOINT_URL_S3"]}
        os.environ.update(env)
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        try:
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def prefix(request, s3_env) -> str:
    return f"s3://{BUCKET}/{request.node.name}"


def _client():
    import boto3

    return boto3.session.Session().client("s3")  # one per driver: sessions are not shared across threads


def _lease(uri: str, command: str, timing: LeaseTiming = LeaseTiming()) -> ObjectStoreLease:
    return ObjectStoreLease(uri, Holder(command=command), timing, client=_client())


def _race(leases: list, order: list[int], jitter: list[float]) -> dict[int, str]:
    """Every lease's ``acquire`` at once (a barrier, then each one's jitter); ``{index: "won" | refusal}``."""
    barrier = threading.Barrier(len(leases))
    outcome: dict[int, str] = {}

    def driver(index: int) -> None:
        barrier.wait()
        time.sleep(jitter[index])
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


def test_drivers_racing_for_one_study_have_exactly_one_winner_every_round(prefix):
    rng = random.Random(20)
    for round_ in range(6):
        drivers = 2 + round_ % 3  # 2, 3 or 4 drivers
        leases = [_lease(f"{prefix}/demo", f"dastudy study run demo #{round_}.{i}") for i in range(drivers)]
        order = rng.sample(range(drivers), drivers)
        jitter = [0.0 if round_ % 2 else rng.uniform(0, 0.02) for _ in range(drivers)]  # all at once, or staggered
        outcome = _race(leases, order, jitter)
        winners = [i for i, result in outcome.items() if result == "won"]
        assert len(outcome) == drivers and len(winners) == 1, (round_, outcome)
        winner = leases[winners[0]]
        for i, refusal in outcome.items():
            if i != winners[0]:
                assert winner.holder.command in refusal and f"pid {os.getpid()}" in refusal, refusal
                assert "\n" not in refusal and "heartbeat" in refusal and "run the command again" in refusal
        winner.release()
        assert winner.read() is None  # released: the next round starts from nothing


def test_a_dead_drivers_lease_is_taken_over_after_its_ttl_and_not_before(prefix):
    timing = LeaseTiming(ttl_s=3, heartbeat_s=1)
    dead = _lease(f"{prefix}/demo", "the dead driver", timing)
    dead.acquire()  # and never renewed: its process is gone
    with pytest.raises(StudyLocked, match="the dead driver"):
        _lease(f"{prefix}/demo", "second", timing).acquire()
    time.sleep(timing.ttl_s + 2)  # the store's clock has one-second steps
    # Two drivers take it over at once: one wins, the other is refused naming it.
    takers = [_lease(f"{prefix}/demo", f"taker {i}", timing) for i in range(2)]
    outcome = _race(takers, [0, 1], [0.0, 0.0])
    assert sorted(outcome.values()).count("won") == 1, outcome
    winner = takers[[i for i, r in outcome.items() if r == "won"][0]]
    assert winner.read()[0]["token"] == winner.holder.token
    from study.state.lease import LeaseLost

    with pytest.raises(LeaseLost, match=winner.holder.command):
        dead.renew()  # had it been only paused, it learns at its next renewal that it lost the study
    dead.release()  # and does not delete the new holder's lease
    assert winner.read()[0]["token"] == winner.holder.token


def test_a_resume_waits_out_a_dead_drivers_lease_and_is_refused_by_a_live_one(prefix, tmp_path):
    """A requeued job or a restarted head resumes right after its driver died: it waits for the lease to expire
    instead of failing; against a driver that is alive it is refused as soon as it sees a renewal."""
    timing = LeaseTiming(ttl_s=3, heartbeat_s=0.5)
    _lease(f"{prefix}/demo", "the killed driver", timing).acquire()  # SIGKILLed: never renewed, never released
    location = SimpleNamespace(shared_fs=False, home=tmp_path, experiment_path=f"{prefix}/demo")
    study = SimpleNamespace(name="demo", search=SimpleNamespace(storage=None))
    lost: list[str] = []
    started = time.monotonic()
    with hold_study(location, study, command="the resume", timing=timing, on_lost=lost.append) as leases:
        waited = time.monotonic() - started
        assert timing.ttl_s - 1.5 <= waited <= timing.ttl_s + 5, waited  # the ttl, in the store's 1-s steps
        assert leases[0].read()[0]["command"] == "the resume"
        started = time.monotonic()
        with pytest.raises(StudyLocked, match="the resume"):
            with hold_study(location, study, command="a second resume", timing=timing):
                pass
        assert time.monotonic() - started < timing.ttl_s, "a live driver's renewal was not seen"
        assert leases[0].read()[0]["command"] == "the resume"  # the refused one left it alone
    assert not lost and leases[0].read() is None  # released at the end


def test_the_heartbeat_keeps_a_live_drivers_lease_past_its_ttl(prefix):
    timing = LeaseTiming(ttl_s=2, heartbeat_s=0.5)
    live = _lease(f"{prefix}/demo", "the live driver", timing)
    live.acquire()
    lost: list[str] = []
    with Heartbeat([live], timing, on_lost=lost.append) as beat:
        time.sleep(3 * timing.ttl_s)
        with pytest.raises(StudyLocked, match="the live driver") as refused:
            _lease(f"{prefix}/demo", "second", timing).acquire()
        assert beat.beats >= 6 and not lost
    age = float(str(refused.value).split("heartbeat ")[1].split(" s ago")[0])
    assert age <= timing.heartbeat_s + 1.5, refused.value  # renewed within a beat (and the store's 1-s clock)
    live.release()
    _lease(f"{prefix}/demo", "after", timing).acquire()  # released at the end: no wait for the ttl


def test_a_driver_whose_lease_was_taken_is_told_and_stops_uploading(prefix, tmp_path):
    timing = LeaseTiming(ttl_s=2, heartbeat_s=0.5)
    first = _lease(f"{prefix}/demo", "first", timing)
    first.acquire()
    lost: list[str] = []
    with Heartbeat([first], timing, on_lost=lost.append):
        # Another driver that judged the lease expired (e.g. this one was partitioned from the store) replaced it.
        first.client.put_object(Bucket=BUCKET, Key=first.key, Body=b'{"host": "other", "pid": 7, "token": "x"}')
        deadline = time.time() + 5
        while not lost and time.time() < deadline:
            time.sleep(0.1)
    assert lost and "taken over by pid 7 on other" in lost[0], lost
    assert lease_lost()
    from study.run.storage import StoreSync, bind_store

    (tmp_path / "study.toml").write_text("# this driver's copy\n")
    bind_store(tmp_path, f"{prefix}/demo")
    StoreSync().setup()  # the files are the other driver's now: nothing is uploaded over them
    listed = first.client.list_objects_v2(Bucket=BUCKET, Prefix=first.key.rpartition("/")[0])
    assert [o["Key"] for o in listed["Contents"]] == [first.key]


HOLD = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
from study.state.lease import hold_study
from study.state.lock import StudyLocked
location = SimpleNamespace(shared_fs=False, home=Path(sys.argv[2]), experiment_path=sys.argv[1])
study = SimpleNamespace(name="demo", search=SimpleNamespace(storage=None))
try:
    with hold_study(location, study, command="driver " + sys.argv[3], new=True):
        print("holding", flush=True)
        time.sleep(float(sys.argv[4]))
except StudyLocked as err:
    print("refused:", err, flush=True)
"""


def test_two_driver_processes_started_together_one_runs_the_other_is_refused(prefix, tmp_path):
    """Separate processes, as two pods: each its own interpreter, client and connections."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(2):
        order = [0, 1] if round_ % 2 == 0 else [1, 0]  # which one is started first
        procs = [subprocess.Popen([sys.executable, "-c", HOLD, f"{prefix}/demo", str(tmp_path), f"{round_}.{i}", "3"],
                                  stdout=subprocess.PIPE, text=True, env=env) for i in order]
        lines = [proc.communicate(timeout=60)[0].strip() for proc in procs]
        assert sorted(line.split()[0] for line in lines) == ["holding", "refused:"], lines
        refusal = next(line for line in lines if line.startswith("refused:"))
        holder = procs[[line.startswith("holding") for line in lines].index(True)]
        assert f"pid {holder.pid} " in refusal and len(refusal.splitlines()) == 1, refusal


def test_study_run_on_a_study_that_exists_in_the_store_is_refused_before_anything_is_written(prefix, tmp_path,
                                                                                           tiny_benchmark):
    from study.config.study_config import study_from_dict
    from study.run.tuner import run_study
    from study_helpers import study_table

    client = _client()
    key = f"{prefix.split('/', 3)[3]}/demo/study.toml"
    client.put_object(Bucket=BUCKET, Key=key, Body=b"# another head's study\n")
    study = study_from_dict(study_table(tiny_benchmark, name="demo"), source="test")
    os.environ["DASTUDY_HOME"] = str(tmp_path / "home")  # this head has no local copy
    try:
        with pytest.raises(FileExistsError, match="already holds a study .study.toml.; continue it with `dastudy "
                                                  "study resume s3://"):
            run_study(study, storage=prefix)
    finally:
        os.environ.pop("DASTUDY_HOME")
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=key.rpartition("/")[0])
    assert [o["Key"] for o in listed["Contents"]] == [key]  # nothing written; the lease went with the refusal
    assert not (tmp_path / "home").exists()
    client.delete_object(Bucket=BUCKET, Key=key)
    client.put_object(Bucket=BUCKET, Key=key.replace("study.toml", "tuner.pkl"), Body=b"ray")
    location = SimpleNamespace(shared_fs=False, home=tmp_path, experiment_path=f"{prefix}/demo")
    with pytest.raises(FileExistsError, match=r"\(tuner.pkl\)"):
        with hold_study(location, study, new=True):
            pass
    with hold_study(location, study):  # a resume holds it
        pass


def test_dastudy_study_run_on_a_study_in_the_store_exits_with_one_line(prefix, tmp_path, tiny_benchmark, capsys,
                                                                      monkeypatch):
    from study.cli import main
    from study_helpers import study_table, write_study_file

    key = f"{prefix.split('/', 3)[3]}/clidemo/tuner.pkl"
    _client().put_object(Bucket=BUCKET, Key=key, Body=b"another head's Ray state")
    monkeypatch.setenv("DASTUDY_HOME", str(tmp_path / "home"))
    study_file = write_study_file(tmp_path / "clidemo.toml", study_table(tiny_benchmark, name="clidemo"))
    code = main(["study", "run", str(study_file), "--storage", prefix])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, (code, err)
    assert f"{prefix}/clidemo already holds a study (tuner.pkl)" in err and "dastudy study resume" in err, err


def test_a_store_without_conditional_writes_is_refused_in_one_line_saying_so(monkeypatch, tmp_path):
    from botocore.exceptions import ClientError

    from study.config.resources import PreflightError

    class OldStore:  # e.g. an S3-compatible server from before conditional writes: 501 on If-None-Match
        def put_object(self, **request):
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "If-None-Match"},
                               "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")

    monkeypatch.setattr(ObjectStoreLease, "client", property(lambda self: OldStore()))
    location = SimpleNamespace(shared_fs=False, home=tmp_path, experiment_path=f"s3://{BUCKET}/old/demo")
    with pytest.raises(PreflightError) as refused:
        with hold_study(location, SimpleNamespace(name="demo", search=SimpleNamespace(storage=None))):
            pass
    message = str(refused.value)
    assert "\n" not in message and f"s3://{BUCKET}/old/demo/driver.lease" in message, message
    assert "does not support conditional writes" in message


RUN = """
import sys
from study.state.lock import StudyLocked
from study.config.study_config import load_study_config
from study.run.tuner import run_study
from trainables.tune import checkpoint_probe
try:
    run_study(load_study_config(sys.argv[1]), storage=sys.argv[2], num_cpus=2, trainable=checkpoint_probe)
except (StudyLocked, FileExistsError) as err:  # what `dastudy study run` prints in one line, exit code 2
    print("refused:", err, flush=True)
    sys.exit(2)
"""


@pytest.mark.slow
def test_two_study_runs_from_two_heads_write_one_study_into_the_bucket(prefix, tmp_path, tiny_benchmark):
    """Issue 20's reproduction: the same `study run NAME --storage s3://...` from two pods (two local homes) at
    once, then a third while the first runs. Before the lease the second trained its own baseline and wrote a
    second experiment state, tuner.pkl and study.toml beside the first's. About 60-150 s (one Ray study)."""
    from study_helpers import TEST_RAY_ENV, study_table, write_study_file

    table = study_table(tiny_benchmark, name="raced", num_samples=2, max_concurrent_trials=2,
                        scheduler={"kind": "fifo"})
    table["train"]["optim"].update(iter_max=8, iter_stop=8)
    study_file = write_study_file(tmp_path / "raced.toml", table)

    def start(head: str) -> subprocess.Popen:
        env = {**os.environ, **TEST_RAY_ENV, "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(tmp_path),
               "DASTUDY_HOME": str(tmp_path / head), "DASTUDY_PROBE_CKPT_BYTES": "4096",
               "DASTUDY_PROBE_SLEEP_S": "1.0"}
        return subprocess.Popen([sys.executable, "-c", RUN, str(study_file), prefix], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first, second = start("pod1"), start("pod2")
    out_second = second.communicate(timeout=300)[0]  # refused before it starts Ray, while the other runs
    winner, out_winner = (first, None) if second.returncode == 2 else (second, out_second)
    loser_out = out_second if second.returncode == 2 else first.communicate(timeout=300)[0]
    refusal = [line for line in loser_out.splitlines() if line.startswith("refused:")]
    assert len(refusal) == 1 and f"pid {winner.pid} on " in refusal[0] and "raced.toml" in refusal[0], loser_out
    if winner.poll() is None:  # a third head while the study runs: refused as well
        third = start("pod3")
        out_third = third.communicate(timeout=300)[0]
        assert third.returncode == 2 and f"pid {winner.pid} on " in out_third, out_third
    out_winner = out_winner if out_winner is not None else winner.communicate(timeout=600)[0]
    assert winner.returncode == 0, out_winner

    client = _client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{prefix.split('/', 3)[3]}/raced/") for o in page.get("Contents", [])]
    names = [key.rsplit("/", 1)[1] for key in keys if key.count("/") == 2]  # the study's top level
    assert len([n for n in names if n.startswith("experiment_state")]) == 1, names
    assert names.count("tuner.pkl") == 1 and "driver.lease" not in names, names  # released at the end
    homes = {head: (tmp_path / head / "raced").exists() for head in ("pod1", "pod2", "pod3")}
    assert homes == {"pod1": winner is first, "pod2": winner is second, "pod3": False}, homes  # refused: no files


# --- answers lost on the way back, a deleted lease, the takeover line, what refuses a new study (found by the
# mutation run over lease.py) ----------------------------------------------------------------------------------


class _LostAnswer:
    """A client whose next ``put_object`` is applied by the store but answered 412, as a request retried after
    its answer was lost sees its own write."""

    def __init__(self, client):
        self._client, self.lose_next = client, False

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_object(self, **request):
        from botocore.exceptions import ClientError

        response = self._client.put_object(**request)
        if self.lose_next:
            self.lose_next = False
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the "
                               "pre-conditions you specified did not hold"},
                               "ResponseMetadata": {"HTTPStatusCode": 412}}, "PutObject")
        return response


def test_a_takeover_or_renewal_whose_answer_was_lost_keeps_the_lease(prefix, capsys):
    timing = LeaseTiming(ttl_s=2, heartbeat_s=0.5)
    dead = _lease(f"{prefix}/demo", "the dead driver", timing)
    dead.acquire()
    dead_since = dead.holder.since
    time.sleep(timing.ttl_s + 2)  # the store's clock has one-second steps
    client = _LostAnswer(_client())
    taker = ObjectStoreLease(f"{prefix}/demo", Holder(command="taker"), timing, client=client)
    client.lose_next = True
    taker.acquire()  # the takeover's compare-and-swap was applied; its answer said 412
    record, etag, _ = taker.read()
    assert record["token"] == taker.holder.token and taker._etag == etag
    beat = record["beat"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.fullmatch(
        rf"{re.escape(prefix)}/demo/driver\.lease: took over the lease of pid {os.getpid()} on "
        rf"{re.escape(dead.holder.host)} \(`the dead driver`\), since {re.escape(dead_since)}, not renewed for "
        r"[3-9] s", err[0]), err
    client.lose_next = True
    taker.renew()  # applied, answered 412: still ours
    record, etag, _ = taker.read()
    assert record["token"] == taker.holder.token and record["beat"] == beat + 1 and taker._etag == etag
    taker.renew()  # with the ETag it read back
    assert taker.read()[0]["beat"] == beat + 2
    taker.release()
    assert taker.read() is None


def test_a_renewal_of_a_deleted_lease_says_nobody_holds_it(prefix):
    from study.state.lease import LeaseLost

    lease = _lease(f"{prefix}/demo", "first")
    lease.acquire()
    _client().delete_object(Bucket=BUCKET, Key=lease.key)  # by hand, or by a driver that took it and finished
    with pytest.raises(LeaseLost) as lost:
        lease.renew()
    assert str(lost.value) == f"{prefix}/demo/driver.lease: lease taken over by nobody (deleted); this driver stops"


@pytest.mark.parametrize("found", ["study.toml", "tuner.pkl", None])
def test_a_new_study_is_refused_where_the_store_holds_one(prefix, tmp_path, found):
    from study.state.lease import refuse_existing_study

    client = _client()
    root = prefix.split("/", 3)[3]
    client.put_object(Bucket=BUCKET, Key=f"{root}/demo/trial_0/result.json", Body=b"{}")  # neither of the two
    if found:
        client.put_object(Bucket=BUCKET, Key=f"{root}/demo/{found}", Body=b"another head's")
    location = SimpleNamespace(shared_fs=False, home=tmp_path, experiment_path=f"{prefix}/demo")
    study = SimpleNamespace(name="demo", search=SimpleNamespace(storage=None))
    if found is None:
        refuse_existing_study(location, study)
        return
    with pytest.raises(FileExistsError) as refused:
        refuse_existing_study(location, study)
    assert str(refused.value) == (f"{prefix}/demo already holds a study ({found}); continue it with `dastudy study "
                                  f"resume {prefix}/demo` or choose another --name")


@pytest.mark.parametrize("storage, expected", [
    (None, None), ("sqlite:///study.db", None), ("/shared/optuna.journal", None), ("mysql+pymysql://u@h/db", None),
    ("postgresql://u@db:5432/optuna", "postgresql://u@db:5432/optuna"),
    *[(url, url) for url in ["postgresql+psycopg://u@db/optuna?sslrootcert=file://ca.pem",
                             "postgresql://u@db/optuna?sslrootcert=file://ca.pem"]],
    ("sqlite:///x.db?note=postgresql://", None)])
def test_only_a_postgresql_storage_gets_the_advisory_lock(storage, expected):
    from study.state.lease import _postgres_url

    assert _postgres_url(SimpleNamespace(name="demo", search=SimpleNamespace(storage=storage))) == expected
    assert _postgres_url(SimpleNamespace(name="demo", search=SimpleNamespace())) is None  # no storage key at all
    assert _postgres_url(SimpleNamespace(name="demo")) is None


def test_a_create_whose_answer_was_lost_is_ours_and_another_drivers_is_not(prefix):
    client = _LostAnswer(_client())
    first = ObjectStoreLease(f"{prefix}/demo", Holder(command="first"), LeaseTiming(), client=client)
    client.lose_next = True
    first.acquire()  # created; the answer said 412 as if another driver had been first
    record, etag, _ = first.read()
    assert record["token"] == first.holder.token and first._etag == etag
    second = _lease(f"{prefix}/demo", "second")
    second._beat = record["beat"] - 1  # the same renewal count: only the token tells the two apart
    with pytest.raises(StudyLocked, match="`first`"):
        second.acquire()
    first.renew()
    first.release()


def test_the_lease_object_is_a_json_record_of_its_holder_and_timing(prefix):
    holder = Holder(command="dastudy study run demo")
    lease = ObjectStoreLease(f"{prefix}/demo", holder, LeaseTiming(ttl_s=30, heartbeat_s=5), client=_client())
    lease.acquire()
    head = _client().head_object(Bucket=BUCKET, Key=lease.key)
    assert head["ContentType"] == "application/json"
    ages = [lease.read()[2] for _ in range(3)]  # by the store's one-second clock (moto: 1 s just after a write)
    assert all(age in (0.0, 1.0) for age in ages), ages
    record = lease.read()[0]
    assert record == {"host": holder.host, "pid": holder.pid, "command": "dastudy study run demo",
                      "since": holder.since, "token": holder.token, "ttl_s": 30, "heartbeat_s": 5, "beat": 1}
    lease.renew()
    lease.renew()
    assert lease.read()[0]["beat"] == 3  # one more at each write: every renewal has a new ETag
    with pytest.raises(StudyLocked, match=r"expires \d+ s from now: .* \(lease ttl 30 s\)$"):  # the holder's ttl
        _lease(f"{prefix}/demo", "second", LeaseTiming(ttl_s=600, heartbeat_s=60)).acquire()
    lease.release()


def test_a_torn_lease_object_is_an_unnamed_driver_and_its_own_ttl_counts(prefix):
    client = _client()
    key = f"{prefix.split('/', 3)[3]}/demo/driver.lease"
    client.put_object(Bucket=BUCKET, Key=key, Body=b'{"host": "node-1", "pid"')  # torn by hand
    time.sleep(1.5)  # an age of 1 s or more: the time left is the ttl minus it
    lease = _lease(f"{prefix}/demo", "second", LeaseTiming(ttl_s=600, heartbeat_s=60))
    with pytest.raises(StudyLocked) as refused:
        lease.acquire()
    found = re.fullmatch(
        rf"{re.escape(prefix)}/demo/driver\.lease: study is being driven by an unnamed driver, heartbeat ([123]) s ago; "
        r"if it died, its lease expires (\d+) s from now: run the command again then and it takes the study "
        r"over \(lease ttl 600 s\)", str(refused.value))
    assert found and int(found[2]) == 600 - int(found[1]), str(refused.value)
    # a lease written with a 2 s ttl is dead after 2 s, whatever ttl the next driver runs with
    _lease(f"{prefix}/short", "first", LeaseTiming(ttl_s=2, heartbeat_s=1)).acquire()
    time.sleep(4)
    taker = _lease(f"{prefix}/short", "taker", LeaseTiming(ttl_s=600, heartbeat_s=60))
    taker.acquire()
    assert taker.read()[0]["command"] == "taker"


def test_a_resume_says_how_long_it_waits_for_a_lease_it_watches(prefix, capsys):
    timing = LeaseTiming(ttl_s=4, heartbeat_s=1)
    live = _lease(f"{prefix}/demo", "the live driver", timing)
    live.acquire()
    with Heartbeat([live], timing, on_lost=lambda message: None):
        resume = _lease(f"{prefix}/demo", "resume", timing)
        with pytest.raises(StudyLocked, match="`the live driver`"):
            resume.acquire(wait=True)  # refused at the first renewal it sees
    live.release()
    err = capsys.readouterr().err.splitlines()
    found = re.fullmatch(
        rf"{re.escape(prefix)}/demo/driver\.lease: held by pid {os.getpid()} on {re.escape(live.holder.host)} "
        rf"\(`the live driver`\), since {re.escape(live.holder.since)}, heartbeat ([01]) s ago; waiting up to (\d+) s: "
        r"a live driver renews it \(then this one stops\), a dead one's expires", err[0]) if len(err) == 1 else None
    assert found and int(found[2]) == timing.ttl_s - int(found[1]) + 3, err  # the rest of its ttl, + 3 s


def test_a_release_that_cannot_delete_warns_and_a_lease_not_ours_is_left_alone(prefix, capsys):
    from botocore.exceptions import ClientError

    class NoDelete(_LostAnswer):
        def delete_object(self, **request):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "DeleteObject")

    lease = ObjectStoreLease(f"{prefix}/demo", Holder(command="first"), LeaseTiming(), client=NoDelete(_client()))
    lease.acquire()
    lease.release()
    assert capsys.readouterr().err == (
        f"warning: {prefix}/demo/driver.lease: lease not removed (An error occurred (AccessDenied) when calling the "
        "DeleteObject operation: Access Denied); it expires by itself\n")
    assert lease._etag is None and lease.read()[0]["command"] == "first"
    lease.release()  # released already: nothing read, nothing deleted, nothing said
    assert capsys.readouterr().err == ""
    taker = _lease(f"{prefix}/demo", "taker")  # the lease, taken over by another driver since
    _client().delete_object(Bucket=BUCKET, Key=lease.key)
    taker.acquire()
    lease._etag = "ours once"
    lease.release()  # not ours any more: left alone
    assert taker.read()[0]["command"] == "taker"
    taker.release()
