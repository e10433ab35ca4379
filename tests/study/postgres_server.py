"""A real PostgreSQL server for tests: Debian's ``postgresql`` package (``make test`` installs it), initdb + the
server on a private port and data directory under /tmp, bound to 127.0.0.1, run as the unprivileged ``postgres``
user when the tests run as root (initdb refuses root), stopped by PID. Skips the test where PostgreSQL or psycopg
is missing, with the reason."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator

import pytest


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextlib.contextmanager
def postgres_server(*, password: str | None = None) -> Iterator[tuple[str, int]]:
    """Yields ``(url, port)``. With ``password`` the server uses scram-sha-256 and the URL carries the password;
    without it, trust authentication for the ``postgres`` user."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is missing: `make test` installs it (extra 'postgres')")
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed (`make test` installs Debian's postgresql package with apt-get; "
                    "it could not here)")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="dastudy-pg-", dir="/tmp")  # short: the server's unix socket lives here
    auth = ["-A", "trust"]
    if password is not None:
        with open(os.path.join(base, "pw"), "w") as fh:
            fh.write(password + "\n")
        auth = ["-A", "scram-sha-256", "--pwfile", os.path.join(base, "pw")]
    if as_user:
        shutil.chown(base, user="postgres")
        for name in os.listdir(base):
            shutil.chown(os.path.join(base, name), user="postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = os.path.join(base, "data")
    subprocess.run([*as_user, initdb, "-D", data, "-U", "postgres", *auth, "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    log_path = os.path.join(base, "server.log")
    log = open(log_path, "w")
    server = subprocess.Popen([*as_user, postgres, "-D", data, "-p", str(port), "-k", base, "-h", "127.0.0.1",
                               "-c", "fsync=off"], stdout=log, stderr=subprocess.STDOUT)
    credentials = "postgres" if password is None else f"postgres:{password}"
    url = f"postgresql://{credentials}@127.0.0.1:{port}/postgres"
    try:
        deadline = time.time() + 60
        while True:
            try:
                psycopg.connect(url).close()
                break
            except psycopg.OperationalError:
                assert server.poll() is None and time.time() < deadline, open(log_path).read()
                time.sleep(0.3)
        yield url, port
    finally:
        server.terminate()  # SIGTERM to our server (runuser forwards it): a smart shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
