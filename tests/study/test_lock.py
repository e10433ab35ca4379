"""One driver per study (study/lock.py): a second `study run`/`resume` is refused naming the holder; a driver
killed with SIGKILL leaves nothing locked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from study.lock import StudyLocked, read_holder, study_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time\nfrom study.lock import study_lock\n"
        "with study_lock(sys.argv[1], command='dastudy study resume held'):\n"
        "    print('locked', flush=True)\n    time.sleep(120)\n")


def _holder(home: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(home)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_driver_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(StudyLocked) as refused:
            with study_lock(tmp_path):
                pass
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "dastudy study resume held" in message and "\n" not in message
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: no clean-up runs
        holder.wait(timeout=30)
    with study_lock(tmp_path, command="next"):  # the kernel released the lock with the process
        assert read_holder(tmp_path)["pid"] == os.getpid()
    with study_lock(tmp_path):  # and ours went with the block
        pass


def test_study_resume_of_a_held_study_exits_with_one_line_naming_the_holder(tmp_path, capsys, tiny_benchmark):
    from study.cli import main
    from study_helpers import study_table
    from study.study_config import study_from_dict
    from study.tuner import locate, write_study_files

    location = locate("held", str(tmp_path / "studies"))
    write_study_files(study_from_dict(study_table(tiny_benchmark, name="held"), source="test"), location, extra={})
    holder = _holder(location.home)
    try:
        code = main(["study", "resume", str(location.home)])
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and str(location.home) in err, err
