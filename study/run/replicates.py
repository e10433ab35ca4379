"""Replicates through search and early stopping: every configuration runs on every seed of ``search.seeds``.

A study that declares ``search.seeds = [1, 2, 3]`` measures each configuration the sampler proposes (TPE, random,
grid) on each of those run seeds (``runtime.seed``), so that a configuration is judged by the mean of its
replicates rather than by one lucky or unlucky seed (issue 18):

- :class:`ReplicateSearch` wraps :class:`study.run.search.StudySearch`: Optuna is asked **once per configuration**, the
  same configuration goes to one Ray trial per seed, and Optuna is told **one value per configuration**, the mean
  of its replicates, when all of them have ended. ``num_samples`` counts configurations (Optuna trials); Ray runs
  ``num_samples × len(seeds)`` trials, ``max_concurrent_trials`` of them at a time (processes, not
  configurations). What Optuna is told:

  * every replicate ended without error: the mean over replicates of the metric at the **largest evaluation all of
    them reached** (with :class:`ReplicateASHA`, the rung the configuration was decided at), COMPLETE when that is
    the full run, else PRUNED (``pruned_at``); the intermediate values are the replicate means at each earlier
    evaluation all reached; ``seed_values`` holds each seed's value behind the mean;
  * a replicate failed: FAIL, with that replicate's reason (a mean over the survivors would be a different
    estimate from the other configurations');
  * a non-finite value in any replicate: FAIL ("no finite ... reported"), as for a single trial.

- :class:`ReplicateASHA` is asynchronous successive halving (Li et al., https://arxiv.org/abs/1810.05934) whose
  unit is the configuration: at a rung it compares the **mean of the configuration's replicates** with the other
  configurations' means recorded at that rung (the same quantile cutoff as Ray's ASHA), so a configuration's seeds
  are promoted or stopped together. A replicate that reaches a rung before its siblings keeps training until the
  group is decided; then all stop or all go on. Its rung records and stop decisions are saved in
  ``replicate_rungs.json`` in the study directory (Ray does not restore scheduler state, ray#30838).

  With fewer concurrent trials than seeds the first replicates cannot wait for the last one to start and run to
  the end; set ``max_concurrent_trials`` to at least ``len(search.seeds)`` (benchmarks/replicate_asha.py measures
  both).

Both are pickled by Ray like the objects they build on; locations come back through ``bind`` (study/run/search.py).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from data.io import atomic_write_bytes
from study.run.search import FINISHED_KEY, StudySearch, Unbound, note_optuna_number
from study.run.snapshots import SnapshotPacing

__all__ = ["SEED_KEY", "ReplicateSearch", "ReplicateASHA", "group_key", "rung_milestones"]

SEED_KEY = "runtime.seed"  # the run config key a replicate's seed is applied to (trainables.tune.apply_overrides)


def group_key(config: Mapping[str, Any], seed_key: str = SEED_KEY) -> str:
    """The configuration a trial replicates: its config without the seed, as canonical JSON (the searcher hands
    every replicate a copy of one dict, so equal configurations give equal keys whatever the seed order)."""
    return json.dumps({k: v for k, v in config.items() if k != seed_key}, sort_keys=True, default=repr)


def _mean(values: Sequence[float]) -> float:
    """The replicate mean, exactly rounded (math.fsum): the same bits whatever order the seeds arrived in."""
    return math.fsum(values) / len(values)


# ---------------------------------------------------------------------------------------------------------
# searcher


class ReplicateSearch(Searcher):
    """One Optuna trial per configuration, one Ray trial per (configuration, seed); see the module docstring.

    A configuration is a *group* named after its first Ray trial (the Optuna trial's ``trial_dir``); its seeds are
    handed out in the declared order before the next configuration is asked, so TPE learns from finished groups
    as early as the concurrency allows."""

    STATE_VERSION = 1

    def __init__(self, search: StudySearch, *, seeds: Sequence[int], seed_key: str = SEED_KEY):
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds = {list(seeds)!r}: need a non-empty list of distinct seeds")
        super().__init__(metric=search.metric, mode=search.mode)
        self.search = search  # not `searcher`: Ray's SearchGenerator takes an object with `.searcher` as a wrapper
        self.seeds = [int(s) for s in seeds]
        self.seed_key = seed_key
        # group id -> {"config": the sampled config, "trials": {ray trial id: seed}, "ends": {ray trial id: end},
        #              "curves": {ray trial id: {evaluation: value}}, "told": bool}
        self._groups: dict[str, dict[str, Any]] = {}
        self._trial_group: dict[str, str] = {}

    # -- the wrapped searcher's location and space (study/run/tuner.py binds on resume) ---------------------------

    def bind(self, **kwargs) -> None:
        self.search.bind(**kwargs)

    def bind_space(self, space) -> None:
        self.search.bind_space(space)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.search.set_search_properties(metric, mode, config, **spec)

    # -- state: one JSON file with the wrapped searcher's state nested (no pickle is loaded by dastudy) -------

    def state_dict(self) -> dict:
        return {"version": self.STATE_VERSION, "seeds": self.seeds, "groups": self._groups,
                "search": self.search.state_dict()}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as fh:
            fh.write(json.dumps(self.state_dict()))

    save_to_dir = StudySearch.save_to_dir  # whole files only in Ray's staging directory (issue 12)

    def restore(self, checkpoint_path: str) -> None:
        """The groups and the wrapped searcher's state at Ray's last snapshot; ends that all replicates of a
        group reached before the kill but Optuna had not been told are told now."""
        if self.search._ot_study is None:
            raise Unbound("ReplicateSearch")
        with open(checkpoint_path) as fh:
            saved = json.load(fh)
        if saved.get("seeds") != self.seeds:
            raise ValueError(f"{checkpoint_path}: saved with seeds {saved.get('seeds')!r}, this study declares "
                             f"{self.seeds!r}; search.seeds cannot change on resume")
        self._groups = {gid: {**g, "curves": {t: {int(k): v for k, v in c.items()} for t, c in g["curves"].items()}}
                        for gid, g in saved["groups"].items()}
        self._trial_group = {tid: gid for gid, g in self._groups.items() for tid in g["trials"]}
        self.search.load_state_dict(saved["search"])
        for tid, gid in self._trial_group.items():
            self._note_number(tid, gid)
        for gid in list(self._groups):
            self._tell_if_ended(gid)

    # -- Ray's searcher interface ----------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        for gid, group in self._groups.items():
            left = self._seeds_left(group)
            if left:
                return self._assign(gid, trial_id, left[0])
        config = self.search.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        self._groups[trial_id] = {"config": dict(config), "trials": {}, "ends": {}, "curves": {}, "told": False}
        self._annotate(trial_id, "seeds", self.seeds)
        return self._assign(trial_id, trial_id, self.seeds[0])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        gid = self._trial_group.get(trial_id)
        value, step = result.get(self.metric), result.get("training_iteration")
        if gid is None or step is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        self._groups[gid]["curves"].setdefault(trial_id, {})[int(step)] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        gid = self._trial_group.get(trial_id)
        if gid is None:
            return
        result = result or {}
        if not error:
            self.on_trial_result(trial_id, result)  # the result that ended it reaches only this hook
        self._groups[gid]["ends"][trial_id] = {"iteration": int(result.get("training_iteration", 0) or 0),
                                               "finished": bool(result.get(FINISHED_KEY)), "error": bool(error)}
        self._tell_if_ended(gid)

    def record_reruns(self, results) -> int:
        """After ``fit`` of a resumed study: a configuration Optuna holds as FAIL whose failed replicates this run
        trained to an end without error is recorded again from all its replicates, and the end of each replicate
        that Ray's restored ``ConcurrencyLimiter`` did not pass on is recorded now, so that its configuration is
        told once all its replicates have ended (StudySearch.record_reruns says why both happen)."""
        recorded = 0
        for result in results:
            trial_id = (result.metrics or {}).get("trial_id")
            gid = self._trial_group.get(trial_id)
            group = self._groups.get(gid) if gid is not None else None
            if (group is None or group["told"] or trial_id in group["ends"]
                    or self.search._already_recorded(gid)):
                continue
            self.on_trial_complete(trial_id, result=dict(result.metrics or {}), error=result.error is not None)
            recorded += int(self._groups[gid]["told"])
        by_group: dict[str, dict[str, dict]] = {}
        for result in results:
            trial_id = (result.metrics or {}).get("trial_id")
            gid = self._trial_group.get(trial_id)
            if gid is not None and result.error is None:
                by_group.setdefault(gid, {})[trial_id] = dict(result.metrics)
        for gid, finals in by_group.items():
            group = self._groups[gid]
            if set(finals) != set(group["trials"]) or not self.search._recorded_as_failed(gid):
                continue
            for trial_id, metrics in finals.items():
                self.on_trial_result(trial_id, metrics)
                group["ends"][trial_id] = {"iteration": int(metrics.get("training_iteration", 0) or 0),
                                           "finished": bool(metrics.get(FINISHED_KEY)), "error": False}
            self.search._record_rerun(gid, self._group_result(group))
            recorded += 1
        return recorded

    # -- internals -------------------------------------------------------------------------------------------

    def _seeds_left(self, group: dict) -> list[int]:
        used = set(group["trials"].values())
        return [s for s in self.seeds if s not in used]

    def _assign(self, gid: str, trial_id: str, seed: int) -> dict:
        group = self._groups[gid]
        group["trials"][trial_id] = seed
        self._trial_group[trial_id] = gid
        self._note_number(trial_id, gid)
        self._annotate(gid, "replicate_trials", {str(s): f"trial_{t}" for t, s in group["trials"].items()})
        return {**group["config"], self.seed_key: seed}

    def _note_number(self, trial_id: str, gid: str) -> None:
        """A replicate's progress lines carry its configuration's Optuna number (study.run.search.TrialLabels)."""
        ot_trial = self.search._ot_trials.get(gid)
        note_optuna_number(trial_id, ot_trial.number if ot_trial is not None else None)

    def _annotate(self, gid: str, key: str, value: Any) -> None:
        ot_trial = self.search._ot_trials.get(gid)
        if ot_trial is not None and not self.search._already_recorded(gid):
            ot_trial.set_user_attr(key, value)

    def _group_result(self, group: dict) -> dict:
        """The one result Optuna is told for a group: the replicate mean at the largest evaluation every
        replicate reached (NaN if one has no finite value there), COMPLETE when every replicate finished."""
        ends = group["ends"]
        common = min(end["iteration"] for end in ends.values())
        values = [group["curves"].get(tid, {}).get(common, math.nan) for tid in group["trials"]]
        return {self.metric: _mean(values) if values else math.nan, "training_iteration": common,
                **({FINISHED_KEY: 1.0} if all(end["finished"] for end in ends.values()) else {})}

    def _tell_if_ended(self, gid: str) -> None:
        group = self._groups[gid]
        if group["told"] or self._seeds_left(group) or set(group["ends"]) != set(group["trials"]):
            return
        failed = [tid for tid, end in group["ends"].items() if end["error"]]
        if failed:
            self.search.on_trial_complete(gid, error=True, failed_dir=f"trial_{failed[0]}")
        else:
            result = self._group_result(group)
            common = result["training_iteration"]
            curves = [group["curves"].get(tid, {}) for tid in group["trials"]]
            self._annotate(gid, "seed_values", {str(group["trials"][tid]): group["curves"].get(tid, {}).get(common)
                                                for tid in group["trials"]})
            for step in range(1, common):
                if all(step in c for c in curves):
                    self.search.on_trial_result(gid, {self.metric: _mean([c[step] for c in curves]),
                                                      "training_iteration": step})
            self.search.on_trial_complete(gid, result=result)
            # Optuna holds the values now; only a FAIL may need its curves again (record_reruns). Saved state
            # stays a few bytes per configuration instead of every evaluation of every trial.
            group["curves"] = {}
        group["told"] = True


# ---------------------------------------------------------------------------------------------------------
# scheduler


def rung_milestones(*, grace_period: float, max_t: float, reduction_factor: float) -> list[float]:
    """ASHA's rungs (Ray's single bracket, s = 0): grace_period × rf^k below max_t (a trial stops at max_t)."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [m for m in (grace_period * reduction_factor ** k for k in range(count)) if m < max_t]


class ReplicateASHA(SnapshotPacing, FIFOScheduler):
    """ASHA deciding per configuration on the mean of its replicates; see the module docstring.

    At rung ``m`` a configuration is decided once each of its ``replicates`` has reported an evaluation ≥ ``m``
    (or ended before reaching it; then the others decide). Its mean is compared with the cutoff of the means the
    configurations decided before it recorded at ``m``: the ``1 - 1/reduction_factor`` quantile, as in Ray's
    ``_Bracket.cutoff``; below the cutoff the whole configuration stops, otherwise it goes on and its mean is
    recorded. Every replicate stops at ``max_t``."""

    STATE_FILE = "replicate_rungs.json"

    def __init__(self, *, replicates: int, study_dir: str | os.PathLike | None, max_t: int, grace_period: int = 1,
                 reduction_factor: float = 3.0, time_attr: str = "training_iteration", metric: str | None = None,
                 mode: str | None = None, seed_key: str = SEED_KEY):
        super().__init__()
        if replicates < 1 or reduction_factor <= 1 or not 0 < grace_period <= max_t:
            raise ValueError(f"ReplicateASHA: replicates {replicates}, grace_period {grace_period}, max_t {max_t}, "
                             f"reduction_factor {reduction_factor}: need replicates >= 1, 0 < grace_period <= "
                             "max_t, reduction_factor > 1")
        self.replicates, self._max_t, self._rf, self._time_attr = replicates, max_t, reduction_factor, time_attr
        self.milestones = rung_milestones(grace_period=grace_period, max_t=max_t, reduction_factor=reduction_factor)
        self._metric, self._mode, self._seed_key = metric, mode, seed_key
        self._study_dir = None if study_dir is None else str(study_dir)
        self._group: dict[str, str] = {}  # trial id -> group key
        self._members: dict[str, list[str]] = {}  # group key -> its trial ids, in arrival order
        self._values: dict[str, dict[str, float]] = {}  # trial id -> {str(milestone): value (sign: larger is better)}
        self._ended: dict[str, float] = {}  # trial id -> the time it ended at (it reaches no later rung)
        self._rungs: dict[str, dict[str, float]] = {str(m): {} for m in self.milestones}  # milestone -> group -> mean
        self._stopped: dict[str, float] = {}  # group key -> the rung it was stopped at
        self._loaded = study_dir is None

    # -- Ray's scheduler interface ---------------------------------------------------------------------------

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        self._add(trial.trial_id, trial.config)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        if trial.trial_id not in self._group:
            self._add(trial.trial_id, trial.config)
        self._ended.pop(trial.trial_id, None)  # reporting again: retried after an error
        now, value = result.get(self._time_attr), result.get(self._metric)
        if now is None or value is None:
            return TrialScheduler.CONTINUE
        key = self._group[trial.trial_id]
        self._record(trial.trial_id, now, value)
        self._decide(key)
        self._save()
        if key in self._stopped or now >= self._max_t:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_once()
        if trial.trial_id not in self._group:
            self._add(trial.trial_id, trial.config)
        now, value = (result or {}).get(self._time_attr), (result or {}).get(self._metric)
        if now is not None and value is not None:
            self._record(trial.trial_id, now, value)
        self._end(trial.trial_id, now)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._load_once()
        self._end(trial.trial_id, (trial.last_result or {}).get(self._time_attr))

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._load_once()
        self._end(trial.trial_id, (trial.last_result or {}).get(self._time_attr))

    def debug_string(self) -> str:
        return "ReplicateASHA: " + " | ".join(f"rung {m}: {len(r)} configurations" for m, r in self._rungs.items())

    # -- decisions -------------------------------------------------------------------------------------------

    def _add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        key = group_key(config, self._seed_key)
        self._group[trial_id] = key
        members = self._members.setdefault(key, [])
        if trial_id not in members:
            members.append(trial_id)

    def _record(self, trial_id: str, now: float, value: float) -> None:
        signed = float(value) if self._mode != "min" else -float(value)
        recorded = self._values.setdefault(trial_id, {})
        for milestone in self.milestones:
            if now >= milestone and str(milestone) not in recorded:
                recorded[str(milestone)] = signed  # the first result at or past the rung, as Ray's ASHA

    def _end(self, trial_id: str, now: float | None) -> None:
        if trial_id not in self._group:
            return
        self._ended[trial_id] = float(now or 0)
        self._decide(self._group[trial_id])
        self._save()

    def _decide(self, key: str) -> None:
        """Decide every rung whose replicates are all in, lowest first, until the group is stopped."""
        for milestone in self.milestones:
            rung = self._rungs[str(milestone)]
            if key in rung:
                continue
            if key in self._stopped:
                return
            members = self._members.get(key, [])
            present = [self._values[t][str(milestone)] for t in members if str(milestone) in self._values.get(t, {})]
            waiting = [t for t in members if str(milestone) not in self._values.get(t, {}) and t not in self._ended]
            if waiting or len(members) < self.replicates:
                return  # a sibling has yet to reach this rung, or to start
            if not present:
                return  # every replicate ended before this rung: nothing to decide
            mean = _mean(present)
            others = [v for g, v in rung.items() if g != key]
            cutoff = float(np.nanpercentile(others, (1 - 1 / self._rf) * 100)) if others else None
            rung[key] = mean
            if cutoff is not None and mean < cutoff:
                self._stopped[key] = milestone
                return

    # -- persistence (like study.run.search.PersistentASHA) ------------------------------------------------------

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_study_dir", "_saved_records")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._study_dir = None

    def bind(self, *, study_dir: str | os.PathLike) -> None:
        self._study_dir = str(study_dir)
        self._loaded = False  # a resume: read what the stopped driver recorded at the first use
        self.__dict__.pop("_saved_records", None)

    @property
    def state_path(self) -> Path:
        if self._study_dir is None:
            raise Unbound("ReplicateASHA")
        return Path(self._study_dir) / self.STATE_FILE

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            saved = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return
        for milestone, recorded in saved.get("rungs", {}).items():
            if milestone in self._rungs:
                for key, mean in recorded.items():
                    self._rungs[milestone].setdefault(key, mean)
        for key, at in saved.get("stopped", {}).items():
            self._stopped.setdefault(key, at)
        for trial_id, recorded in saved.get("values", {}).items():
            for milestone, value in recorded.items():
                self._values.setdefault(trial_id, {}).setdefault(milestone, value)
        for trial_id, at in saved.get("ended", {}).items():
            self._ended.setdefault(trial_id, at)

    def _records(self) -> int:
        # records are only ever added (an ended trial that reports again is the exception: counted by the set)
        return hash((sum(len(r) for r in self._rungs.values()), len(self._stopped),
                     sum(len(v) for v in self._values.values()), frozenset(self._ended)))

    def _save(self) -> None:
        if self._study_dir is None:
            return
        records = self._records()
        if records == self.__dict__.get("_saved_records"):
            return
        atomic_write_bytes(self.state_path, json.dumps(
            {"milestones": self.milestones, "replicates": self.replicates, "rungs": self._rungs,
             "stopped": self._stopped, "values": self._values, "ended": self._ended}).encode())
        self._saved_records = records
