"""moto's standalone S3 server on 127.0.0.1 (a free port, its own process, stopped by PID): the object store of the
S3 benchmarks and of the tests (tests/study/moto_server.py adds pytest's skip where moto is missing). Nothing reaches
a real cloud."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

__all__ = ["free_port", "moto_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(log_dir: Path, bucket: str, *, server_env: dict[str, str] | None = None
                ) -> Iterator[dict[str, str]]:
    """Yields the standard AWS variables that point boto3, pyarrow and Ray at the server, with ``bucket`` made;
    the server's output goes to ``log_dir/moto.log``. ``server_env``: moto's own settings, e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT=1`` (signatures checked after the one unsigned call that makes the bucket)."""
    import boto3

    port = free_port()
    log_path = Path(log_dir) / "moto.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(server_env or {})})
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        boto3.session.Session().client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                                       aws_access_key_id="testing", aws_secret_access_key="testing"
                                       ).create_bucket(Bucket=bucket)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)  # our own server, by PID
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
