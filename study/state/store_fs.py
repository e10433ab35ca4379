"""An object store (``s3://``, ``gs://``) as Ray's storage, with the checkpoint deletions of the local one deferred.

Why: Ray deletes a trial's checkpoint beyond ``CheckpointConfig(num_to_keep)`` at once and, so that the stored
experiment state never names a deleted checkpoint, forces a full snapshot every ``num_to_keep`` checkpoints of any
trial (ray-project/ray#31613). On a local or shared filesystem dastudy defers those deletions
(:class:`study.state.atomic_fs.DeferredDeletes`) and switches the forced snapshots off; on an object store they
stayed on, and the driver waited for each snapshot's upload: 0.13 s of driver CPU per trial report at 100 trials
against 0.014 on a filesystem (docs/performance.md, "Object storage"). This filesystem hands Ray the same store
through a ``pyarrow.fs.PyFileSystem`` that defers the deletion of ``checkpoint_<n>`` directories until two
experiment snapshots (``experiment_state-*.json``, written whole by the store) have landed after the request, so the
forced snapshots are switched off there too.

Every other call goes straight to pyarrow's own filesystem for the bucket (``trainables.objectstore``: the standard
AWS environment, nothing of the credentials in a pickle: the handler pickles as its root URI and each process builds
its own filesystem). Ray needs the storage path without the scheme next to a filesystem of its own
(:func:`ray_path`).
"""
from __future__ import annotations

import os
import re

import pyarrow
import pyarrow.fs as pafs

from study.state.atomic_fs import DEFERRED, WriteOnlyStream
from trainables.objectstore import filesystem

__all__ = ["DeferringStoreHandler", "store_filesystem", "ray_path"]

_STATE_FILE = re.compile(r"^experiment_state-.+\.json$")  # Ray's experiment snapshot, one per driver session


def _root(uri: str) -> str:
    """``s3://bucket`` of ``s3://bucket/prefix/...``."""
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def ray_path(uri: str) -> str:
    """``bucket/prefix`` of ``s3://bucket/prefix``: the path Ray wants next to :func:`store_filesystem`."""
    return uri.split("://", 1)[1].rstrip("/")


class _LandingStream(WriteOnlyStream):
    """An output stream to the store that counts an experiment snapshot as landed once its object is written."""

    def __init__(self, stream):
        self._fh = stream
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._fh.close()  # the object exists once this returns (a single or a completed multipart upload)
        DEFERRED.snapshot_landed()


class DeferringStoreHandler(pafs.FileSystemHandler):
    """pyarrow's filesystem of one bucket, with Ray's checkpoint deletions deferred (see the module docstring)."""

    def __init__(self, root: str):
        self.root = _root(root)

    def __reduce__(self):  # Ray pickles the storage filesystem into tuner.pkl and to every worker: the URI only
        return (DeferringStoreHandler, (self.root,))

    def __eq__(self, other) -> bool:
        return isinstance(other, DeferringStoreHandler) and other.root == self.root

    def __ne__(self, other) -> bool:
        return not self == other

    @property
    def _fs(self) -> pafs.FileSystem:
        return filesystem(self.root)[0]  # one per bucket and process, cached by trainables.objectstore

    def get_type_name(self) -> str:
        return "dastudy-deferring-store"

    def normalize_path(self, path):
        return self._fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        if DEFERRED.defer(path, self._fs):
            return  # a checkpoint directory: deleted once no stored experiment state can name it
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the bucket")

    def delete_file(self, path):
        self._fs.delete_file(path)

    def move(self, src, dest):
        self._fs.move(src, dest)

    def copy_file(self, src, dest):
        self._fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self._fs.open_input_stream(path)

    def open_input_file(self, path):
        return self._fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        stream = self._fs.open_output_stream(path, metadata=metadata)
        if _STATE_FILE.match(os.path.basename(path)):
            return pyarrow.PythonFile(_LandingStream(stream), mode="w")
        return stream  # checkpoints and trial files: pyarrow's own stream, multipart above its threshold

    def open_append_stream(self, path, metadata):
        return self._fs.open_append_stream(path, metadata=metadata)


def store_filesystem(uri: str) -> pafs.PyFileSystem:
    """Ray's storage filesystem for the object-store URI ``uri`` (any path in its bucket)."""
    return pafs.PyFileSystem(DeferringStoreHandler(uri))
