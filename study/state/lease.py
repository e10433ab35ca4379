"""One writer per study wherever its state lives: a lease held in the study's own storage, with expiry and a
heartbeat, so that a second driver (a RayJob submitter retrying after a head-pod restart, a second `study run`
from another pod) is refused instead of overwriting the study (issue 20).

Where the state lives decides what is locked, and ``hold_study`` takes every lock that applies:

- **Object store** (``--storage s3://...``): the object ``<study uri>/driver.lease``, a small JSON record (holder,
  ttl, a renewal counter). It is created with a conditional write (``If-None-Match: *``): of two drivers creating
  it at once the store accepts exactly one. It is renewed every ``heartbeat_s`` by a compare-and-swap (``If-Match``
  with the ETag of our last write; the counter changes the body, so every write has a new ETag) and deleted on
  release. Its age is measured with the store's clock only (the ``Date`` of a response minus the object's
  ``Last-Modified``), so the drivers' clocks never matter. A lease not renewed for ``ttl_s`` belongs to a dead
  driver: the next driver replaces it by a compare-and-swap against the ETag it read (two takers: one wins).
  S3 has both conditions on PutObject since 2024 (tests/study/test_lease_s3.py races drivers against moto 5.2's
  server). Other object stores (``gs://``) get no lease here, and a warning.
- **PostgreSQL** (``search.storage = "postgresql://..."``): a session advisory lock (``pg_try_advisory_lock``)
  keyed on the study name, on a connection the driver keeps open. The server releases it when that connection
  ends (the driver exits or is killed); ``idle_session_timeout`` (PostgreSQL >= 14) and TCP keepalives end the
  session of a frozen driver or a vanished host after ``ttl_s``; a ``SELECT 1`` every ``heartbeat_s`` keeps a
  live one. The holder is named from ``pg_locks`` and ``pg_stat_activity`` (application name = host and pid).
- **A filesystem** (the study directory, NFS, Lustre): the ``flock`` of study/state/lock.py, and its check that the
  lock is cluster-wide on the study's mount (``study.state.lock.node_local_lock``): Lustre with ``localflock`` and NFS
  with ``nolock``/``local_lock`` give locks that other nodes never see, and are refused before the driver starts.

A second `study run` is refused at once, naming the holder. A resume (a requeued job, a restarted head, right after
its driver died) waits: a lease nobody renews while it watches is taken over when it expires, at most ``ttl_s``
(``DASTUDY_LEASE_TTL_S``, default 60 s) after the dead driver's last heartbeat; a lease renewed meanwhile is a live
driver's, and the resume is refused. A lease this driver loses (not renewed for ``ttl_s``, or replaced by another driver) stops the study: the main
thread gets SIGINT, Ray Tune's graceful stop, and :func:`lease_lost` tells the store sync to upload nothing more.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator

from study.state.lock import StudyLocked, check_cluster_wide_lock

__all__ = ["LeaseTiming", "Holder", "ObjectStoreLease", "PostgresLease", "Heartbeat", "hold_study",
           "refuse_existing_study", "lease_lost", "LEASE_OBJECT", "LeaseLost", "advisory_key"]

LEASE_OBJECT = "driver.lease"
TTL_ENV = "DASTUDY_LEASE_TTL_S"


@dataclass(frozen=True)
class LeaseTiming:
    """``ttl_s``: a lease not renewed for this long is dead and can be taken over; ``heartbeat_s``: how often the
    holder renews it (a few renewals fit in one ttl, so one slow request does not lose the lease)."""

    ttl_s: float = 60.0
    heartbeat_s: float = 15.0

    def __post_init__(self):
        if not (self.ttl_s > 0 and 0 < self.heartbeat_s <= self.ttl_s / 2):
            raise ValueError(f"lease timing ttl_s={self.ttl_s}, heartbeat_s={self.heartbeat_s}: need ttl_s > 0 and "
                             "0 < heartbeat_s <= ttl_s / 2")

    @classmethod
    def from_env(cls) -> "LeaseTiming":
        raw = os.environ.get(TTL_ENV)
        if not raw:
            return cls()
        try:
            ttl = float(raw)
        except ValueError:
            raise ValueError(f"{TTL_ENV}={raw!r}: expected seconds (a number > 0)") from None
        return cls(ttl_s=ttl, heartbeat_s=ttl / 4)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease; ``token`` tells our own lease from another driver's (same host and pid in a test)."""

    host: str = field(default_factory=platform.node)
    pid: int = field(default_factory=os.getpid)
    command: str = ""
    since: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


def _busy(where: str, who: str, age: float | None, ttl: float, how: str) -> StudyLocked:
    beat = f", heartbeat {age:.0f} s ago" if age is not None else ""
    return StudyLocked(f"{where}: study is being driven by {who}{beat}; {how} (lease ttl {ttl:g} s)")


# ---------------------------------------------------------------------------------------------------------
# object store


class ObjectStoreLease:
    """The lease object ``<study uri>/driver.lease`` (module docstring). boto3 (with moto's server in the tests,
    or the store in ``AWS_ENDPOINT_URL``): pyarrow's filesystem, used for the study files, has no conditional
    writes."""

    def __init__(self, study_uri: str, holder: Holder, timing: LeaseTiming, *, client=None):
        scheme, _, rest = study_uri.partition("://")
        if scheme != "s3":
            raise ValueError(f"{study_uri}: a driver lease needs an S3-compatible store (s3://bucket/prefix); "
                             f"{scheme}:// has no conditional writes here")
        self.uri = self.where = f"{study_uri.rstrip('/')}/{LEASE_OBJECT}"
        self.bucket, _, prefix = rest.partition("/")
        self.key = f"{prefix.strip('/')}/{LEASE_OBJECT}" if prefix.strip("/") else LEASE_OBJECT
        self.holder, self.timing = holder, timing
        self._client = client
        self._etag: str | None = None
        self._beat = 0

    @property
    def client(self):
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise RuntimeError("the driver lease on s3:// needs boto3 (pyarrow has no conditional writes): "
                                   "pip install boto3 (checked with 1.44) on the driver's machine or image") from None
            # Short timeouts: a renewal that hangs must not outlive the lease; standard retries for 5xx/throttling.
            self._client = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=10,
                                                            retries={"mode": "standard", "max_attempts": 3}))
        return self._client

    def _body(self) -> bytes:
        record = {**self.holder.__dict__, "ttl_s": self.timing.ttl_s, "heartbeat_s": self.timing.heartbeat_s,
                  "beat": self._beat}
        return (json.dumps(record) + "\n").encode()

    def _put(self, **condition) -> str:
        self._beat += 1
        response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                          ContentType="application/json", **condition)
        return response["ETag"]

    def read(self) -> tuple[dict[str, Any], str, float] | None:
        """``(record, etag, age_s)`` of the lease object, its age by the store's clock; None if there is none."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as err:
            if _no_such_key(err):
                return None
            raise
        body = response["Body"].read()
        now = parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = max((now - response["LastModified"]).total_seconds(), 0.0)
        try:
            record = json.loads(body)
        except ValueError:
            record = {}  # not ours or torn by hand: treated as a holder we cannot name, expiring like any other
        return record, response["ETag"], age

    def _ours(self, found) -> bool:
        """A write the store applied although its answer was lost (a retried request then sees 412)."""
        return found is not None and found[0].get("token") == self.holder.token and found[0].get("beat") == self._beat

    def acquire(self, *, wait: bool = False) -> None:
        """Create the lease, or take over an expired one; :class:`StudyLocked` naming the holder otherwise.
        ``wait`` (a resume): a lease that nobody renews while we watch it (its driver died: a requeued job, a
        restarted head) is waited out, at most its remaining ttl, and taken over; one renewed meanwhile is a live
        driver's, and refused."""
        watched, deadline, races = None, 0.0, 0
        while True:
            try:
                self._etag = self._put(IfNoneMatch="*")
                return
            except Exception as err:
                if not _precondition_failed(err):
                    raise
            found = self.read()
            if found is not None and self._ours(found):
                self._etag = found[1]
                return
            if found is None or found[2] > float(found[0].get("ttl_s") or self.timing.ttl_s):
                if found is not None and self._take_over(*found):
                    return
                races += 1  # released, or taken by another driver, between our requests: look again
                if races > 3:
                    raise StudyLocked(f"{self.uri}: the lease changed hands {races} times while this driver tried "
                                      "to take it; another driver is starting this study")
                continue
            record, etag, age = found
            ttl = float(record.get("ttl_s") or self.timing.ttl_s)
            if not wait or (watched is not None and etag != watched) or (watched and time.monotonic() > deadline):
                raise _busy(self.uri, _describe(record), age, ttl,
                            f"if it died, its lease expires {max(ttl - age, 0):.0f} s from now: run the command "
                            "again then and it takes the study over")
            if watched is None:
                watched, deadline = etag, time.monotonic() + ttl - age + 3  # + the store's one-second clock steps
                print(f"{self.uri}: held by {_describe(record)}, heartbeat {age:.0f} s ago; waiting up to "
                      f"{ttl - age + 3:.0f} s: a live driver renews it (then this one stops), a dead one's expires",
                      file=sys.stderr)
            time.sleep(1.0)

    def _take_over(self, record: dict[str, Any], etag: str, age: float) -> bool:
        """Replace an expired lease unless somebody renewed or took it since we read it (compare-and-swap)."""
        try:
            self._etag = self._put(IfMatch=etag)
        except Exception as err:
            if not _precondition_failed(err):
                raise
            found = self.read()
            if not self._ours(found):
                return False
            self._etag = found[1]
        print(f"{self.uri}: took over the lease of {_describe(record)}, not renewed for {age:.0f} s",
              file=sys.stderr)
        return True

    def renew(self) -> None:
        """Compare-and-swap renewal; :class:`LeaseLost` when another driver holds the lease now."""
        try:
            self._etag = self._put(IfMatch=self._etag)
        except Exception as err:
            # S3 answers If-Match on a deleted object with 404, not 412: deleted is lost too, not "unreachable"
            if not (_precondition_failed(err) or _no_such_key(err)):
                raise
            found = self.read()
            if self._ours(found):
                self._etag = found[1]
                return
            raise LeaseLost(f"{self.uri}: lease taken over by {_describe(found[0]) if found else 'nobody (deleted)'}"
                            "; this driver stops") from None

    def release(self) -> None:
        if self._etag is None:
            return
        from botocore.exceptions import ClientError

        found = self.read()  # delete only our own lease (a takeover after we lost it is not ours to delete)
        if found is not None and found[0].get("token") == self.holder.token:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=found[1])
            except ClientError as err:
                print(f"warning: {self.uri}: lease not removed ({err}); it expires by itself", file=sys.stderr)
        self._etag = None


def _no_such_key(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("NoSuchKey", "404")  # not NoSuchBucket, also a 404


def _precondition_failed(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    return (response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict")
            or response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412))


_NO_CONDITIONS = ("this store does not support conditional writes (If-None-Match/If-Match on PutObject), which "
                  "keep a second driver out; upgrade it (S3, recent MinIO/Ceph RGW support them)")


def _not_implemented(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    return (response.get("Error", {}).get("Code") in ("NotImplemented", "501")
            or response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501)


def _describe(record: dict[str, Any]) -> str:
    if not record.get("host") and not record.get("pid"):
        return "an unnamed driver"
    command = f" (`{record['command']}`)" if record.get("command") else ""
    return f"pid {record.get('pid')} on {record.get('host')}{command}, since {record.get('since', '?')}"


class LeaseLost(RuntimeError):
    """Another driver holds the lease this driver held."""


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL


def advisory_key(study_name: str) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock``, the same for every driver of the study."""
    return int.from_bytes(hashlib.sha256(f"dastudy driver {study_name}".encode()).digest()[:8], "big", signed=True)


class PostgresLease:
    """A session advisory lock on the study's Optuna database (module docstring). ``url`` is what
    ``study.config.preflight.connect_url`` returns (no password; libpq reads ``PGPASSWORD``/``~/.pgpass``)."""

    def __init__(self, url: str, study_name: str, holder: Holder, timing: LeaseTiming):
        scheme, _, rest = url.partition("://")
        self.url = f"{scheme.split('+', 1)[0]}://{rest}"  # SQLAlchemy's postgresql+psycopg:// is libpq's postgresql://
        self.where = f"{redact(self.url)} (Optuna study {study_name!r})"
        self.key, self.holder, self.timing = advisory_key(study_name), holder, timing
        self._conn = None

    def _connect(self):
        import psycopg

        name = f"dastudy {self.holder.pid}@{self.holder.host}"[:63]  # NAMEDATALEN
        conn = psycopg.connect(self.url, autocommit=True, application_name=name, connect_timeout=10)
        ttl_ms, keepalive = int(self.timing.ttl_s * 1000), max(int(self.timing.heartbeat_s), 1)
        for setting, value in (("idle_session_timeout", ttl_ms), ("tcp_keepalives_idle", keepalive),
                               ("tcp_keepalives_interval", keepalive), ("tcp_keepalives_count", 3)):
            try:  # idle_session_timeout is PostgreSQL >= 14; keepalives are ignored on a unix socket
                conn.execute(f"SET {setting} = {int(value)}")
            except psycopg.Error:
                pass
        return conn

    def holder_line(self, conn) -> tuple[str, float | None, Any]:
        """The holder's line, its heartbeat age and the time of its last heartbeat (its ``query_start``)."""
        row = conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start, "
            "extract(epoch FROM now() - a.query_start), a.query_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s "
            "AND l.objsubid = 1", ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF)).fetchone()
        if row is None:
            return "a driver that just let go", None, None
        pid, app, addr, start, age, beat_at = row
        who = app[len("dastudy "):].replace("@", " on ", 1) if app.startswith("dastudy ") else repr(app)
        return (f"{'pid ' if app.startswith('dastudy ') else ''}{who} (server backend {pid}, from "
                f"{addr or 'a local socket'}), since {start:%Y-%m-%dT%H:%M:%S%z}"), float(age or 0.0), beat_at

    def _try(self) -> tuple[str, float | None, Any] | None:
        """Take the lock on a new session: None when taken, else :meth:`holder_line`."""
        conn = self._connect()
        try:
            for _ in range(3):
                if conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]:
                    self._conn = conn
                    return None
                found = self.holder_line(conn)
                if found[2] is not None:
                    break
                time.sleep(0.05)  # released between our two queries (a session still ending): try again
        except BaseException:
            conn.close()
            raise
        conn.close()
        return found

    def acquire(self, *, wait: bool = False) -> None:
        """Take the lock; :class:`StudyLocked` naming the holder otherwise. ``wait`` (a resume): a holder whose
        heartbeat stops while we watch (a frozen driver, a vanished host) is waited out, at most the ttl, while
        the server ends its session; one that beats meanwhile is alive, and refused."""
        found, deadline, first_beat = self._try(), time.monotonic() + self.timing.ttl_s + 3, None
        while found is not None:
            who, age, beat_at = found
            alive = first_beat is not None and beat_at is not None and beat_at != first_beat  # it beat meanwhile
            if not wait or alive or time.monotonic() > deadline:
                raise _busy(self.where, who, age, self.timing.ttl_s,
                            "if it died, PostgreSQL releases its lock when its connection ends (at once when the "
                            "process is gone, within the ttl when its host is): run the command again then")
            if first_beat is None:
                print(f"{self.where}: held by {who}; waiting up to {self.timing.ttl_s + 3:.0f} s: a live driver "
                      "keeps beating (then this one stops), a dead one's session ends", file=sys.stderr)
            first_beat = first_beat or beat_at
            time.sleep(1.0)
            found = self._try()

    def renew(self) -> None:
        import psycopg

        try:
            self._conn.execute("SELECT 1")  # query_start in pg_stat_activity is the heartbeat
            return
        except psycopg.Error:
            pass
        # The session ended (idle_session_timeout after a freeze, a server restart, a dropped connection): the
        # lock went with it. Take it again if nobody else has.
        with contextlib.suppress(psycopg.Error):
            self._conn.close()
        self._conn = None
        found = self._try()
        if found is not None:
            raise LeaseLost(f"{self.where}: this driver's session ended and {found[0]} holds the study now; "
                            "this driver stops")

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # at once, not when the server gets round to ending the session
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def redact(url: str) -> str:
    from study.config.preflight import redact_url

    return redact_url(url)


# ---------------------------------------------------------------------------------------------------------
# heartbeat

_LOST = threading.Event()  # set when a lease of this process was lost: nothing more may be written


def lease_lost() -> bool:
    return _LOST.is_set()


def _stop_driver(message: str) -> None:
    import signal

    print(f"error: {message}", file=sys.stderr)
    # A real SIGINT to the main thread (it interrupts a blocking wait there): Ray Tune's graceful stop, or
    # KeyboardInterrupt outside Tune.
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


class Heartbeat:
    """Renews leases every ``heartbeat_s`` in a daemon thread. A renewal that fails for a transient reason is
    retried at the next beat; a lease not renewed for ``ttl_s`` (by our clock, counted from before the last good
    request) or taken by another driver is lost: ``on_lost(message)`` once, then the thread ends."""

    def __init__(self, leases: list, timing: LeaseTiming, *, on_lost: Callable[[str], None] = _stop_driver):
        self.leases, self.timing, self.on_lost = leases, timing, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dastudy-lease-heartbeat", daemon=True)
        self.beats = 0

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timing.ttl_s)

    def _run(self) -> None:
        last_good = {id(lease): time.monotonic() for lease in self.leases}
        while not self._stop.wait(self.timing.heartbeat_s):
            for lease in self.leases:
                started = time.monotonic()
                try:
                    lease.renew()
                    last_good[id(lease)] = started
                    self.beats += 1
                    continue
                except LeaseLost as err:
                    message = str(err)
                except Exception as err:  # the store or server unreachable for now
                    if time.monotonic() - last_good[id(lease)] < self.timing.ttl_s:
                        print(f"warning: lease renewal failed ({type(err).__name__}: {err}); retrying",
                              file=sys.stderr)
                        continue
                    message = (f"lease not renewed for {self.timing.ttl_s:g} s (last error {type(err).__name__}: "
                               f"{err}); another driver may take the study over; this driver stops")
                _LOST.set()
                self.on_lost(message)
                return


# ---------------------------------------------------------------------------------------------------------
# what the driver calls


def _postgres_url(study) -> str | None:
    from study.config.preflight import connect_url

    url = connect_url(getattr(getattr(study, "search", None), "storage", None))
    return url if url and url.split("://", 1)[0].split("+", 1)[0] == "postgresql" else None


def refuse_existing_study(location, study) -> None:
    """`study run` starts a new study: refuse one that already exists where its state lives, whatever this
    head's local folder holds: ``study.toml`` or Ray's ``tuner.pkl`` under the store prefix, or an Optuna study
    of that name in PostgreSQL. Resume it instead."""
    import pyarrow.fs as pafs

    from trainables.objectstore import filesystem

    if not location.shared_fs:
        fs, root = filesystem(location.experiment_path)
        for name in ("study.toml", "tuner.pkl"):
            if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound:
                raise FileExistsError(f"{location.experiment_path} already holds a study ({name}); continue it with "
                                      f"`dastudy study resume {location.experiment_path}` or choose another --name")
    url = _postgres_url(study)
    if url is not None:
        import optuna

        if study.name in optuna.study.get_all_study_names(storage=url):
            raise FileExistsError(f"{redact(url)} already holds an Optuna study named {study.name!r}; continue it "
                                  f"with `dastudy study resume`, choose another --name, or delete it there "
                                  f"(optuna delete-study --study-name {study.name} --storage ...)")


@contextlib.contextmanager
def hold_study(location, study, *, command: str = "", new: bool = False, timing: LeaseTiming | None = None,
               on_lost: Callable[[str], None] = _stop_driver) -> Iterator[list]:
    """Hold the study against every other driver for the block, wherever its state lives (module docstring):
    the object-store lease (``location`` on ``s3://``), the PostgreSQL lock (``search.storage``), and for a
    study directory on a shared filesystem the check that its flock (taken by study/state/lock.py) is cluster-wide.
    ``new``: `study run`, which also refuses a study that already exists there (:func:`refuse_existing_study`).
    :class:`StudyLocked` naming the holder when another driver has it."""
    timing = timing or LeaseTiming.from_env()
    holder = Holder(command=command)
    if location.shared_fs:
        warning = check_cluster_wide_lock(location.home)
        if warning:
            print(warning, file=sys.stderr)
    leases: list = []
    if not location.shared_fs and location.experiment_path.startswith("s3://"):
        leases.append(ObjectStoreLease(location.experiment_path, holder, timing))
    elif not location.shared_fs:
        print(f"warning: {location.experiment_path}: no driver lease on this store (conditional writes are used on "
              "s3:// only); make sure a single driver runs this study", file=sys.stderr)
    url = _postgres_url(study)
    if url is not None:
        leases.append(PostgresLease(url, study.name, holder, timing))
    _LOST.clear()
    try:
        for lease in leases:
            try:
                lease.acquire(wait=not new)  # a resume (a requeued job, a restarted head) waits out a dead driver
            except (StudyLocked, ValueError):
                raise
            except Exception as err:  # credentials, endpoint, a store without conditional writes: one line
                from study.config.resources import PreflightError

                said = " ".join(str(err).split())  # libpq's messages span lines
                raise PreflightError(f"{lease.where}: the driver lease could not be taken ({type(err).__name__}: "
                                     f"{said}); {_NO_CONDITIONS if _not_implemented(err) else 'check the storage'}"
                                     ) from err
        if new:  # checked holding the lease: a driver that finished or died before us left its study behind
            refuse_existing_study(location, study)
        with Heartbeat(leases, timing, on_lost=on_lost) if leases else contextlib.nullcontext():
            yield leases
    finally:
        for lease in reversed(leases):
            with contextlib.suppress(Exception):
                lease.release()
