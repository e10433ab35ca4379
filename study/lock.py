"""One driver per study: an exclusive ``flock`` on ``<study>/driver.lock`` held while `study run`/`resume` drive it.

Two drivers resuming the same study trained the same trial directories and left Optuna with more trials than the
study has (issue 11). ``fcntl.flock`` locks belong to the open file description, so the kernel releases them when
the holder exits for any reason (SIGKILL included): a crashed driver never leaves the study locked. The file keeps
the holder's pid, host and start time only to name it in the refusal; it is not removed on release (removing it
would let a third driver lock a new inode while a second still waits on the old one).

``flock`` is advisory and, on NFS, is emulated with byte-range locks by Linux clients (``local_lock`` mount option
aside), which the server arbitrates; drivers on different hosts sharing a study directory are therefore also
excluded on NFSv4. Object-store studies lock their local home directory only.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_FILE", "StudyLocked", "study_lock", "read_holder"]

LOCK_FILE = "driver.lock"


class StudyLocked(RuntimeError):
    """Another live driver holds the study (its pid/host/start time in the message)."""

    def __init__(self, message: str):
        super().__init__(message)


def read_holder(home: str | os.PathLike) -> dict | None:
    """The pid/host/time last written to the lock file (a finished driver's stays there; harmless)."""
    try:
        return json.loads((Path(home) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid')} on {holder.get('host')} (`{holder.get('command', '?')}`, since "
            f"{holder.get('since', '?')})")


@contextlib.contextmanager
def study_lock(home: str | os.PathLike, *, command: str = "") -> Iterator[Path]:
    """Hold ``<home>/driver.lock`` exclusively for the block; :class:`StudyLocked` at once if someone else does.

    ``home`` must exist. Never blocks: a second driver is refused with the holder named."""
    path = Path(home) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyLocked(f"{Path(home)}: study is being driven by {_describe(read_holder(home))}; wait for "
                              f"it to end or stop it (a killed driver releases the lock by itself)") from None
        record = json.dumps({"pid": os.getpid(), "host": platform.node(), "command": command,
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock
