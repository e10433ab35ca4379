"""Ray's files of trials that a killed driver had not yet copied into the study.

Ray's driver writes each trial's ``params.json``, ``params.pkl``, ``result.json`` and ``progress.csv`` into a
staging directory inside its Ray session (``<ray temp dir>/session_*/artifacts/<time>/<experiment>/driver_artifacts``)
and copies that directory into the study only with its experiment snapshot (every >= 10 s; study/run/snapshots.py).
A trial that was asked *and ended* between the last snapshot and a driver SIGKILL is in Optuna and in its engine
folder (``run/``), but Ray's saved state does not know it, so the resumed study never writes those files again.

The killed driver's staging directory is still on disk when the resume runs on the same machine: the driver's
private Ray temp dir (study/config/resources.py ``private_tmpdir``) is removed only by a driver that ends normally.
:func:`recover_driver_files` copies from it the files such trials lack. It fills only trial folders that already
exist in the study and have no ``params.json``, never overwrites a file and never deletes anything; the killed
driver's temp dir stays where it is (its logs tell what happened).
"""
from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.io import atomic_write_bytes

#: Ray's logger files (ray.tune.logger JsonLoggerCallback, CSVLoggerCallback) that a trial folder should have;
#: ``params.json`` last, so that a folder that has it was recovered whole (a resume killed midway tries again).
RAY_TRIAL_FILES = ("params.pkl", "result.json", "progress.csv", "params.json")
#: Files appended to line by line: a kill can leave a partial last line, which is not copied.
_LINE_FILES = ("result.json", "progress.csv")


@dataclass(frozen=True)
class Recovered:
    staging: Path
    trials: tuple[str, ...]
    files: int


def driver_temp_dirs(provenance: dict[str, Any]) -> list[str]:
    """The private Ray temp dirs of this study's earlier drivers on this machine (newest last), as recorded in
    ``provenance.json`` by ``study run`` and each ``study resume``."""
    host = platform.node()
    drivers = [provenance, *provenance.get("resumes", [])]
    return [d["ray_temp_dir"] for d in drivers if d.get("ray_temp_dir") and d.get("hostname") == host]


def staging_dirs(ray_temp_dir: str | Path) -> list[Path]:
    """The driver staging directories inside one driver's private Ray temp dir (one driver, one study; any
    experiment folder name, as a study renamed since keeps its trial ids). The layout is Ray's
    ``StorageContext.experiment_driver_staging_path``; ``tests/study/test_tune_resume.py`` fails when an upgrade
    moves it."""
    found = {p.resolve() for p in Path(ray_temp_dir).glob("session_*/artifacts/*/*/driver_artifacts") if p.is_dir()}
    return sorted(found)  # resolved: ``session_latest`` is Ray's link to the session folder


def recover_driver_files(home: Path, temp_dirs: Iterable[str | Path]) -> list[Recovered]:
    """Copy, from the staging directories in ``temp_dirs`` (:func:`staging_dirs`), Ray's files of the trials whose
    folder in ``home`` exists without ``params.json``. Files already in the folder are left as they are."""
    out = []
    for temp_dir in temp_dirs:
        for staging in staging_dirs(temp_dir):
            trials, files = [], 0
            for source in sorted(staging.glob("trial_*")):
                target = home / source.name
                if not target.is_dir() or (target / "params.json").exists() or not (source / "params.json").is_file():
                    continue
                copied = sum(_copy_missing(source / name, target / name) for name in RAY_TRIAL_FILES)
                if copied:
                    trials.append(source.name)
                    files += copied
            if trials:
                out.append(Recovered(staging=staging, trials=tuple(trials), files=files))
    return out


def _copy_missing(source: Path, target: Path) -> bool:
    if not source.is_file() or target.exists():
        return False
    payload = source.read_bytes()
    if source.name in _LINE_FILES and not payload.endswith(b"\n"):
        payload = payload[:payload.rfind(b"\n") + 1]  # the driver died in the middle of a line
    atomic_write_bytes(target, payload)
    return True
