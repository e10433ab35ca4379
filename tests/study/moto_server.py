"""moto's standalone S3 server for tests (benchmarks/moto_s3.py: 127.0.0.1, a free port, its own process, stopped by
PID; nothing reaches a real cloud). Skips the test where moto[server] or boto3 is missing, with the reason."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pytest

from benchmarks.moto_s3 import free_port, moto_server as _moto_server

__all__ = ["free_port", "moto_server"]


@contextlib.contextmanager
def moto_server(log_dir: Path, bucket: str, *, server_env: dict[str, str] | None = None
                ) -> Iterator[dict[str, str]]:
    """See benchmarks.moto_s3.moto_server; skips the test where moto[server] or boto3 is missing."""
    pytest.importorskip("moto", reason="moto[server] is missing: `make test` installs it (pip extra 's3-test')")
    pytest.importorskip("boto3", reason="boto3 is missing: `make test` installs it with moto[server]")
    with _moto_server(log_dir, bucket, server_env=server_env) as env:
        yield env
