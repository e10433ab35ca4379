"""What ``study resume`` checks before it starts Ray: that the study still has trials to run
(:func:`finished_trials`, read from its Optuna storage), and that the study file's search space, sampler seed and
metric are the ones it ran with (:func:`space_changes`; an edited space is refused unless the user allows it)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from study.config.resources import PreflightError
from study.config.study_config import StudyConfig
from study.state.journal import superseded_numbers
from study.state.optuna_storage import optuna_storage

__all__ = ["space_changes", "SpaceChanged", "StudyFinished", "finished_trials"]


def space_changes(study: StudyConfig, home: Path, provenance: dict[str, Any] | None = None) -> list[str]:
    """What differs between the study file now and what the study ran with: the resolved search space (name,
    sampler, every dimension; space.json, written by `study run` and never rewritten) and the sampler seed and
    metric (provenance.json). ``[]`` if nothing; each item names the key, the value that ran and the new one."""
    try:
        space = json.loads((Path(home) / "space.json").read_text())
    except (OSError, ValueError):
        space = {}  # nothing to compare with (a study from before space.json)
    now_space = json.loads(json.dumps(study.describe_space(), default=str))
    ran = {f"space.{k}": space[k] for k in ("name", "sampler", "dimensions") if k in space}
    now = {f"space.{k}": now_space.get(k) for k in ("name", "sampler", "dimensions") if k in space}
    for key, value in (("sampler_seed", study.search.seed), ("metric", study.study_metric)):
        if key in (provenance or {}):
            ran[key], now[key] = provenance[key], value
    flat_ran, flat_now = _flatten(ran), _flatten(now)
    out = []
    for key in sorted(set(flat_ran) | set(flat_now)):
        if flat_ran.get(key, "<absent>") != flat_now.get(key, "<absent>"):
            out.append(f"{key}: {flat_ran.get(key, '<absent>')!r} -> {flat_now.get(key, '<absent>')!r}")
    return out


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list) and any(isinstance(x, (dict, list)) for x in data):
        out = {}
        for index, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): data}


class SpaceChanged(PreflightError):
    """The study file's search space differs from the one the study ran with."""


class StudyFinished(Exception):
    """``study resume`` of a study whose trials have all ended: nothing to do (no Ray is started)."""


def finished_trials(study: StudyConfig, home: Path) -> str | None:
    """``"8 of 8 trials COMPLETE or PRUNED"`` when every trial the study asks for has ended for good in its Optuna
    storage, else None. A FAILED trial is not an end: a resume runs it again (``resume_errored``)."""
    import optuna

    if study.search.storage is None and not (home / "optuna.journal").is_file():
        return None
    try:
        trials = optuna.load_study(study_name=study.name, storage=optuna_storage(study, home)).get_trials(
            deepcopy=False)
    except KeyError:  # no study in the storage yet
        return None
    rerun = superseded_numbers(trials)
    states = [t.state.name for t in trials if t.number not in rerun]
    if len(states) < study.num_samples or any(s not in ("COMPLETE", "PRUNED") for s in states):
        return None
    return f"{len(states)} of {study.num_samples} trials COMPLETE or PRUNED"
