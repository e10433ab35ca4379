"""Helpers for the study-platform tests: a tiny run config on the tiny synthetic benchmark, study files, the
environment of local Ray clusters started by tests."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import tomli_w

# Local clusters started by tests only: no token auth, quiet, no usage stats (outside tests auth stays on).
TEST_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_STATE_REFRESH_PERIOD": "0.1",
}


def tiny_train_table(benchmark: Path, *, iterations: int = 6, interval: int = 2) -> dict[str, Any]:
    """AdaptSegNet on deeplabv2_tiny at 64x32: a few milliseconds per step on one thread."""
    source, target = str(benchmark / "source"), str(benchmark / "target")
    return {
        "name": "tiny",
        "data": {"num_classes": 16, "workers": 0, "hflip": False, "blur": False,
                 "source": {"dataset": "synthia", "root": source, "split": "train", "size": [64, 32]},
                 "target": {"dataset": "cityscapes", "root": target, "split": "train", "size": [64, 32]},
                 "val": {"dataset": "cityscapes", "root": target, "split": "val", "size": [64, 32]}},
        "model": {"name": "deeplabv2_tiny"},
        "optim": {"lr": 0.01, "iter_max": iterations, "iter_stop": iterations, "batch_size": 2},
        "adapt": {"mode": "adversarial", "d_ndf": 8},
        "eval": {"interval": interval},
        "runtime": {"device": "cpu", "log_interval": 1, "progress": False, "seed": 1},
    }


def study_table(benchmark: Path, *, name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A small study over the tiny run config (λ_adv × lr, TPE, ASHA), 1 CPU per trial, 2 at a time."""
    table: dict[str, Any] = {
        "name": name, "metric": "mIoU16", "mode": "max", "num_samples": 4, "max_concurrent_trials": 2,
        "reuse_actors": True,  # trials reuse the worker processes (no torch import per trial)
        "search": {"space": "lambda_lr", "sampler": "tpe", "seed": 0, "startup_trials": 2},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 1, "gpu": 0},
        "train": tiny_train_table(benchmark),
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            table.setdefault(section, {})[sub] = value
        else:
            table[key] = value
    return table


def write_study_file(path: Path, table: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(table))
    return path



def kill_tree(driver: subprocess.Popen, *, grace: float = 2.0) -> dict[str, Any]:
    """SIGKILL a study driver, as a crash or a lost head node would; then, after ``grace`` seconds, whatever it
    had started that is still alive (Ray's dashboard/runtime-env agents notice a dead raylet only after about a
    minute, so waiting longer only costs test time), by PID. Returns how many it had started and which lingered."""
    import psutil

    try:
        children = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if driver.poll() is None:
        os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=grace)
    names = []
    for proc in alive:
        try:
            names.append(proc.name())
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return {"descendants": len(children), "lingering": names}
