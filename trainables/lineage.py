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

__all__ = ["LINEAGE_FILE", "LineageReporter", "read_lineage", "member_history", "hparams_of"]

LINEAGE_FILE = "lineage.jsonl"


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
