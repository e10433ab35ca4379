"""Lineage of a population-based-training member: its hyperparameters over iterations and whose state it cloned.

Population-based training (Jaderberg et al. 2017, https://arxiv.org/abs/1711.09846) restarts a weak member from
a strong member's checkpoint with perturbed hyperparameters, so a member's hyperparameters are a *schedule* and its
weights have ancestors. :class:`LineageReporter` appends that history to ``<run>/lineage.jsonl`` as it happens,
written by the member itself (it survives a driver kill and travels with the run directory to an object store):

- ``{"event": "start" | "resume" | "clone", "iteration": k, "time": t, "hparams": {...}}``, once per (re)start;
  a clone also has ``"donor"`` (the run whose checkpoint it continued) and ``"donor_iteration"`` (= ``iteration``);
- ``{"event": "eval", "iteration": k, "time": t, "hparams": {...}, "metric": name, "value": v}`` at each evaluation:
  the values in effect for the iterations that led to it.

:func:`member_history` reads it back as one consistent trajectory: the evaluations of the segments the member's
current state descends from, each tagged with the run that trained it. Nothing here imports Ray.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from trainables.reporters import Reporter

if TYPE_CHECKING:
    from trainables.engine import Trainer

__all__ = ["LINEAGE_FILE", "PBT_MUTABLE_KEY", "LineageReporter", "read_lineage", "member_history", "hparams_of", "schedule_segments",
           "load_schedule", "ScheduleReporter"]

LINEAGE_FILE = "lineage.jsonl"
PBT_MUTABLE_KEY = "pbt_mutable"  # TrialContext.extra of a PBT study: the config keys a clone may change


def hparams_of(cfg: Any, keys: Iterable[str]) -> dict[str, Any]:
    """The values of dotted config ``keys`` (``adapt.lambda_adv_main``) in the run config ``cfg``."""
    out = {}
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        out[key] = value
    return out


class LineageReporter(Reporter):
    """Appends the member's (re)starts and evaluations to ``<run_dir>/lineage.jsonl`` (see the module docstring).

    ``keys``: the mutated config keys; ``metric``: the study metric; ``origin``: what the engine was restored from,
    ``(run name, iteration)`` or None for a fresh start (set before ``fit``)."""

    def __init__(self, run_dir: str | Path, *, keys: Iterable[str], metric: str, name: str):
        self.path = Path(run_dir) / LINEAGE_FILE
        self.keys, self.metric, self.name = tuple(keys), metric, name
        self.origin: tuple[str, int] | None = None

    def _append(self, record: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def on_start(self, trainer: Trainer) -> None:
        record: dict[str, Any] = {"event": "start", "iteration": trainer.iteration, "time": time.time(),
                                  "hparams": hparams_of(trainer.cfg, self.keys)}
        if self.origin is not None:
            donor, iteration = self.origin
            record["event"] = "resume" if donor == self.name else "clone"
            if donor != self.name:
                record.update(donor=donor, donor_iteration=iteration)
        self._append(record)

    def on_evaluate(self, iteration: int, metrics: dict[str, float], trainer: Trainer) -> None:
        value = metrics.get(self.metric)
        self._append({"event": "eval", "iteration": iteration, "time": time.time(),
                      "hparams": hparams_of(trainer.cfg, self.keys), "metric": self.metric,
                      "value": value if isinstance(value, (int, float)) and math.isfinite(value) else None})


def read_lineage(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``<run_dir>/lineage.jsonl`` (a line torn by a kill is skipped)."""
    path = Path(run_dir) / LINEAGE_FILE
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def member_history(name: str, run_dir_of: Callable[[str], Path], *, until: float | None = None,
                   _depth: int = 0) -> list[dict[str, Any]]:
    """The evaluations the current state of member ``name`` descends from, oldest first, each with ``"run"`` (the
    member that trained that segment). A clone at iteration k takes its donor's history up to k *as it was at the
    time of the clone* (``until``: only records written before that time), then its own; a resume drops the
    evaluations after its checkpoint (lost work). ``run_dir_of`` maps a member name to its run directory."""
    if _depth > 10_000:
        raise RuntimeError(f"lineage of {name}: a cycle of clones")
    history: list[dict[str, Any]] = []
    for record in read_lineage(run_dir_of(name)):
        if until is not None and record.get("time", 0.0) > until:
            break
        event, iteration = record.get("event"), int(record.get("iteration", 0))
        if event == "eval":
            history.append({**record, "run": name})
        elif event == "resume":
            history = [r for r in history if r["iteration"] <= iteration]
        elif event == "clone":
            donor = member_history(str(record["donor"]), run_dir_of, until=record.get("time"), _depth=_depth + 1)
            history = [r for r in donor if r["iteration"] <= iteration]
        elif event == "start":
            history = []
    return history


def schedule_segments(history: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """``[(from_iteration, hparams), ...]`` of a member's history (:func:`member_history`): an evaluation at k with
    values h means h trained the iterations since the previous evaluation. Consecutive equal values are merged."""
    segments: list[tuple[int, dict[str, Any]]] = []
    start = 0
    for record in history:
        if not segments or segments[-1][1] != record["hparams"]:
            segments.append((start, dict(record["hparams"])))
        start = int(record["iteration"])
    return segments


def load_schedule(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The schedule in ``path``: a PBT member's ``<study>/<trial>/run/lineage.jsonl`` (its donors are read from the
    sibling trial directories) or a JSON file ``{"segments": [{"iteration": k, "hparams": {key: value}}, ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"schedule {path}: no such file (give a member's run/lineage.jsonl or a JSON file)")
    if path.name == LINEAGE_FILE:
        study_dir = path.parent.parent.parent
        history = member_history(path.parent.parent.name, lambda name: study_dir / name / path.parent.name)
        segments = schedule_segments(history)
    else:
        try:
            data = json.loads(path.read_text())
            segments = [(int(s["iteration"]), dict(s["hparams"])) for s in data["segments"]]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"schedule {path}: not a lineage.jsonl nor a JSON file with "
                             f"{{\"segments\": [{{\"iteration\": k, \"hparams\": {{...}}}}]}} ({err})") from None
    if not segments or segments[0][0] != 0 or any(a[0] >= b[0] for a, b in zip(segments, segments[1:])):
        raise ValueError(f"schedule {path}: segments must start at iteration 0 and increase "
                         f"({[s[0] for s in segments]})")
    return segments


class ScheduleReporter(Reporter):
    """Replays a schedule in one run: at each segment's first iteration (an evaluation of this run, where PBT
    changes values too) the engine's hyperparameters become the segment's (:meth:`Trainer.set_hyperparameters`),
    in effect from the next iteration. Like Ray's PopulationBasedTrainingReplay, with this project's engine."""

    def __init__(self, segments: list[tuple[int, dict[str, Any]]]):
        self.segments = {int(start): dict(values) for start, values in segments}

    def on_start(self, trainer: Trainer) -> None:
        interval = trainer.cfg.eval.interval
        off = [k for k in self.segments if k % interval and k != trainer.total_iterations]
        if off:
            from trainables.config import ConfigError

            raise ConfigError("<schedule>", "iteration", off[0],
                              f"0 or a multiple of eval.interval ({interval}): values change at evaluations")
        current = max(k for k in self.segments if k <= trainer.iteration)
        trainer.set_hyperparameters(self.segments[current])

    def on_evaluate(self, iteration: int, metrics: dict[str, float], trainer: Trainer) -> None:
        if iteration in self.segments:
            trainer.set_hyperparameters(self.segments[iteration])
