"""TensorBoard over a whole study directory: every trial's ``tb/`` run (clean tags, prediction panels, one HParams
session per trial) and the source-only baseline side by side.

``serve`` starts TensorBoard as a child process (``python -m tensorboard.main``) bound to 127.0.0.1 unless told
otherwise, waits until it answers, prints the URL and stops it on Ctrl-C. The child is terminated on every exit
path (and, on Linux, also receives SIGTERM if this process dies), so no TensorBoard is left orphaned holding the
port. ``start`` is the non-blocking form used by tests and notebooks.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from study.cli import UserError

__all__ = ["TensorBoardError", "TensorBoardProcess", "event_files", "start", "serve", "port_is_free"]

EVENTS_GLOB = "events.out.tfevents.*"


class TensorBoardError(UserError):
    """TensorBoard cannot be started for this study (no events, port busy, TensorBoard failed)."""


def event_files(study_dir: str | Path) -> list[Path]:
    """Every TensorBoard event file under ``study_dir`` (sorted)."""
    return sorted(Path(study_dir).rglob(EVENTS_GLOB))


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now (TensorBoard itself would fail later, less clearly)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As TensorBoard's server does: SO_REUSEADDR ignores connections in TIME_WAIT (a TensorBoard stopped a
        # moment ago) while a port with a live listener still refuses the bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    # Linux only: the kernel sends SIGTERM to TensorBoard when the process that started it dies, even by SIGKILL.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TensorBoardProcess:
    """A running TensorBoard child process; ``stop()`` (or leaving the ``with`` block) terminates it."""

    def __init__(self, process: subprocess.Popen, *, url: str, logdir: Path, log_path: Path,
                 owns_log: bool = False):
        self.process = process
        self.url = url
        self.logdir = logdir
        self.log_path = log_path
        self._owns_log = owns_log

    @property
    def hparams_url(self) -> str:
        return self.url + "#hparams"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate TensorBoard (SIGTERM, then SIGKILL after ``timeout`` s) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)
            self._owns_log = False
        return self.process.returncode

    def __enter__(self) -> TensorBoardProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _log_tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def start(study_dir: str | Path, *, host: str = "127.0.0.1", port: int = 6006, timeout: float = 90.0,
          log_path: str | Path | None = None, extra_args: Sequence[str] = ()) -> TensorBoardProcess:
    """Start TensorBoard on ``study_dir`` and return once it answers HTTP requests.

    Raises :class:`TensorBoardError` when the directory has no event files, the port is taken, or TensorBoard
    exits or does not answer within ``timeout`` seconds. TensorBoard's own output goes to ``log_path``
    (default: discarded once it is running; its tail is shown when it fails).
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: no such study directory")
    if not event_files(study_dir):
        raise TensorBoardError(f"{study_dir}: no TensorBoard event files yet (each trial writes <trial>/…/tb/ "
                               "events once it starts training); nothing to show")
    if not 0 < port < 65536:
        raise TensorBoardError(f"port = {port!r} is not valid; allowed: 1-65535")
    if not port_is_free(host, port):
        raise TensorBoardError(f"port {port} on {host} is already in use (another TensorBoard?); choose another "
                               "one with --port")
    owns_log = log_path is None
    if log_path is None:
        import tempfile

        handle, name = tempfile.mkstemp(prefix="dastudy-tensorboard-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(study_dir.resolve()), "--host", host,
               "--port", str(port), "--window_title", f"dastudy: {study_dir.name}", *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    shown_host = f"[{host}]" if ":" in host else host
    board = TensorBoardProcess(process, url=f"http://{shown_host}:{port}/", logdir=study_dir, log_path=log_path,
                               owns_log=owns_log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                tail = _log_tail(log_path)
                hint = " (the port is in use)" if "could not bind" in tail.lower() else ""
                raise TensorBoardError(f"TensorBoard exited with code {process.returncode}{hint}:\n{tail}")
            try:
                with urllib.request.urlopen(board.url + "data/environment", timeout=2) as response:
                    if response.status == 200:
                        return board
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TensorBoardError(f"TensorBoard did not answer on {board.url} within {timeout:.0f} s:\n"
                                       + _log_tail(log_path))
            time.sleep(0.25)
    except BaseException:
        board.stop()
        raise


def serve(study_dir: str | Path, *, host: str = "127.0.0.1", port: int = 6006) -> int:
    """Serve the study in TensorBoard until Ctrl-C (or SIGTERM); returns TensorBoard's exit code."""
    study_dir = Path(study_dir)
    runs = sorted({p.parent.relative_to(study_dir).as_posix() for p in event_files(study_dir)} if study_dir.is_dir()
                  else [])
    board = start(study_dir, host=host, port=port)
    print(f"TensorBoard for study {study_dir.name} ({len(runs)} runs): {board.url}", flush=True)
    print(f"  hyperparameters: {board.hparams_url}   scalars: {board.url}#timeseries", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  note: bound to {host}, reachable from other machines", flush=True)
    print("Ctrl-C to stop.", flush=True)

    def _terminate(signum, frame):  # SIGTERM (e.g. from a job scheduler) stops it like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while board.running():
            time.sleep(0.5)
        tail = _log_tail(board.log_path)
        print(f"TensorBoard stopped by itself (exit code {board.process.returncode})" + (f":\n{tail}" if tail else ""),
              file=sys.stderr)
        return board.process.returncode or 1
    except KeyboardInterrupt:
        print("stopping TensorBoard", file=sys.stderr)
        return 0
    finally:
        board.stop()
        signal.signal(signal.SIGTERM, previous)
