"""A local filesystem for Ray's storage on which a file is either whole or absent, never torn.

Why: Ray Tune writes its experiment state (``experiment_state-*.json``, ``search_gen_state-*.json``,
``searcher-state-*.pkl``) and every trial checkpoint into a staging directory and then copies it to the storage
path with ``pyarrow.fs.copy_files``, which truncates each destination file and writes it in place. A driver killed
during that copy (SIGKILL, a lost head node) left 0-byte experiment state files in the study directory, and
``dastudy study resume`` then restored no trials: the study ended with trials missing and an Optuna trial RUNNING
for ever (found by tests/reliability). Here every file is written to a temporary sibling and renamed over the
destination when complete (``os.replace`` is atomic on POSIX filesystems, NFS included), so a kill leaves the
previous version or the new one.

Only for filesystem storage paths (local, or a network filesystem mounted on every node); object stores
(``s3://``) write objects whole already. Usage: ``RunConfig(storage_path=path, storage_filesystem=
atomic_local_filesystem())`` and the same ``storage_filesystem`` for ``Tuner.restore``/``Tuner.can_restore``.

The same filesystem defers the deletion of trial checkpoints (:class:`DeferredDeletes`): Ray deletes a trial's
checkpoint beyond ``CheckpointConfig(num_to_keep)`` at once, and to keep the stored experiment state from naming a
deleted checkpoint it forces a full experiment snapshot every ``num_to_keep`` checkpoints of any trial
(ray-project/ray#31613) — at 1,000 trials a 20 MB state re-encoded 463 times, the largest driver cost of a study
(docs/performance.md). Here a deletion Ray asks for waits until two experiment snapshots have landed in the
storage after the request: the second one was written after Ray forgot the checkpoint, so no state a resume can
read still names it, and Ray's forced snapshots can be switched off (:func:`study.run.snapshots.stop_forced_snapshots`).
:class:`DeferredDeletes` serves the object-store filesystem too (study/state/store_fs.py).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import tempfile
from typing import Any

import pyarrow
import pyarrow.fs as pafs

__all__ = ["AtomicLocalHandler", "atomic_local_filesystem", "TEMP_PREFIX", "CHECKPOINT_DIR", "DeferredDeletes",
           "DEFERRED", "WriteOnlyStream"]

TEMP_PREFIX = ".dastudy-partial-"  # temporary siblings; one left behind means a writer was killed mid-file
CHECKPOINT_DIR = re.compile(r"^checkpoint_\d+$")  # Ray's trial checkpoint directories (also study/run/storage.py)
_STATE_FILE = re.compile(r"^experiment_state-.+\.json$")  # Ray's experiment snapshot, one per driver session


class DeferredDeletes:
    """Checkpoint directories Ray asked to delete, deleted once two experiment snapshots have landed after the ask.

    Only in the driver process and only while enabled (the driver does it around ``Tuner.fit``); elsewhere
    a deletion happens at once, as before. A snapshot "lands" when its ``experiment_state-*.json`` has been renamed
    into the storage by this filesystem. Why two: the first one to land may have been written before the ask
    (uploads run in the background) and still name the checkpoint; the upload of the second starts only after the
    first landed and copies a state written after that. After a driver kill the pending ones stay on disk (Ray
    has forgotten them; they cost disk, not correctness).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.enabled = False
        self.landed = 0
        self.deleted = 0
        # (snapshots landed when Ray asked, checkpoint directory, its filesystem: None for the local one)
        self._pending: list[tuple[int, str, pafs.FileSystem | None]] = []

    def enable(self) -> None:
        with self._lock:
            self.enabled, self.landed, self.deleted, self._pending = True, 0, 0, []

    def disable(self) -> int:
        """Stop deferring and keep what is pending on disk (the final state may not have landed: ``fit`` raised);
        returns how many were pending."""
        with self._lock:
            count, self._pending, self.enabled = len(self._pending), [], False
        return count

    def defer(self, path: str, filesystem: pafs.FileSystem | None = None) -> bool:
        """True when ``path`` (a checkpoint directory in ``filesystem``, default the local one) is kept for later
        instead of being deleted now."""
        if not CHECKPOINT_DIR.match(os.path.basename(os.path.normpath(path))):
            return False
        with self._lock:
            if not self.enabled:
                return False
            self._pending.append((self.landed, path, filesystem))
            return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def snapshot_landed(self) -> None:
        with self._lock:
            self.landed += 1
            due = [(p, fs) for landed, p, fs in self._pending if landed <= self.landed - 2]
            self._pending = [entry for entry in self._pending if entry[0] > self.landed - 2]
        self._delete(due)

    def flush(self) -> int:
        """Delete everything pending (call when the study's final state has landed: ``Tuner.fit`` returned) and
        stop deferring; returns how many were pending."""
        with self._lock:
            due = [(p, fs) for _, p, fs in self._pending]
            self._pending, self.enabled = [], False
        self._delete(due)
        return len(due)

    def _delete(self, due: list[tuple[str, pafs.FileSystem | None]]) -> None:
        local = pafs.LocalFileSystem()
        for path, filesystem in due:
            fs = filesystem or local
            try:
                if fs.get_file_info(path).type != pafs.FileType.Directory:
                    continue  # already gone (a trial directory moved aside, or removed by its owner)
                fs.delete_dir(path)
            except FileNotFoundError:
                pass  # already gone (a trial directory moved aside, or removed by its owner)
            except OSError as err:  # never let housekeeping end a study (nor an unreachable store)
                print(f"warning: could not remove the old checkpoint {path}: {err}", file=sys.stderr)
                continue
            self.deleted += 1


DEFERRED = DeferredDeletes()  # the driver's; worker processes never enable theirs


class WriteOnlyStream:
    """The file-object surface ``pyarrow.PythonFile(..., mode="w")`` needs, writing through to ``self._fh``;
    subclasses decide what ``close()`` does."""

    _fh: Any
    closed = False

    def write(self, data) -> int:
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def tell(self) -> int:
        return self._fh.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


class _AtomicFile(WriteOnlyStream):
    """A binary file object that becomes ``path`` on ``close()`` (and vanishes if closed after an error)."""

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".", dir=directory)
        self._fh = os.fdopen(fd, "wb")
        self.closed = False

    def discard(self) -> None:
        """Drop what was written (the destination is left as it was)."""
        if not self.closed:
            self.closed = True
            self._fh.close()
            os.unlink(self._tmp)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._fh.close()  # no fsync: the rename protects against a killed process (not a power cut)
            os.replace(self._tmp, self.path)
        except BaseException:
            self._fh.close()
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)  # our own temporary file
            raise
        if _STATE_FILE.match(os.path.basename(self.path)):
            DEFERRED.snapshot_landed()


class AtomicLocalHandler(pafs.FileSystemHandler):
    """``pyarrow.fs.LocalFileSystem`` with atomic whole-file writes (see the module docstring)."""

    def __init__(self):
        self._fs = pafs.LocalFileSystem()

    def __reduce__(self):  # Ray pickles the storage filesystem to every worker
        return (AtomicLocalHandler, ())

    def __eq__(self, other) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "dastudy-atomic-local"

    def normalize_path(self, path):
        return self._fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        if DEFERRED.defer(path):
            return  # a checkpoint directory: deleted once no stored experiment state can name it (DeferredDeletes)
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the filesystem root")

    def delete_file(self, path):
        self._fs.delete_file(path)

    def move(self, src, dest):
        self._fs.move(src, dest)

    def copy_file(self, src, dest):
        out = _AtomicFile(dest)
        try:
            with open(src, "rb") as fh:
                shutil.copyfileobj(fh, out._fh, 1 << 20)
        except BaseException:
            out.discard()
            raise
        out.close()

    def open_input_stream(self, path):
        return self._fs.open_input_stream(path)

    def open_input_file(self, path):
        return self._fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pyarrow.PythonFile(_AtomicFile(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self._fs.open_append_stream(path, metadata=metadata)


def atomic_local_filesystem() -> pafs.PyFileSystem:
    return pafs.PyFileSystem(AtomicLocalHandler())
