"""Where a study lives and the files that define it: :class:`StudyLocation` (its local home and Ray's storage),
:func:`locate` (a name and ``--storage`` to a location), :func:`write_study_files` (``study.toml``,
``space.json``, ``provenance.json``, written once when a study starts) and :func:`load_study_dir` (read back,
without Ray). Everything that reads or resumes a study starts here; nothing here starts Ray."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.io import atomic_write_bytes
from study.config.files import dump_toml, load_toml
from study.config.resources import is_uri
from study.config.storage_urls import mask_secrets
from study.config.study_config import StudyConfig, study_from_dict, study_to_dict

__all__ = ["STUDY_FILES", "StudyLocation", "default_storage", "locate", "write_study_files", "load_study_dir",
           "package_versions", "write_json", "relocated_storage", "relocated_checkpoint"]

STUDY_FILES = ("study.toml", "space.json", "provenance.json")


def default_storage() -> str:
    return os.environ.get("DASTUDY_STORAGE") or "studies"


@dataclass(frozen=True)
class StudyLocation:
    """``home``: the local (or network-mounted) study directory with study.toml, space.json, provenance.json and
    the Optuna journal. ``ray_storage``: Ray's storage_path; with a filesystem path Ray's experiment directory is
    ``home`` itself, with an object-store URI Ray writes trials to ``<uri>/<name>`` and ``home`` stays local."""

    home: Path
    ray_storage: str
    name: str

    @property
    def shared_fs(self) -> bool:
        return not is_uri(self.ray_storage)

    @property
    def experiment_path(self) -> str:
        return str(self.home) if self.shared_fs else f"{self.ray_storage.rstrip('/')}/{self.name}"


def locate(name: str, storage: str | None = None) -> StudyLocation:
    storage = storage or default_storage()
    if is_uri(storage):
        local = Path(os.environ.get("DASTUDY_HOME", "studies")).resolve()
        return StudyLocation(home=local / name, ray_storage=storage, name=name)
    root = Path(storage[len("file://"):] if storage.startswith("file://") else storage).resolve()
    return StudyLocation(home=root / name, ray_storage=str(root), name=name)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("dastudy", "ray", "optuna", "torch", "torchvision", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def write_study_files(study: StudyConfig, location: StudyLocation, *, extra: dict[str, Any]) -> None:
    from trainables.rundir import git_revision  # deferred: trainables.rundir imports torch; readers need none

    home = location.home
    home.mkdir(parents=True, exist_ok=False)
    (home / "study.toml").write_text(f"# resolved study {study.name!r}; `dastudy study resume` reads this file\n"
                                     + dump_toml(study_to_dict(study)))
    write_json(home / "space.json", study.describe_space())
    write_json(home / "provenance.json", {
        "versions": package_versions(), "git_revision": git_revision(), "command": [mask_secrets(a) for a in sys.argv],
        "cwd": os.getcwd(),
        "hostname": platform.node(), "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sampler": study.search.sampler, "sampler_seed": study.search.seed, "metric": study.study_metric,
        "storage": location.ray_storage, "experiment_path": location.experiment_path, "resumes": [], **extra})


def load_study_dir(home: Path) -> tuple[StudyConfig, dict[str, Any]]:
    """The resolved study and its provenance from a study directory (works without Ray)."""
    home = Path(home)
    if not (home / "study.toml").is_file():
        raise FileNotFoundError(f"{home}: not a study directory (no study.toml)")
    study = study_from_dict(load_toml(home / "study.toml", "presets"), source=str(home / "study.toml"), cwd=home)
    try:
        provenance = json.loads((home / "provenance.json").read_text())
    except (OSError, ValueError):
        provenance = {}
    return study, provenance


def relocated_storage(provenance: dict[str, Any], home: Path) -> str:
    """Ray's storage for a study now in ``home``: an object-store URI stays as recorded; a filesystem storage is
    the directory that holds the study now, wherever the study was when it ran (it may have been moved or copied,
    or be mounted elsewhere)."""
    recorded = provenance.get("storage")
    if recorded and is_uri(recorded) and not recorded.startswith("file://"):
        return recorded
    return str(Path(home).parent)


def relocated_checkpoint(recorded: str | None, provenance: dict[str, Any], home: Path) -> str | None:
    """The baseline checkpoint every new trial starts from, looked up under the study's current storage first
    (``<storage>/baselines/...`` moves with the studies), then where it was when the study ran."""
    if not recorded:
        return None
    old_root = Path(provenance.get("experiment_path") or "").parent
    try:
        moved = Path(home).parent / Path(recorded).relative_to(old_root)
    except ValueError:
        moved = None
    if moved is not None and moved.is_file():
        return str(moved)
    return recorded
