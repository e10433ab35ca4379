"""Whole small files in an object store (``s3://bucket/key``), through ``pyarrow.fs`` as Ray's own storage does.

The filesystem comes from ``pyarrow.fs.FileSystem.from_uri``, which reads the standard AWS environment:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION`` and
the endpoint in ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (checked with pyarrow 26 against a local S3 server),
so the driver, Ray and every trial reach the same store with the same settings and no credential is ever
written into a study file or a pickle.
"""
from __future__ import annotations

import functools
import os

__all__ = ["filesystem", "write_bytes", "read_bytes", "exists", "local_copy"]


@functools.lru_cache(maxsize=8)
def _fs_for(scheme_and_bucket: str, _endpoint: str | None):  # the endpoint only keys the cache
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri(scheme_and_bucket)
    return fs


def filesystem(uri: str):
    """``(pyarrow filesystem, path inside it)`` of an object-store URI (one filesystem per bucket is reused)."""
    if "://" not in uri:
        raise ValueError(f"{uri}: not an object-store URI (expected e.g. s3://bucket/prefix)")
    scheme, rest = uri.split("://", 1)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _fs_for(f"{scheme}://{rest.split('/', 1)[0]}", endpoint), rest.rstrip("/")


def write_bytes(uri: str, data: bytes) -> None:
    """Write one object whole (object stores never show a partly written object)."""
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_bytes(uri: str) -> bytes:
    """The object's bytes; ``FileNotFoundError`` when there is none."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as src:
        return src.read()


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def local_copy(uri: str, *, cache_dir: str | None = None) -> str:
    """A local file with the object's bytes (a checkpoint every trial of a node loads): downloaded once per node
    into ``cache_dir`` (default: the temp dir) under a name derived from the URI, written whole (rename)."""
    import hashlib
    import tempfile

    import pyarrow.fs as pafs

    directory = cache_dir or os.path.join(tempfile.gettempdir(), f"dastudy-objects-{os.getuid()}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fs, key = filesystem(uri)
    info = fs.get_file_info(key)  # size and time in the name: a new object under the same URI is fetched again
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such object")
    identity = f"{uri}|{info.size}|{info.mtime_ns}"
    path = os.path.join(directory, hashlib.sha256(identity.encode()).hexdigest()[:20] + os.path.splitext(uri)[1])
    if not os.path.isfile(path):
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=directory)
        try:
            # in 64 MiB pieces: a DeepLabV2 checkpoint is ~400 MB, and several trials of a node may fetch at once
            with os.fdopen(fd, "wb") as out, fs.open_input_stream(key) as src:
                while chunk := src.read(64 << 20):
                    out.write(chunk)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path
