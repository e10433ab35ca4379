"""Where a trial stages each checkpoint before Ray copies it into the study's storage, and the clean-up of what a
killed trial left there.

A trial writes its full-state checkpoint (~400 MiB for DeepLabV2 with both discriminators and the optimisers) into
``<tmp>/dastudy-ckpt-<pid>-<random>/`` and hands it to ``tune.report``, which copies it into the study; the folder is
removed when the report returns. A trial SIGKILLed in between (a preempted or OOM-killed worker, a node whose Ray
was stopped) leaves the folder, and with it a whole checkpoint, in the node's temp folder for good: 28 such folders
had piled up in this machine's ``/tmp`` from the driver-kill tests of one day. Each trial start therefore removes
the staging folders of processes that are gone (:func:`sweep_stale_staging`).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["STAGING_PREFIX", "staging_prefix", "sweep_stale_staging"]

STAGING_PREFIX = "dastudy-ckpt-"
_STAGING_NAME = re.compile(rf"{re.escape(STAGING_PREFIX)}(\d+)-[A-Za-z0-9_]+")
# A staging folder lives for one save and one copy into the storage (seconds to minutes). The age guards the one
# case where a live owner looks dead: a process of another PID namespace (another container) sharing this /tmp.
STALE_AFTER_S = 3600.0


def staging_prefix() -> str:
    """The ``tempfile`` prefix of this process's staging folders: ``dastudy-ckpt-<pid>-``."""
    return f"{STAGING_PREFIX}{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale_staging(root: str | Path | None = None, *, stale_after_s: float = STALE_AFTER_S,
                        now: float | None = None) -> list[Path]:
    """Remove the staging folders in ``root`` (default: the temp folder) that this user's killed trials left: named
    ``dastudy-ckpt-<pid>-<random>``, a real folder (not a link), owned by this user, untouched for
    ``stale_after_s`` and whose process is gone. Anything else stays. Returns what was removed."""
    root = Path(root if root is not None else tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not entry.is_dir() or entry.is_symlink() or info.st_uid != os.getuid():
            continue
        if now - info.st_mtime < stale_after_s or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed
