"""Checkpoints and Ray state under faults: a write interrupted by an exception or by SIGKILL never replaces the last
good file; a checkpoint carrying a pickled object is refused without running it."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reliability_helpers import REPO
from study_helpers import study_table, write_study_file
from trainables.checkpoint import CheckpointError, atomic_save, read_checkpoint

pytestmark = pytest.mark.timeout(180)


def test_exception_between_temp_write_and_replace_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.ones(3)}, "iteration": 2}, path)
    good = path.read_bytes()

    def refuse(src, dst):
        assert Path(src).stat().st_size > 0  # the new state was fully written to the temporary file ...
        raise OSError("injected: the process dies before the rename")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="injected"):
        atomic_save({"model": {"w": torch.zeros(3)}, "iteration": 4}, path)
    monkeypatch.undo()
    assert path.read_bytes() == good  # ... but the checkpoint is still the previous one
    assert read_checkpoint(path)["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the temporary file was removed


_SAVER = """
import sys, torch
from trainables.checkpoint import atomic_save
path = sys.argv[1]
atomic_save({"model": {"w": torch.zeros(1)}, "iteration": 0}, path)
print("ready", flush=True)
big = torch.randn(24_000_000)  # ~96 MB: each save takes a while
iteration = 0
while True:
    iteration += 2
    atomic_save({"model": {"w": big}, "iteration": iteration}, path)
"""


def _kill_mid_write(directory: Path, proc: subprocess.Popen, pattern: str, *, min_bytes: int) -> int:
    """SIGKILL ``proc`` once a temporary file matching ``pattern`` holds at least ``min_bytes`` (a write in
    progress); returns the temporary file's size at that moment."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for tmp in directory.glob(pattern):
            try:
                size = tmp.stat().st_size
            except FileNotFoundError:
                continue
            if size >= min_bytes:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return size
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"no write in progress seen in {directory}")


@pytest.mark.parametrize("round_", [1, 2])
@pytest.mark.slow  # > 3 s: outside make test-quick
def test_sigkill_during_save_of_a_large_state_never_tears_the_checkpoint(tmp_path, round_):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "ready"
    if round_ == 2:  # second round: let a few large saves complete first
        time.sleep(3)
    size = _kill_mid_write(tmp_path, proc, ".last.pt.*.tmp", min_bytes=1 << 20)
    state = read_checkpoint(path)  # loads: whole, never torn
    assert state["model"]["w"].numel() in (1, 24_000_000)
    assert state["iteration"] % 2 == 0
    leftovers = list(tmp_path.glob(".last.pt.*.tmp"))
    assert leftovers and size < 24_000_000 * 4 + 10_000  # the kill did land in the middle of a write


_COPIER = """
import os, sys, pyarrow.fs as pafs
from study.state.atomic_fs import atomic_local_filesystem
src, dst = sys.argv[1], sys.argv[2]
fs = atomic_local_filesystem()
pafs.copy_files(os.path.join(src, "a"), dst, destination_filesystem=fs)
print("ready", flush=True)
while True:
    for name in ("b", "a"):
        pafs.copy_files(os.path.join(src, name), dst, destination_filesystem=fs)
"""


def test_sigkill_during_ray_state_upload_leaves_whole_files(tmp_path):
    """Ray copies its experiment state into the study directory; through study/state/atomic_fs.py a copy killed midway
    leaves the previous version (before, a 0-byte experiment_state file broke `study resume`)."""
    src = tmp_path / "src"
    for name, fill in (("a", b"A"), ("b", b"B")):
        (src / name).mkdir(parents=True)
        (src / name / "experiment_state.json").write_bytes(fill * (64 << 20))
    dst = tmp_path / "dst"
    proc = subprocess.Popen([sys.executable, "-c", _COPIER, str(src), str(dst)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "ready"
    _kill_mid_write(dst, proc, ".dastudy-partial-experiment_state.json.*", min_bytes=1 << 20)
    digest = hashlib.sha256((dst / "experiment_state.json").read_bytes()).hexdigest()
    assert digest in {hashlib.sha256(fill * (64 << 20)).hexdigest() for fill in (b"A", b"B")}


class _Payload:
    """Pickles to a call that writes a marker file: what a malicious checkpoint would do on torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def test_checkpoint_with_a_pickled_object_is_refused_without_running_it(tiny_benchmark, tmp_path, capsys):
    from models import create_model
    from models.pretrained import WeightsError, load_weights
    from study.cli import main

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    model = create_model("deeplabv2_tiny", num_classes=16)
    torch.save({"model": model.state_dict(), "meta": {"model": "deeplabv2_tiny", "num_classes": 16},
                "extra": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match=str(evil)):
        read_checkpoint(evil)
    with pytest.raises(WeightsError, match=str(evil)):
        load_weights(model, evil)
    config = write_study_file(tmp_path / "run.toml", study_table(tiny_benchmark)["train"])
    assert main(["evaluate", str(config), "--checkpoint", str(evil)]) == 2
    assert str(evil) in capsys.readouterr().err
    assert not marker.exists()  # nothing in the file ran
    torch.load(evil, weights_only=False)  # the payload is live: without weights_only it runs
    assert marker.read_text() == "code ran"
