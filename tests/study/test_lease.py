"""The lease's heartbeat and timing (study/state/lease.py) without a server: a renewal that fails for a while is retried
and the lease kept; one that fails for a whole ttl loses it, once, with one line; the ttl comes from the
environment with its heartbeat."""
from __future__ import annotations

import time

import pytest

from study.state.lease import Heartbeat, Holder, LeaseLost, LeaseTiming, advisory_key


class FlakyLease:
    """Renewals number ``fail_at`` fail (the store unreachable); ``lost_after`` renewals in, another driver holds
    the lease."""

    def __init__(self, fail_at: range | set = frozenset(), lost_after: int | None = None):
        self.fail_at, self.lost_after, self.renewals = fail_at, lost_after, 0

    def renew(self) -> None:
        self.renewals += 1
        if self.lost_after is not None and self.renewals > self.lost_after:
            raise LeaseLost("s3://b/p/driver.lease: lease taken over by pid 7 on other; this driver stops")
        if self.renewals in self.fail_at:
            raise OSError("connection refused")


def _run(lease, timing: LeaseTiming, seconds: float) -> tuple[list[str], Heartbeat]:
    lost: list[str] = []
    with Heartbeat([lease], timing, on_lost=lost.append) as beat:
        time.sleep(seconds)
    return lost, beat


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_renewals_that_fail_for_less_than_the_ttl_keep_the_lease(capsys):
    timing = LeaseTiming(ttl_s=1.0, heartbeat_s=0.2)
    lease = FlakyLease(fail_at={1, 2, 8, 9})  # twice about 0.4 s without a renewal, the second after one ttl
    lost, beat = _run(lease, timing, 2.6)
    assert not lost and beat.beats >= 6 and lease.renewals >= 10
    assert capsys.readouterr().err.count("lease renewal failed (OSError: connection refused); retrying") == 4


def test_renewals_that_fail_for_a_whole_ttl_lose_the_lease_once():
    timing = LeaseTiming(ttl_s=0.6, heartbeat_s=0.2)
    lease = FlakyLease(fail_at=range(1, 1000))
    lost, _ = _run(lease, timing, 1.5)
    assert lost == ["lease not renewed for 0.6 s (last error OSError: connection refused); another driver may take "
                    "the study over; this driver stops"], lost
    assert lease.renewals <= 5  # the thread ended with the loss: no renewals after it


def test_a_lease_taken_by_another_driver_is_lost_at_once():
    lease = FlakyLease(lost_after=2)
    started = time.monotonic()
    lost, _ = _run(lease, LeaseTiming(ttl_s=10, heartbeat_s=0.2), 1.0)
    assert lost == ["s3://b/p/driver.lease: lease taken over by pid 7 on other; this driver stops"]
    assert lease.renewals == 3 and time.monotonic() - started < 5


def test_the_ttl_comes_from_the_environment_with_its_heartbeat(monkeypatch):
    monkeypatch.setenv("DASTUDY_LEASE_TTL_S", "20")
    assert LeaseTiming.from_env() == LeaseTiming(ttl_s=20, heartbeat_s=5)
    monkeypatch.setenv("DASTUDY_LEASE_TTL_S", "soon")
    with pytest.raises(ValueError, match="DASTUDY_LEASE_TTL_S='soon'"):
        LeaseTiming.from_env()
    with pytest.raises(ValueError, match="heartbeat_s <= ttl_s / 2"):
        LeaseTiming(ttl_s=10, heartbeat_s=6)  # fewer than two renewals per ttl: one slow request loses it
    with pytest.raises(ValueError) as refused:
        LeaseTiming(ttl_s=10, heartbeat_s=0)  # a heartbeat thread that never sleeps
    assert str(refused.value) == ("lease timing ttl_s=10, heartbeat_s=0: need ttl_s > 0 and 0 < heartbeat_s <= "
                                  "ttl_s / 2")
    monkeypatch.delenv("DASTUDY_LEASE_TTL_S")
    assert LeaseTiming.from_env() == LeaseTiming()


def test_the_advisory_key_is_the_studys_and_a_signed_64_bit_integer():
    assert advisory_key("demo") == advisory_key("demo") != advisory_key("demo2")
    assert all(-(2 ** 63) <= advisory_key(name) < 2 ** 63 for name in ("demo", "x" * 300, "λ"))


class _ClientError(Exception):
    """What botocore's ClientError carries: the parsed ``response``."""

    def __init__(self, response: dict | None):
        super().__init__("client error")
        self.response = response


def _response(code: str | None = None, status: int | None = None) -> dict:
    out: dict = {}
    if code is not None:
        out["Error"] = {"Code": code, "Message": "..."}
    if status is not None:
        out["ResponseMetadata"] = {"HTTPStatusCode": status}
    return out


# (error code, HTTP status) as S3, MinIO and Ceph RGW answer: is it a lost race (412/409), a store without
# conditional writes (501), or anything else?
ANSWERS = [
    (("PreconditionFailed", 412), "race"), (("412", None), "race"), (("ConditionalRequestConflict", 409), "race"),
    (("ConditionalRequestConflict", None), "race"),
    ((None, 412), "race"), ((None, 409), "race"), (("PreconditionFailed", None), "race"),
    (("NotImplemented", 501), "unsupported"), (("501", None), "unsupported"), ((None, 501), "unsupported"),
    (("NotImplemented", None), "unsupported"),
    (("AccessDenied", 403), "other"), (("NoSuchKey", 404), "other"), (("InternalError", 500), "other"),
    (("SlowDown", 503), "other"), ((None, None), "other"), (("notimplemented", 400), "other"),
    (("preconditionfailed", 400), "other"),
]


@pytest.mark.parametrize("answer, kind", ANSWERS)
def test_store_answers_are_told_apart_by_code_or_status(answer, kind):
    from study.state.lease import _not_implemented, _precondition_failed

    err = _ClientError(_response(*answer))
    assert (_precondition_failed(err), _not_implemented(err)) == (kind == "race", kind == "unsupported")


@pytest.mark.parametrize("response", [None, {}])
def test_an_error_without_a_response_is_neither_a_race_nor_unsupported(response):
    from study.state.lease import _not_implemented, _precondition_failed

    for err in (_ClientError(response), OSError("connection refused")):
        assert not _precondition_failed(err) and not _not_implemented(err)


@pytest.mark.parametrize("record, described", [
    ({}, "an unnamed driver"),
    ({"ttl_s": 60, "beat": 3}, "an unnamed driver"),
    ({"host": "node-1"}, "pid None on node-1, since ?"),
    ({"pid": 7}, "pid 7 on None, since ?"),
    ({"pid": 7, "host": "node-1", "command": ""}, "pid 7 on node-1, since ?"),
    ({"pid": 7, "host": "node-1", "command": "dastudy study run demo", "since": "2026-12-07T10:00:00Z"},
     "pid 7 on node-1 (`dastudy study run demo`), since 2026-12-07T10:00:00Z"),
])
def test_a_lease_record_is_described_word_for_word(record, described):
    """The holder named in every refusal, from the lease object's JSON (torn or foreign records included)."""
    from study.state.lease import _describe

    assert _describe(record) == described


# --- the object-store lease against a store in memory: what the URI names, a lease that keeps changing hands,
# a release that is not ours or fails (found by the mutation run over lease.py) ---------------------------------


class _Store:
    """An S3 client in memory where every create loses a race and the lease is always gone again when read:
    drivers that keep releasing and taking it between our requests."""

    def __init__(self):
        self.calls = 0

    def put_object(self, **request):
        self.calls += 1
        assert self.calls < 50, "acquire kept retrying a lease that keeps changing hands"
        raise _botocore_error("PreconditionFailed", 412)

    def get_object(self, **request):
        raise _botocore_error("NoSuchKey", 404)


def _botocore_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "..."}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize("uri, where, bucket, key", [
    ("s3://bucket/studies/demo", "s3://bucket/studies/demo/driver.lease", "bucket", "studies/demo/driver.lease"),
    ("s3://bucket/studies/demo/", "s3://bucket/studies/demo/driver.lease", "bucket", "studies/demo/driver.lease"),
    ("s3://bucket//deep//demo//", "s3://bucket//deep//demo/driver.lease", "bucket", "deep//demo/driver.lease"),
    ("s3://bucket", "s3://bucket/driver.lease", "bucket", "driver.lease"),
    ("s3://bucket/", "s3://bucket/driver.lease", "bucket", "driver.lease"),
    ("s3://bucket//", "s3://bucket/driver.lease", "bucket", "driver.lease"),
    ("s3://bucket/XX/", "s3://bucket/XX/driver.lease", "bucket", "XX/driver.lease"),
])
def test_the_lease_object_sits_in_the_studys_prefix(uri, where, bucket, key):
    from study.state.lease import ObjectStoreLease

    lease = ObjectStoreLease(uri, Holder(), LeaseTiming(), client=_Store())
    assert (lease.uri, lease.where, lease.bucket, lease.key) == (where, where, bucket, key)


def test_a_store_without_conditional_writes_in_dastudy_is_named():
    from study.state.lease import ObjectStoreLease

    with pytest.raises(ValueError) as refused:
        ObjectStoreLease("gs://bucket/demo", Holder(), LeaseTiming())
    assert str(refused.value) == ("gs://bucket/demo: a driver lease needs an S3-compatible store (s3://bucket/prefix); "
                                  "gs:// has no conditional writes here")


def test_a_lease_that_keeps_changing_hands_is_given_up_after_four_tries():
    from study.state.lease import ObjectStoreLease
    from study.state.lock import StudyLocked

    store = _Store()
    lease = ObjectStoreLease("s3://bucket/demo", Holder(), LeaseTiming(), client=store)
    with pytest.raises(StudyLocked) as refused:
        lease.acquire()
    assert str(refused.value) == ("s3://bucket/demo/driver.lease: the lease changed hands 4 times while this driver "
                                  "tried to take it; another driver is starting this study")
    assert store.calls == 4


def test_every_lease_is_renewed_at_every_beat_whatever_the_one_before_it_did():
    """A study on s3:// with its Optuna state in PostgreSQL holds two leases: a failed renewal of the first must
    not skip the second, nor a good one."""
    first, second = FlakyLease(fail_at={1, 2}), FlakyLease()
    timing = LeaseTiming(ttl_s=5, heartbeat_s=0.2)
    with Heartbeat([first, second], timing, on_lost=lambda message: pytest.fail(message)) as beat:
        assert beat._thread.name == "dastudy-lease-heartbeat" and beat._thread.daemon  # never holds the driver up
        time.sleep(1.1)
    assert first.renewals >= 4 and second.renewals == first.renewals
    assert beat.beats == first.renewals + second.renewals - 2  # the two failures are no beats


@pytest.mark.parametrize("err, missing", [
    (_ClientError(_response("NoSuchKey", 404)), True), (_ClientError(_response("404", 404)), True),
    (_ClientError(_response("404")), True), (_ClientError(_response("NoSuchBucket", 404)), False),
    (_ClientError(_response(None, 404)), False), (_ClientError(_response("PreconditionFailed", 412)), False),
    (_ClientError(None), False), (_ClientError({}), False), (OSError("connection refused"), False)])
def test_a_missing_lease_object_is_told_from_a_missing_bucket_and_from_errors_without_an_answer(err, missing):
    """S3 answers a conditional write on a deleted lease with 404 NoSuchKey: the lease is gone (lost), while a
    missing bucket or an unreachable store is not."""
    from study.state.lease import _no_such_key

    assert _no_such_key(err) is missing
