"""Fixtures shared across test packages (keep this file small)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config):
    """Ctrl-C must reach the processes the tests start. A shell that runs `make test` in the background without job
    control (`nohup make test &`, `cmd &` in a script) starts it with SIGINT ignored, and an ignored signal stays
    ignored in every child: TensorBoard's `serve`, a study driver and a lease holder then never see the SIGINT the
    tests send (seen: three tests timing out in such a run). Python's own handler here means SIG_DFL in children."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

# A tiny synthetic benchmark (about 1 s to write): 11 target train images per city, so that the
# between-city splits group{0,1}_{train,val} are all non-empty.
TINY_BENCHMARK = dict(seed=0, num_source=12, num_source_val=4, num_target_train=66, num_target_val=6,
                      source_size=(64, 40), target_size=(64, 32))


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """Path of a tiny synthetic benchmark (OUT with source/, target/, manifest.json); treat it as read-only."""
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("benchmark") / "synthetic"
    generate(out, **TINY_BENCHMARK)
    return out


@pytest.fixture
def remove_driver_temp_dirs():
    """``remove_driver_temp_dirs(home)`` in a test that kills study drivers: after the test, the private Ray temp
    dirs its drivers recorded in ``provenance.json`` are removed. A killed driver leaves its own behind
    (study/run/tuner.py ``ray_session``), which the resume reads (study/state/driver_files.py), so it stays until the test
    ends; without this every local ``make test`` left ~6 in ``/tmp/dastudy-<uid>``."""
    from study.state.driver_files import driver_temp_dirs

    homes: list[Path] = []
    yield homes.append
    ours = Path(tempfile.gettempdir()) / f"dastudy-{os.getuid()}"
    for home in homes:
        try:
            provenance = json.loads((Path(home) / "provenance.json").read_text())
        except (OSError, ValueError):
            continue
        for temp_dir in map(Path, driver_temp_dirs(provenance)):
            if temp_dir.parent == ours and temp_dir.is_dir():  # only what private_tmpdir made
                shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_servers_unless_slow(request, monkeypatch):
    """``-m "not slow"`` is the quick loop: a test that starts Ray or a TensorBoard server must be marked slow.

    In-process starts are refused (``ray.init``, ``ray.cluster_utils.Cluster``, a ``tensorboard`` subprocess);
    child processes are judged by their command line (``_server_in_command``).
    """
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    name = request.node.nodeid

    def refuse(what: str):
        def refused(*args, **kwargs):
            raise AssertionError(f"{name} starts {what} but is not marked @pytest.mark.slow")
        return refused

    try:
        import ray
        import ray.cluster_utils
    except ImportError:
        ray = None
    if ray is not None:
        monkeypatch.setattr(ray, "init", refuse("Ray (ray.init)"))
        monkeypatch.setattr(ray.cluster_utils.Cluster, "__init__", refuse("a Ray cluster"))

    class GuardedPopen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            what = _server_in_command(args)
            if what:
                refuse(what)()
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
    yield


def _server_in_command(args) -> str:
    """What server a child command line would start: '' when none (a heuristic on the command's words)."""
    words = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
    if any(w in ("tensorboard.main", "tensorboard") or w.endswith("/tensorboard") for w in words):
        return "a TensorBoard server"
    code = words[words.index("-c") + 1] if "-c" in words[:-1] else ""
    if "serve(" in code or "tensorboard.start(" in code:
        return "a TensorBoard server (in a child Python)"
    if "ray.init(" in code or "run_study(" in code:
        return "Ray (in a child Python)"
    for i, word in enumerate(words[:-1]):
        if word == "study" and words[i + 1] in ("run", "resume", "tensorboard"):
            return f"Ray or TensorBoard (dastudy study {words[i + 1]})"
    if "demo" in words and any(w.endswith("study.cli") or w.endswith("dastudy") for w in words):
        return "Ray (dastudy demo)"
    return ""
