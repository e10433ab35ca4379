"""The run directory: creation without ever clobbering foreign files, resolved config, provenance, result.

A directory is one of ours when it holds both ``config.toml`` and ``provenance.json``. Only such a directory can
be overwritten, and only on request; then only the files the run itself wrote are removed: they are listed in its
manifest (``.dastudy-manifest.json``), so a user's ``checkpoints/best_keep_for_paper.pt`` or another program's
files in ``tb/`` stay.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trainables.checkpoint import CheckpointError, dastudy_version
from trainables.config import TrainConfig, to_dict

__all__ = ["RUN_FILES", "MANIFEST", "RunManifest", "is_run_dir", "prepare_run_dir", "write_config", "write_provenance", "append_resume",
           "write_json_atomic", "git_revision", "last_checkpoint", "best_checkpoint"]

RUN_FILES = ("config.toml", "provenance.json", "metrics.jsonl", "result.json")
RUN_DIRS = ("checkpoints", "tb")  # written by the engine and the TensorBoard reporter
_MARKERS = ("config.toml", "provenance.json")
MANIFEST = ".dastudy-manifest.json"
# A run directory written before manifests existed: the files the engine writes under fixed names.
_LEGACY_FILES = (*RUN_FILES, "checkpoints/last.pt", "checkpoints/best.pt")
_EVENTS_PREFIX = "events.out.tfevents."


class RunManifest:
    """The files one run directory's runs wrote (relative POSIX paths in ``.dastudy-manifest.json``).

    TensorBoard names its event files itself, so event files under ``tb/`` that were not there when this object
    was made (the start of this run) are the run's own; files that were there are left to whoever wrote them.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._foreign_events = set(self._event_files())

    def _event_files(self) -> list[str]:
        tb = self.run_dir / "tb"
        if not tb.is_dir():
            return []
        return sorted(p.relative_to(self.run_dir).as_posix() for p in tb.rglob(f"{_EVENTS_PREFIX}*") if p.is_file())

    def record(self, *paths: str | Path) -> None:
        """Add files (absolute or relative to the run directory) to the manifest; a no-op when all are listed."""
        listed = read_manifest(self.run_dir) or []
        new = []
        for path in paths:
            path = Path(path)
            relative = (path.relative_to(self.run_dir) if path.is_absolute() else path).as_posix()
            if relative not in listed and relative not in new:
                new.append(relative)
        if new:
            write_json_atomic(self.run_dir / MANIFEST, {"files": sorted([*listed, *new])})

    def record_new_events(self) -> None:
        self.record(*[p for p in self._event_files() if p not in self._foreign_events])


def read_manifest(run_dir: str | Path) -> list[str] | None:
    """The manifest's file list (None without a readable manifest)."""
    try:
        files = json.loads((Path(run_dir) / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else None


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def best_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "best.pt"


def is_run_dir(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in _MARKERS)


def prepare_run_dir(run_dir: str | Path, *, resume: bool | str | Path = False, overwrite: bool = False) -> Path | None:
    """Create or reuse ``run_dir``; returns the checkpoint to resume from (None for a fresh run).

    - fresh: the directory must not exist or be empty; otherwise ``FileExistsError`` says what to do;
    - ``overwrite=True``: allowed only on a dastudy run directory; this package's files are removed, others kept;
    - ``resume=True``: continue from ``checkpoints/last.pt``; ``resume=<path>``: from that checkpoint file.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues a run, overwrite replaces it")
    if resume:
        checkpoint = last_checkpoint(run_dir) if resume is True else Path(resume)
        if checkpoint.is_dir():
            raise CheckpointError(f"cannot resume: {checkpoint} is a directory; give the checkpoint file (e.g. "
                                  f"{checkpoint / 'checkpoints' / 'last.pt'})")
        if not checkpoint.is_file():
            raise CheckpointError(f"cannot resume: {checkpoint} does not exist"
                                  + ("" if run_dir.exists() else f" (no run directory {run_dir})"))
        if run_dir.exists() and not run_dir.is_dir():
            raise FileExistsError(f"{run_dir} exists and is not a directory")
        # Resuming appends to metrics.jsonl and replaces result.json: only in a run directory or an empty one.
        if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run_dir(run_dir):
            raise FileExistsError(f"{run_dir} is not empty and is not a dastudy run directory (no config.toml + "
                                  f"provenance.json): refusing to resume into it; choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        return checkpoint
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"{run_dir} exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"run directory {run_dir} already exists and is not empty; pass --overwrite to "
                                  f"replace that run, --resume to continue it, or choose another --out")
        if not is_run_dir(run_dir):
            raise FileExistsError(f"{run_dir} is not empty and is not a dastudy run directory (no config.toml + "
                                  f"provenance.json): refusing to overwrite it; choose another --out")
        _remove_run_files(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _remove_run_files(run_dir: Path) -> None:
    """Remove the files the manifest lists (without one: the engine's fixed file names and tb/ event files), the
    temporary files of this package's atomic writes, and then checkpoints/ and tb/ only if that left them empty."""
    root = run_dir.resolve()
    listed = read_manifest(run_dir)
    if listed is None:
        listed = [*_LEGACY_FILES, *RunManifest(run_dir)._event_files()]
    ours = {*RUN_FILES, "last.pt", "best.pt"}
    for folder in (run_dir, run_dir / "checkpoints"):  # leftovers of a killed atomic write: .<our name>.XXXX.tmp
        if folder.is_dir():
            listed += [p.relative_to(run_dir).as_posix() for p in folder.glob(".*.tmp")
                       if p.is_file() and p.name[1:].rsplit(".", 2)[0] in ours]
    for relative in listed:
        path = (run_dir / relative).resolve()
        if path.is_relative_to(root) and path != root and path.is_file():  # a manifest never leads outside
            path.unlink()
    for folder in (run_dir / "checkpoints", run_dir / "tb"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (run_dir / MANIFEST).unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=str, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    import tomli_w

    fd, tmp = tempfile.mkstemp(prefix=".config.toml.", suffix=".tmp", dir=run_dir)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# resolved configuration of run {cfg.name!r} (written by dastudy {dastudy_version()})\n")
        fh.write(tomli_w.dumps(to_dict(cfg)))
    os.replace(tmp, Path(run_dir) / "config.toml")


def git_revision() -> str | None:
    """The commit of the dastudy source tree, with ``+dirty`` when it has local changes (None outside git)."""
    source = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "dastudy": dastudy_version()}


def write_provenance(run_dir: Path, cfg: TrainConfig, *, device: str, extra: dict[str, Any] | None = None) -> None:
    write_json_atomic(Path(run_dir) / "provenance.json", {
        "versions": _versions(), "git_revision": git_revision(), "hostname": socket.gethostname(),
        "platform": platform.platform(), "command": sys.argv, "cwd": os.getcwd(), "seed": cfg.runtime.seed,
        "device": device, "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumes": [], **(extra or {}),
    })


def append_resume(run_dir: Path, *, checkpoint: Path, iteration: int, device: str) -> None:
    """Record a resume in ``provenance.json`` (the original provenance stays as it was)."""
    path = Path(run_dir) / "provenance.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        data = {"versions": _versions(), "resumes": []}
    data.setdefault("resumes", []).append({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": str(checkpoint), "iteration": iteration,
        "command": sys.argv, "hostname": socket.gethostname(), "device": device, "versions": _versions(),
        "git_revision": git_revision(),
    })
    write_json_atomic(path, data)
