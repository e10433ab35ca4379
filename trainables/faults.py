"""Fault injection for the reliability tests (test-only: never set these variables in a real study).

A run reads ``DASTUDY_FAULT`` from its environment (Ray's worker processes inherit the driver's environment, so
a test sets it on the ``dastudy`` command it starts). The value is a comma-separated list of specs
``ACTION_at:[PHASE:]K[@seed=S]`` (``@seed=S``: only in runs whose ``runtime.seed`` is S, so that a test
picks which trial of a study gets which fault):

==========  ===========================================================================================
action      what happens at the fault point
==========  ===========================================================================================
crash       ``RuntimeError("injected fault: ...")``: an ordinary bug in a trial
sigkill     ``SIGKILL`` of the current process (the trial's worker dies without any clean-up)
nan         a NaN loss (phase ``step``) or NaN metrics (phase ``evaluate``): divergence
oom         ``torch.cuda.OutOfMemoryError("CUDA out of memory ... (injected)")``, as a full GPU share raises
pause       writes the claim file (with the process id) and sleeps ``DASTUDY_FAULT_PAUSE_S`` seconds (default
            300), so that a test can kill a process at exactly this point
==========  ===========================================================================================

Phases: ``step`` (after training iteration K; the default), ``evaluate`` (metrics of the evaluation at iteration
K computed, not yet reported), ``checkpoint`` (the trial's checkpoint of iteration K written, not yet handed to
Ray), ``start`` (a trial process starts; K may be left out: ``pause_at:start``), ``suggest`` (in the study driver:
Optuna trial number K was just asked for a new Ray trial, before Ray saved its experiment state).

With ``DASTUDY_FAULT_DIR`` set, each spec fires once across all processes: the first process to reach the point
creates ``<dir>/<spec>`` exclusively (``crash_at-step-5``) and fires; a retried trial, or any other trial,
finds the file and goes on. Without it a spec fires at most once per process.

When ``DASTUDY_FAULT`` is unset (always, outside tests) :func:`inject` returns after one dictionary lookup.
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, MutableMapping

__all__ = ["FAULT_ENV", "FAULT_DIR_ENV", "PAUSE_ENV", "Fault", "parse_faults", "inject", "claim_path"]

FAULT_ENV = "DASTUDY_FAULT"
FAULT_DIR_ENV = "DASTUDY_FAULT_DIR"
PAUSE_ENV = "DASTUDY_FAULT_PAUSE_S"
ACTIONS = ("crash", "sigkill", "nan", "oom", "pause")
PHASES = ("step", "evaluate", "checkpoint", "start", "suggest")
_SPEC = re.compile(r"^(?P<action>[a-z]+)_at:(?:(?P<phase>[a-z]+)(?::|(?=@)|$))?(?P<k>\d+)?(?:@seed=(?P<seed>-?\d+))?$")


@dataclass(frozen=True)
class Fault:
    action: str
    phase: str
    iteration: int | None  # None: any (phase "start")
    seed: int | None = None  # None: runs of any seed

    @property
    def name(self) -> str:
        where = f"{self.action}_at-{self.phase}-{'any' if self.iteration is None else self.iteration}"
        return where if self.seed is None else f"{where}-seed{self.seed}"


def parse_faults(text: str) -> tuple[Fault, ...]:
    """``"crash_at:5,pause_at:evaluate:4@seed=2"`` → faults; a malformed spec raises ValueError naming it."""
    faults = []
    for spec in (s.strip() for s in text.split(",")):
        if not spec:
            continue
        match = _SPEC.match(spec)
        action, phase = (match["action"], match["phase"] or "step") if match else ("", "")
        if not match or action not in ACTIONS or phase not in PHASES or (match["k"] is None and phase != "start"):
            raise ValueError(f"{FAULT_ENV} = {text!r}: bad spec {spec!r}; allowed: ACTION_at:[PHASE:]K[@seed=S] with "
                             f"ACTION in {', '.join(ACTIONS)} and PHASE in {', '.join(PHASES)} (K optional for start)")
        faults.append(Fault(action, phase, None if match["k"] is None else int(match["k"]),
                            None if match["seed"] is None else int(match["seed"])))
    return tuple(faults)


_cache: dict[str, tuple[Fault, ...]] = {}
_fired_here: set[str] = set()


def claim_path(fault: Fault, directory: str | os.PathLike) -> Path:
    return Path(directory) / fault.name


def _claim(fault: Fault) -> bool:
    """True for the one process that fires ``fault`` (see the module docstring)."""
    directory = os.environ.get(FAULT_DIR_ENV)
    if not directory:
        if fault.name in _fired_here:
            return False
        _fired_here.add(fault.name)
        return True
    try:
        fd = os.open(claim_path(fault, directory), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    return True


def inject(phase: str, iteration: int = 0, *, seed: int | None = None,
           values: MutableMapping[str, Any] | None = None) -> None:
    """The fault point ``phase`` at ``iteration`` of a run with ``runtime.seed = seed``: fires the matching
    injected fault, if any (see above). ``values``: the losses (phase step) or metrics (phase evaluate) a ``nan``
    fault poisons in place.
    """
    text = os.environ.get(FAULT_ENV)
    if not text:
        return
    faults = _cache.get(text)
    if faults is None:
        faults = _cache[text] = parse_faults(text)
    for fault in faults:
        if fault.phase != phase or (fault.iteration is not None and fault.iteration != iteration):
            continue
        if fault.seed is not None and fault.seed != seed:
            continue
        if not _claim(fault):
            continue
        _fire(fault, iteration, values)


def _fire(fault: Fault, iteration: int, values: MutableMapping[str, Any] | None) -> None:
    where = f"{fault.phase} of iteration {iteration} (injected by {FAULT_ENV}, test-only)"
    if fault.action == "crash":
        raise RuntimeError(f"injected fault: crash at the {where}")
    if fault.action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.action == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB at the {where}")
    if fault.action == "nan":
        if not values:
            raise RuntimeError(f"{FAULT_ENV}: nan needs a step or evaluate fault point, not {fault.phase}")
        for key, value in values.items():
            values[key] = value * float("nan") if hasattr(value, "dtype") else float("nan")
    if fault.action == "pause":
        time.sleep(float(os.environ.get(PAUSE_ENV, "300")))
