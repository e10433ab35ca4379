"""One driver per study: an exclusive ``flock`` on ``<study>/driver.lock`` held while `study run`/`resume` drive it.

Two drivers resuming the same study trained the same trial directories and left Optuna with more trials than the
study has (issue 11). ``fcntl.flock`` locks belong to the open file description, so the kernel releases them when
the holder exits for any reason (SIGKILL included): a crashed driver never leaves the study locked. The file keeps
the holder's pid, host and start time only to name it in the refusal; it is not removed on release (removing it
would let a third driver lock a new inode while a second still waits on the old one).

``flock`` is advisory and, on NFS, is emulated with byte-range locks by Linux clients, which the server
arbitrates; drivers on different hosts sharing a study directory are therefore also excluded there, and on Lustre
mounted with ``-o flock``. Not everywhere: NFS mounted with ``nolock`` or ``local_lock=flock|all`` and Lustre with
``localflock`` keep the lock on one node, and Lustre without ``flock`` has none; :func:`check_cluster_wide_lock`
reads the study's mount in ``/proc/mounts`` and refuses those (study/state/lease.py calls it before a driver starts).
Object-store and PostgreSQL studies are held by a lease in their own storage (study/state/lease.py); this lock then
guards the driver's local home directory only.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_FILE", "StudyLocked", "study_lock", "read_holder", "Mount", "mount_of", "node_local_lock",
           "check_cluster_wide_lock", "NODE_LOCAL_ENV"]

LOCK_FILE = "driver.lock"
NODE_LOCAL_ENV = "DASTUDY_NODE_LOCAL_LOCK"  # "1": accept a node-local lock (only this node drives the study)


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


# ---------------------------------------------------------------------------------------------------------
# filesystems: is the flock cluster-wide?


@dataclass(frozen=True)
class Mount:
    device: str
    point: str
    fstype: str
    options: tuple[str, ...]


def _unescape(field_text: str) -> str:  # /proc/mounts writes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def mount_of(path: str | os.PathLike, mounts_text: str | None = None) -> Mount | None:
    """The mount that holds ``path`` (symlinks resolved; the path need not exist yet), from ``/proc/mounts`` or
    the given text; the last of several mounts on one point wins, as in the kernel's table."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = Path(path).resolve()
    best: Mount | None = None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point = _unescape(parts[1])
        if target == Path(point) or Path(point) in target.parents:
            if best is None or len(point) >= len(best.point):
                best = Mount(_unescape(parts[0]), point, parts[2], tuple(parts[3].split(",")))
    return best


# Filesystems whose flock (through study/state/lock.py) other nodes never see, or which have no flock at all, are
# decided from their mount options; these others are not known to arbitrate flock across nodes.
UNKNOWN_LOCKING = {"beegfs": "BeeGFS arbitrates flock across nodes only with the client's tuneUseGlobalFileLocks",
                   "cifs": "CIFS/SMB flock is emulated per client", "smb3": "CIFS/SMB flock is emulated per client"}


def node_local_lock(mount: Mount | None) -> tuple[str, str] | None:
    """``("refuse" | "warn", why)`` when the driver lock on ``mount`` would not exclude a driver on another node;
    None when it does, or when the filesystem is local (no other node sees the study there)."""
    if mount is None:
        return None
    fstype, options = mount.fstype, set(mount.options)
    where = f"{mount.point} ({fstype} from {mount.device}, options {','.join(mount.options)})"
    if fstype == "lustre":
        if "localflock" in options:
            return "refuse", (f"{where} is mounted with localflock: flock is node-local, a driver on another node "
                              "would not see this one; remount with -o flock")
        if "flock" not in options:
            return "refuse", f"{where} has no flock (mounted without -o flock); remount with -o flock"
        return None
    if fstype in ("nfs", "nfs4"):
        local = [o for o in mount.options if o in ("nolock", "local_lock=flock", "local_lock=all")]
        if local:
            return "refuse", (f"{where}: {local[0]} makes flock node-local, a driver on another node would not see "
                              "this one; remount without it (NFSv3 needs the lock daemon, rpc.statd)")
        return None
    if (fstype.startswith("fuse.") and fstype != "fuse.ceph-fuse") or fstype in UNKNOWN_LOCKING:
        return "warn", (f"{where}: {UNKNOWN_LOCKING.get(fstype, 'a FUSE filesystem may keep flock on this node')}"
                        "; two drivers on different nodes may not exclude each other")
    return None


def check_cluster_wide_lock(home: Path, *, mounts_text: str | None = None) -> str | None:
    """Refuse a study directory whose driver lock would be node-local (:func:`node_local_lock`) unless
    ``DASTUDY_NODE_LOCAL_LOCK=1`` says only this node drives it; returns a warning line for an unknown case."""
    verdict = node_local_lock(mount_of(home, mounts_text))
    if verdict is None:
        return None
    kind, why = verdict
    if kind == "refuse" and os.environ.get(NODE_LOCAL_ENV) != "1":
        raise StudyLocked(f"{home}: the driver lock cannot exclude other nodes: {why}; or set {NODE_LOCAL_ENV}=1 "
                          "if only this node ever drives the study")
    return f"warning: {home}: {why}"
