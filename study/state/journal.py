"""The study's Optuna journal, written so that a full disk or a kill never leaves it unreadable.

Optuna's ``JournalFileBackend`` appends each batch of records with one buffered ``write``. When the disk fills up
mid-record (seen on a 14 MB tmpfs: the journal torn at 4,096 bytes) the torn line stays; the next append after space
returns is glued to it, and from then on every read fails with ``JSONDecodeError`` (``study resume`` and
``study status`` both crashed, issue 11). :class:`RepairingJournalBackend` keeps Optuna's file format, lock and
reader, and changes only how records are written:

- before appending (under Optuna's own file lock) a torn last line, the remains of a write that failed and was
  therefore never acknowledged to anyone, is cut off;
- the records are written at the end with ``os.write``; if that fails (ENOSPC, EIO, a kill cannot) the file is
  truncated back to where it was, so a failed append leaves no trace and raises. Records that create or end
  something (a study, a trial, a trial's final state) are also fsynced, which flushes every earlier record
  of the file too; parameters, intermediate values and attributes written in between ride on the next one (a
  killed process loses nothing written; a power cut can lose those since the last ``fsync``). One ``fsync`` per
  record was 23 s of a 300-trial driver's 417 s (docs/performance.md);
- on open, a journal torn by an older writer is repaired the same way, and a torn fragment glued to the front of
  a later record is removed (the record after it is kept).

A record therefore is in the journal whole, or it was never acknowledged (Optuna raised to the caller).

The writers' lock is an ``flock`` on ``<journal>.flock`` (:class:`FlockJournalLock`) instead of Optuna's default
symlink lock: a driver killed while holding that one left ``optuna.journal.lock``, a symlink to the journal's
absolute path, and once the study had been moved the stale link could not be stat'ed, so Optuna's grace-period
clean-up never fired and the resumed driver waited for ever. The kernel releases an ``flock`` with its holder.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend

__all__ = ["RepairingJournalBackend", "FlockJournalLock", "repair_journal", "RERUN_OF", "superseded_numbers"]

RERUN_OF = "rerun_of"  # user attribute of an Optuna trial recording a re-run of a FAILED one (study/run/search.py)


def superseded_numbers(trials) -> set[int]:
    """Numbers of the FAIL trials a later Optuna trial re-ran to an end (``rerun_of``): views of a study leave them
    out, since the same Ray trial completed after a `study resume`."""
    return {int(t.user_attrs[RERUN_OF]) for t in trials if RERUN_OF in t.user_attrs}

_RECORD_START = b'{"op_code":'  # every Optuna journal record starts with its op code (optuna/storages/journal)
# Optuna's JournalOperation codes that create or end something: CREATE_STUDY, DELETE_STUDY, CREATE_TRIAL,
# SET_TRIAL_STATE_VALUES, DISCARD_TRIALS (tests/study/test_journal.py checks them against Optuna's enum).
_DURABLE_OPS = frozenset({0, 1, 4, 6, 10})


def _valid(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _plainly_whole(data: bytes) -> bool:
    """True when every line of ``data`` starts with a record start and holds no other one, and the last line
    ends: then no write was torn, whatever its length. Counting record starts alone is not enough: a write torn
    within its first bytes (``{"op_co``) and glued by Optuna's writer to the next record makes one line with one
    record start, which Optuna cannot parse (issue 20, item 10). JSON escapes quotes and newlines inside strings,
    so a record start can only begin a record."""
    lines = data.count(b"\n")
    return (data.endswith(b"\n") and data.startswith(_RECORD_START)
            and data.count(b"\n" + _RECORD_START) == lines - 1 and data.count(_RECORD_START) == lines)


def repair_journal(path: str | os.PathLike) -> int:
    """Make ``path`` a sequence of whole records; returns the number of bytes removed (0: it was whole).

    Call with the journal's lock held. A torn last line is cut; a line that is a torn fragment followed by a
    whole record keeps that record. Rewritten through a temporary file and ``os.replace`` when the middle changes.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if not data or _plainly_whole(data):
        return 0  # the common case, without parsing
    lines = data.split(b"\n")
    lines.pop()  # b"" when the file ends with a newline, else a torn last record (dropped)
    fixed: list[bytes] = []
    middle_changed = False
    for line in lines:
        if line and _valid(line):
            fixed.append(line)
            continue
        middle_changed = True
        start = line.rfind(_RECORD_START)
        if start > 0 and _valid(line[start:]):
            fixed.append(line[start:])  # a failed write's fragment glued to the record written after it
        # else: a fragment on its own line: it was never acknowledged, drop it
    body = b"".join(x + b"\n" for x in fixed)
    removed = len(data) - len(body)
    if removed == 0:
        return 0
    if not middle_changed:  # only a torn tail: truncate in place
        with open(path, "r+b") as fh:
            fh.truncate(len(body))
            os.fsync(fh.fileno())
        return removed
    tmp = path.with_name(path.name + ".repair-tmp")
    # fsync before the rename: else a power cut can leave the journal's name on an empty or partial file
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # readers see the old file or the whole new one, never a half-written one
    _fsync_dir(path.parent)  # the rename itself survives a power cut
    return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FlockJournalLock:
    """Optuna's journal-lock interface (``acquire``/``release``) on an exclusive ``flock``: released by the kernel
    when its holder dies, and independent of where the study directory is (see the module docstring)."""

    def __init__(self, journal_path: str | os.PathLike):
        self._path = f"{journal_path}.flock"
        self._fd: int | None = None

    def __getstate__(self) -> dict:
        return {"_path": self._path, "_fd": None}

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the flock


class RepairingJournalBackend(JournalFileBackend):
    """``JournalFileBackend`` whose appends are whole or absent (see the module docstring)."""

    def __init__(self, file_path: str | os.PathLike):
        lock = FlockJournalLock(file_path)
        super().__init__(str(file_path), lock_obj=lock)  # type: ignore[arg-type]  # Optuna's lock interface
        self._write_lock = lock  # Optuna's lock object, kept under a name of our own
        if os.path.getsize(self._file_path) > 0:
            try:
                lock.acquire()
            except OSError:  # a read-only study (an archive, a mount): read it as it is; Optuna skips a torn tail
                return
            try:
                repair_journal(self._file_path)
            finally:
                lock.release()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        self._write_lock.acquire()
        try:
            fd = os.open(self._file_path, os.O_RDWR)
            try:
                start = _whole_size(fd)
                os.lseek(fd, start, os.SEEK_SET)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    if any(log.get("op_code") in _DURABLE_OPS for log in logs):
                        os.fsync(fd)
                except BaseException:
                    os.ftruncate(fd, start)  # shrinking needs no space: the failed append leaves no trace
                    raise
            finally:
                os.close(fd)
        finally:
            self._write_lock.release()


def _whole_size(fd: int) -> int:
    """Size of the file without a torn last line (which is cut off here)."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        chunk = os.pread(fd, min(4096, end), end - min(4096, end))
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = end - len(chunk) + newline + 1
            break
        end -= len(chunk)
    if end != size:
        os.ftruncate(fd, end)
    return end
