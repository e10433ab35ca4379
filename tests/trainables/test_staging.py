"""Checkpoint staging folders (trainables/staging.py): a killed trial's are removed, nothing else."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from trainables.staging import STALE_AFTER_S, staging_prefix, sweep_stale_staging


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _staging(root, name: str, *, age_s: float):
    path = root / name
    path.mkdir()
    (path / "state.pt").write_bytes(b"x" * 1000)
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_only_old_staging_folders_of_gone_processes_are_removed(tmp_path):
    dead = _dead_pid()
    stale = _staging(tmp_path, f"dastudy-ckpt-{dead}-ab_c12", age_s=STALE_AFTER_S + 60)
    young = _staging(tmp_path, f"dastudy-ckpt-{dead}-young1", age_s=60)  # its owner may live in another container
    mine = _staging(tmp_path, f"{staging_prefix()}live01", age_s=STALE_AFTER_S + 60)  # a live process's
    legacy = _staging(tmp_path, "dastudy-ckpt-k3j2h1", age_s=STALE_AFTER_S + 60)  # no pid: cannot tell, kept
    other = _staging(tmp_path, f"dastudy-ckptx-{dead}-abc", age_s=STALE_AFTER_S + 60)
    not_a_dir = tmp_path / f"dastudy-ckpt-{dead}-file01"
    not_a_dir.write_text("a user's file")
    target = _staging(tmp_path, "elsewhere", age_s=STALE_AFTER_S + 60)
    link = tmp_path / f"dastudy-ckpt-{dead}-link01"
    link.symlink_to(target, target_is_directory=True)

    assert sweep_stale_staging(tmp_path) == [stale]
    assert not stale.exists()
    for kept in (young, mine, legacy, other, not_a_dir, target, link):
        assert kept.exists(), kept
    assert (target / "state.pt").is_file()  # a link is never followed
    assert sweep_stale_staging(tmp_path, now=time.time() + STALE_AFTER_S) == [young]  # an hour later it goes too


def test_the_prefix_names_this_process_and_a_missing_root_is_no_error(tmp_path):
    assert staging_prefix() == f"dastudy-ckpt-{os.getpid()}-"
    assert sweep_stale_staging(tmp_path / "absent") == []
