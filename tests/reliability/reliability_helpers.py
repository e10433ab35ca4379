"""Helpers of the reliability suite: `dastudy` in a subprocess with injected faults (trainables/faults.py), killing
and reaping a driver's process tree by PID, the Optuna study of a study directory, file-tree snapshots, and the
uninterrupted reference run a faulted trial must match bit for bit."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from study_helpers import TEST_RAY_ENV, kill_tree

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "study.cli", *args]


def fault_env(fault_dir: Path, fault: str = "") -> dict[str, str]:
    """The environment of a test driver: local Ray without token auth (tests only), the injected faults."""
    env = {**os.environ, **TEST_RAY_ENV, "PYTHONPATH": str(REPO)}
    env.pop("DASTUDY_FAULT", None)
    if fault:
        env["DASTUDY_FAULT"] = fault
        env["DASTUDY_FAULT_DIR"] = str(fault_dir)
    return env


def start_driver(args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(cli(*args), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def log_tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join(text[-lines:])


def wait_for_file(path: Path, driver: subprocess.Popen, log: Path, *, timeout: float) -> float:
    """Seconds until ``path`` exists; fails (with the driver's log) if the driver ends first or time runs out."""
    start = time.monotonic()
    while not path.exists():
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended (exit {driver.returncode}) before {path.name} appeared:\n"
                                 + log_tail(log))
        if time.monotonic() - start > timeout:
            kill_tree(driver)
            raise AssertionError(f"{path.name} did not appear within {timeout:.0f}s:\n" + log_tail(log))
        time.sleep(0.1)
    return time.monotonic() - start


def optuna_trials(home: Path, name: str) -> list:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(home / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under ``root``: (kind, size, mtime_ns, sha256) by relative path."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        if path.is_dir():
            out[str(path.relative_to(root))] = ("dir", 0, stat.st_mtime_ns, "")
        else:
            out[str(path.relative_to(root))] = ("file", stat.st_size, stat.st_mtime_ns,
                                                hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def metrics_rows(path: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` without its wall-clock fields (what must be identical between two runs)."""
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in row.items() if not k.startswith("time")})
    return rows


def reference_rows(trial_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Train the trial's resolved run config uninterrupted, outside Ray, on one thread as Ray gives a trial with
    cpu = 1 (the number of threads changes the float sums); returns its metrics rows."""
    import torch

    from trainables.config import TrainConfig, from_dict
    from trainables.engine import run_training

    cfg_path = trial_dir / "run" / "config.toml"
    cfg = from_dict(TrainConfig, tomllib.loads(cfg_path.read_text()), source=str(cfg_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_training(cfg, out)
    finally:
        torch.set_num_threads(threads)
    assert result["status"] == "completed", result
    return metrics_rows(out / "metrics.jsonl")


def trial_seed(trial_dir: Path) -> int:
    """The run seed of a trial: from Ray's params.json, or from the engine's resolved config where Ray's files of
    the trial never reached the study (the driver was killed within Ray's snapshot interval after the trial ended)."""
    if (trial_dir / "params.json").is_file():
        return int(json.loads((trial_dir / "params.json").read_text())["runtime.seed"])
    return int(tomllib.loads((trial_dir / "run" / "config.toml").read_text())["runtime"]["seed"])
