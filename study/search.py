"""Searcher, scheduler and console progress for studies: Ray Tune's pieces with the bookkeeping studies need.

- :class:`StudySearch` is Ray's ``OptunaSearch`` telling Optuna what really happened to a trial. Ray tells a trial
  that ASHA stopped early as COMPLETE with its early value, which biases TPE toward configurations that look good
  early (ray-tune-optuna notes, TL;DR 5); here such a trial is told PRUNED (its intermediate values are kept, Optuna
  takes the last one as its value). A failed trial is told FAIL with its reason as a user attribute; a non-finite
  value is never told (Optuna refuses NaN and the trial would stay RUNNING forever).
- :class:`PersistentASHA` is ASHA whose rungs survive ``Tuner.restore`` (Ray rebuilds schedulers empty, ray#30838):
  the recorded values are written to ``asha_rungs.json`` in the study directory and read back on the first use.
- :class:`StudyProgress` prints one line per trial event instead of Ray's tables (``verbose=0``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from trainables import faults

__all__ = ["StudySearch", "PersistentASHA", "StudyProgress", "FINISHED_KEY", "FAILURE_FILE", "read_failure",
           "trial_dirname", "short_param"]

# Reported (1.0) with the last evaluation of a run that trained all its iterations; absent when stopped early.
FINISHED_KEY = "finished"
# Written by the trainable into its trial directory before it raises: why it failed (diverged, OOM, ...).
FAILURE_FILE = "failure.json"


def trial_dirname(trial: Any) -> str:
    """Short, stable trial directory names (Ray's default repeats every parameter in the name)."""
    return f"trial_{trial.trial_id}"


def short_param(name: str) -> str:
    """The parameter's display name, as everywhere else (:func:`study.spaces.param_label`): ``optim.lr@deeplabv2_tiny``
    → ``lr``, ``adapt.lambda_adv_main`` → ``lambda_adv``, ``model.name`` → ``backbone``."""
    from study.spaces import param_label

    return param_label(name)


def read_failure(trial_dir: Path) -> str | None:
    path = Path(trial_dir) / FAILURE_FILE
    try:
        return json.loads(path.read_text())["reason"]
    except (OSError, ValueError, KeyError):
        return None


class StudySearch(OptunaSearch):
    """OptunaSearch with honest final states (PRUNED / FAIL with reason) and the Ray trial id on each Optuna trial.

    A trial that ended without error, without having trained all its iterations (no :data:`FINISHED_KEY` in its
    last result) and before ``max_t`` evaluations was stopped by the scheduler: PRUNED.
    """

    def __init__(self, space, *, metric: str, mode: str, max_t: int, study_dir: str | os.PathLike, **kwargs):
        super().__init__(space, metric=metric, mode=mode, **kwargs)
        self._max_t = max_t
        self._study_dir = str(study_dir)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._ot_study is not None:
            self._adopt_orphan(trial_id)
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            ot_trial.set_user_attr("trial_dir", f"trial_{trial_id}")
            faults.inject("suggest", ot_trial.number)  # test-only (DASTUDY_FAULT): asked, not yet saved by Ray
        return config

    def _adopt_orphan(self, trial_id: str) -> None:
        """After a driver crash the journal can hold an Optuna trial asked after Ray's last experiment snapshot:
        RUNNING, unknown to the restored searcher, never started. The next new Ray trial takes it over (its
        sampled values are reused by the define-by-run function), so the study neither keeps a RUNNING trial
        forever nor ends with more trials than ``num_samples``."""
        known = {t.number for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        orphans = [t for t in running if t.number not in known]
        if orphans:
            orphan = min(orphans, key=lambda t: t.number)
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan._trial_id)
            self._ot_trials[trial_id].set_user_attr("adopted_from", orphan.user_attrs.get("ray_trial_id", ""))

    def _already_recorded(self, trial_id: str) -> bool:
        """True when Optuna holds a final state for this trial although Ray runs it again: the driver died between
        Optuna's tell and Ray's next state snapshot, and `study resume` re-runs the trial. The recorded outcome stands
        (a re-run from the checkpoint reproduces it), and Optuna refuses updates to a finished trial."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and not self._already_recorded(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        if self._already_recorded(trial_id):
            self._completed_trials.add(trial_id)
            return
        ot_trial = self._ot_trials[trial_id]
        value = (result or {}).get(self.metric)
        iteration = int((result or {}).get("training_iteration", 0) or 0)
        finished = bool((result or {}).get(FINISHED_KEY))
        try:
            self._tell_state(ot_trial, value, error=error, iteration=iteration, finished=finished, trial_id=trial_id)
        except Exception as exc:  # never let bookkeeping take the study down; the state stays visible
            print(f"warning: could not record trial {trial_id} in Optuna: {exc}", file=sys.stderr)
        self._completed_trials.add(trial_id)

    def _tell(self, ot_trial, value: float | None = None, *, state) -> None:
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except RuntimeError as exc:
            # GridSampler calls study.stop() once the grid is exhausted, which raises outside study.optimize;
            # Optuna has stored the state already (in a `finally`), so nothing is lost.
            if "Study.stop" not in str(exc):
                raise

    def _tell_state(self, ot_trial, value, *, error: bool, iteration: int, finished: bool, trial_id: str) -> None:
        if error or not isinstance(value, (int, float)) or not math.isfinite(value):
            reason = read_failure(Path(self._study_dir) / f"trial_{trial_id}") if self._study_dir else None
            if reason is None:
                reason = (f"error (see the trial's error.txt in {self._study_dir or 'the study storage'})" if error
                          else f"no finite {self.metric} reported")
            ot_trial.set_user_attr("fail_reason", reason[:2000])
            self._tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        elif not finished and iteration < self._max_t:
            # Ray hands the result that made the scheduler stop the trial to on_trial_complete only: record it as
            # the last intermediate value, which Optuna then takes as the PRUNED trial's value.
            ot_trial.report(float(value), iteration)
            ot_trial.set_user_attr("pruned_at", iteration)
            self._tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self._tell(ot_trial, float(value), state=optuna.trial.TrialState.COMPLETE)


class PersistentASHA(ASHAScheduler):
    """ASHA (Li et al., https://arxiv.org/abs/1810.05934) whose rung records are saved in ``state_path``."""

    def __init__(self, *, state_path: str | os.PathLike, **kwargs):
        super().__init__(**kwargs)
        self._state_path = str(state_path)
        self._loaded = False

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            saved = json.loads(Path(self._state_path).read_text())
        except (OSError, ValueError):
            return
        for bracket, rungs in zip(self._brackets, saved.get("brackets", [])):
            for (milestone, recorded), (saved_milestone, saved_recorded) in zip(bracket._rungs, rungs):
                if float(milestone) == float(saved_milestone):
                    for trial_id, value in saved_recorded.items():
                        recorded.setdefault(trial_id, value)

    def _save(self) -> None:
        state = {"brackets": [[[m, dict(r)] for m, r in b._rungs] for b in self._brackets]}
        tmp = f"{self._state_path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(state, fh)
        os.replace(tmp, self._state_path)

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_once()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _fmt_metric(metric: str, value: Any) -> str:
    """mIoU and pixel accuracy (fractions in reports) as percentages, like the tables."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    if metric.rsplit("/", 1)[-1].startswith(("mIoU", "pixel_acc")):
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


class StudyProgress(Callback):
    """One line per trial event on stdout: start (with its parameters), each evaluation, end state, failure."""

    def __init__(self, *, metric: str, mode: str, max_t: int, num_samples: int):
        self.metric, self.mode, self.max_t, self.num_samples = metric, mode, max_t, num_samples
        self._best: tuple[float, str] | None = None
        self._t0 = time.time()
        self._ended = 0

    def _line(self, text: str) -> None:
        elapsed = time.time() - self._t0
        print(f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] {text}", file=sys.stdout, flush=True)

    def _better(self, value: float) -> bool:
        if self._best is None:
            return True
        return value > self._best[0] if self.mode == "max" else value < self._best[0]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        params = " ".join(f"{short_param(k)}={_fmt(v)}" for k, v in sorted(trial.config.items()))
        self._line(f"{trial_dirname(trial)} started   {params}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        step = result.get("training_iteration")
        note = ""
        if isinstance(value, (int, float)) and math.isfinite(value) and self._better(value):
            self._best = (float(value), trial_dirname(trial))
            note = "  (highest so far)"
        self._line(f"{trial_dirname(trial)} eval {step}/{self.max_t}  {self.metric}={_fmt_metric(self.metric, value)}"
                   f"{note}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        step = int(result.get("training_iteration", 0) or 0)
        state = "COMPLETE" if result.get(FINISHED_KEY) or step >= self.max_t else f"PRUNED at {step}/{self.max_t}"
        self._ended += 1
        self._line(f"{trial_dirname(trial)} {state}  {self.metric}={_fmt_metric(self.metric, result.get(self.metric))}"
                   f"   [{self._ended}/{self.num_samples} trials ended]")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason = read_failure(Path(trial.storage.trial_fs_path)) if trial.storage else None
        if reason is None and trial.error_file:
            reason = "see " + str(trial.error_file)
        self._ended += 1
        self._line(f"{trial_dirname(trial)} FAILED  {reason or ''}   [{self._ended}/{self.num_samples} trials ended]")

    def on_experiment_end(self, trials, **info) -> None:
        errors = sum(t.status == "ERROR" for t in trials)
        self._line(f"study ended: {len(trials)} trials, {errors} failed")
