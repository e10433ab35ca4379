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
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pyarrow
import pyarrow.fs as pafs

__all__ = ["AtomicLocalHandler", "atomic_local_filesystem", "TEMP_PREFIX"]

TEMP_PREFIX = ".dastudy-partial-"  # temporary siblings; one left behind means a writer was killed mid-file


class _AtomicFile:
    """A binary file object that becomes ``path`` on ``close()`` (and vanishes if closed after an error)."""

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".", dir=directory)
        self._fh = os.fdopen(fd, "wb")
        self.closed = False

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
