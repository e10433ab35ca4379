"""Ray's experiment snapshots at the pace Ray chooses for itself, not one per ``num_to_keep`` trial checkpoints.

Ray saves its experiment state (every trial's metadata: ~10–20 kB each) periodically — ``TUNE_GLOBAL_CHECKPOINT_S``,
"auto" keeps it ≥ 10 s apart and ≤ 5 % of the driver's time — and *also* whenever one trial has saved
``CheckpointConfig(num_to_keep)`` checkpoints since the last snapshot, so that the stored state never names a
checkpoint it has already deleted (ray-project/ray#30187; the slowdown it causes is ray-project/ray#31613). The
forced ones grow with the reports of all trials and their size with the trials in the study: at 1,000 trials
463 snapshots of a 20 MB state were the driver's largest cost (docs/performance.md, "Scale").

dastudy's storage filesystems (a local or shared path: study/state/atomic_fs.py; an object store:
study/state/store_fs.py) defer those deletions until no stored state can name the checkpoint
(:class:`study.state.atomic_fs.DeferredDeletes`), which makes the forced snapshots unnecessary;
:func:`stop_forced_snapshots` then switches them off.

Each snapshot re-encodes every trial's metadata, so its size matters as much as its count: :func:`lean_run_metadata`
stores only what is read back (no analysis of Ray's bookkeeping keys, no last-5/last-10 windows, checkpoint metrics
cut to the summaries, no checkpoints of a trial whose files :func:`forget_checkpoints` says are deleted), and
:func:`compact` makes the Ray objects each trial record pickles (its sync and checkpoint configs, its resource
request) pickle as the call that rebuilds them.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
from functools import lru_cache
from typing import Any

from ray.tune.schedulers import FIFOScheduler
from ray.tune.trainable.metadata import _TrainingRunMetadata  # private: see lean_run_metadata
from ray.tune.utils.serialization import TuneFunctionEncoder

from study.state.atomic_fs import DEFERRED
from study.state.checkpoint_files import remove_orphaned_checkpoints

__all__ = ["stop_forced_snapshots", "lean_run_metadata", "idle_syncer", "compact", "compact_resources",
           "forget_checkpoints", "SnapshotPacing", "StudyFIFO"]


def stop_forced_snapshots(controller: Any) -> bool:
    """Switch off the snapshot Ray forces after ``num_to_keep`` checkpoints of one trial; True when it was on.

    Ray 2.60 has no public switch (ray-project/ray#31613 proposed one), so this sets one private attribute of the
    controller's experiment-checkpoint manager, here and nowhere else;
    ``tests/study/test_snapshots.py::test_rays_forced_snapshot_switch_is_where_we_set_it`` fails if an upgrade
    moves it. Without it studies still work, only with the forced snapshots."""
    # Schedulers are handed a TrialRunnerWrapper whose __getattr__ logged "You are trying to access
    # _checkpoint_manager interface of TrialRunner in TrialScheduler, which is being restricted" on every study;
    # the controller it wraps is an attribute of its own (no __getattr__), so nothing is logged reading through it.
    controller = getattr(controller, "__dict__", {}).get("_tune_controller", controller)
    manager = getattr(controller, "_checkpoint_manager", None)
    if manager is None or not hasattr(manager, "_sync_every_n_trial_checkpoints"):
        return False
    was_on = bool(manager._sync_every_n_trial_checkpoints)
    manager._sync_every_n_trial_checkpoints = None
    return was_on


def _analysed(key: str) -> bool:
    """Keys whose max/min/avg/last Ray keeps per trial: the evaluation summaries (``val/…``, ``uda/…``,
    ``select/…``), not Ray's own bookkeeping (``done``, ``time_this_iter_s``, …) nor dastudy's ``time/…``."""
    return "/" in key and not key.startswith("time/")


# What Ray reads from a checkpoint's metrics when it restores a trial from it (Trainable.restore,
# StorageContext._update_checkpoint_index), and dastudy's iteration and finished flag.
_RESTORE_KEYS = frozenset({"training_iteration", "time_total_s", "timesteps_total", "episodes_total",
                           "checkpoint_dir_name", "iteration", "finished"})
# ... and from a restored trial's last result: whether it ended, and which trial it is (the ResultGrid of a resumed
# study, ``StudySearch.record_reruns``, the janitor's PRUNED test).
_LAST_RESULT_KEYS = _RESTORE_KEYS | {"done", "trial_id"}


def _cut(metrics: dict, keep: frozenset, score: str | None) -> dict:
    return {k: v for k, v in metrics.items() if _analysed(k) or k in keep or k == score}


class LeanRunMetadata(_TrainingRunMetadata):
    """Ray's per-trial run metadata as the experiment snapshot stores it, without what nobody reads back:
    max/min/avg/last only for the evaluation summaries (:func:`_analysed`; no last-5/last-10 windows), the last
    result and the checkpoints' metrics cut to the summaries and what a restore reads (no config, host, pid, date
    or timings: ~0.5 kB a trial), no checkpoint at all once :func:`forget_checkpoints` was called (its files are
    deleted; the flag itself is stored, so that a resume knows), compact JSON. In memory nothing changes but the
    analysis: the ResultGrid of a finished ``fit`` still has every checkpoint and the whole last result."""

    def update_metric(self, metric, value, step=1):
        if _analysed(metric):  # Ray's own update; with _n_steps = () it keeps no windows
            super().update_metric(metric, value, step)

    def get_json_state(self) -> str:
        if self._cached_json is None:
            skip = ("_cached_json", "_n_steps", "metric_n_steps")
            data = {k: v for k, v in self.__dict__.items() if k not in skip}
            score = _score_attribute(self.checkpoint_manager)
            if isinstance(self.last_result, dict):
                data["last_result"] = _cut(self.last_result, _LAST_RESULT_KEYS, score)
            data["checkpoint_manager"] = _lean_checkpoint_manager(
                self.checkpoint_manager, forget=bool(self.__dict__.get("forget_checkpoints")))
            self._cached_json = json.dumps(data, separators=(",", ":"), cls=TuneFunctionEncoder)
        return self._cached_json


def _lean_checkpoint_manager(manager: Any, *, forget: bool) -> Any:
    """A shallow copy of Ray's checkpoint manager of one trial for the snapshot: the retained checkpoint results
    with their metrics cut down (each was a full copy of the trial's result, Ray's bookkeeping and config
    included), or none when the trial's checkpoints were deleted. The two private attributes are Ray 2.60's
    ``_CheckpointManager`` fields; ``tests/study/test_snapshots.py::test_rays_checkpoint_manager_fields_are_where_
    we_cut_them`` fails if an upgrade moves them, and without them the manager is stored whole."""
    if manager is None or not all(hasattr(manager, a) for a in ("_checkpoint_results", "_latest_checkpoint_result")):
        return manager
    lean = copy.copy(manager)
    if hasattr(manager, "_checkpoint_config"):
        lean._checkpoint_config = compact(manager._checkpoint_config)
    if forget:
        lean._checkpoint_results, lean._latest_checkpoint_result = [], None
        return lean
    score = _score_attribute(manager)
    cut: dict[int, Any] = {}  # the latest result is usually one of the retained ones: keep it one object

    def slim(result: Any) -> Any:
        if result is None or not isinstance(getattr(result, "metrics", None), dict):
            return result
        if id(result) not in cut:
            cut[id(result)] = copy.copy(result)
            cut[id(result)].metrics = _cut(result.metrics, _RESTORE_KEYS, score)
        return cut[id(result)]

    lean._checkpoint_results = [slim(r) for r in manager._checkpoint_results]
    lean._latest_checkpoint_result = slim(manager._latest_checkpoint_result)
    return lean


def _score_attribute(manager: Any) -> str | None:
    return getattr(getattr(manager, "checkpoint_config", None), "checkpoint_score_attribute", None)


def lean_run_metadata(trial: Any) -> bool:
    """Give this trial a :class:`LeanRunMetadata` (built from its current one); True when it has one.

    Each snapshot stores every trial's run metadata, and most of it was never read back: at 1,000 trials the
    analysis of Ray's bookkeeping keys, the last-5/last-10 windows (ray-project/ray#11233), a full result copy
    per retained checkpoint and the checkpoints of pruned trials whose files were deleted made 6.5 of the 10.7 MB
    (docs/performance.md, "Scale"). Ray 2.60 has no public way to change what it stores, so this subclasses its
    private ``ray.tune.trainable.metadata._TrainingRunMetadata``, here and nowhere else;
    ``tests/study/test_snapshots.py::test_rays_run_metadata_is_what_we_subclass`` fails if an upgrade changes it.
    A restored trial (plain metadata again) is converted when it is added back."""
    metadata = getattr(trial, "run_metadata", None)
    if isinstance(metadata, LeanRunMetadata):
        return True
    if not isinstance(metadata, _TrainingRunMetadata) or not isinstance(metadata.metric_analysis, dict):
        return False
    lean = LeanRunMetadata.__new__(LeanRunMetadata)
    state = dict(metadata.__dict__)
    state["metric_analysis"] = {k: {s: v for s, v in a.items() if not str(s).startswith("last-")}
                                for k, a in metadata.metric_analysis.items() if _analysed(k) and isinstance(a, dict)}
    state.update(metric_n_steps={}, _n_steps=(), _cached_json=None)
    lean.__dict__.update(state)
    trial.run_metadata = lean
    return True


def idle_syncer(trial: Any) -> bool:
    """Give the trial's storage context a syncer of its own that holds no sync command, or none at all where
    artifacts are not synced (Ray never uses a trial's syncer then), and a :func:`compact` sync config; True when
    it did.

    Ray copies the experiment's storage context into each trial shallowly, so every trial shares the driver's
    syncer, and each trial record in a snapshot pickles that syncer with the driver's last upload command inside
    (its staging path, its target: 0.5 kB a trial, ~0.5 MB at 1,000 trials, and paths of a driver that may be long
    gone on a resume). The trial's own copy is what its worker syncs artifacts with (a worker never retries a command
    it did not start). ``_current_cmd`` is a private field of Ray 2.60's ``_BackgroundSyncer``, set here and nowhere
    else; ``tests/study/test_snapshots.py::test_rays_syncer_command_is_where_we_clear_it`` fails if it moves, and
    without it the syncer stays shared as in Ray."""
    storage = getattr(trial, "storage", None)
    syncer = getattr(storage, "syncer", None)
    if syncer is None or not hasattr(syncer, "_current_cmd"):
        return False
    sync_config = getattr(storage, "sync_config", None)
    if getattr(sync_config, "sync_artifacts", True) is False:
        # Without sync_artifacts Ray never uses a trial's syncer (StorageContext.persist_artifacts returns first;
        # the driver syncs with its own): none at all, 0.3 kB less per trial record.
        storage.syncer = None
    else:
        own = copy.copy(syncer)  # through Ray's __getstate__: no running process either
        own._current_cmd = None
        storage.syncer = own
    if sync_config is not None:
        storage.sync_config = compact(sync_config)
    if hasattr(trial, "invalidate_json_state"):
        trial.invalidate_json_state()
    return True


def compact_resources(trial: Any) -> bool:
    """Give the trial a resource request that pickles compactly (:func:`compact`); True when it did."""
    request = getattr(trial, "placement_group_factory", None)
    lean = compact(request) if request is not None else None
    if lean is None or lean is request:
        return False
    trial.placement_group_factory = lean
    if hasattr(trial, "invalidate_json_state"):
        trial.invalidate_json_state()
    return True


def compact(obj: Any) -> Any:
    """A shallow copy of a Ray ``SyncConfig`` or ``CheckpointConfig`` (dataclasses) or of a
    ``PlacementGroupFactory`` that behaves the same and pickles as the call that rebuilds the plain object:
    the dataclass from the fields that differ from their defaults, the resource request from its bundles and
    strategy. Ray pickles each of them into every trial record of every snapshot (hex-encoded), with the name of
    every field: 132 → 76, 200 → 142 and 181 → 70 bytes before the hex encoding, ~0.45 kB a trial record
    (docs/performance.md, "Scale"). Anything else, or a resource request
    with extra placement-group arguments, is returned as it is. A resource request's bundles are private fields
    of Ray 2.60's ``ResourceRequest``; ``tests/study/test_snapshots.py::test_compact_objects_rebuild_as_rays_own``
    fails if they move."""
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    if type(obj).__reduce__ is _compact_reduce:
        return obj  # already compact
    if isinstance(obj, PlacementGroupFactory):
        if getattr(obj, "_args", None) or getattr(obj, "_kwargs", None) or not hasattr(obj, "_bundles"):
            return obj
    elif not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    lean = copy.copy(obj)
    lean.__class__ = _compact_type(type(obj))
    return lean


@lru_cache(maxsize=None)
def _compact_type(cls: type) -> type:
    return type(f"Compact{cls.__name__}", (cls,), {"__reduce__": _compact_reduce, "__module__": __name__})


def _compact_reduce(self: Any) -> tuple:
    if dataclasses.is_dataclass(self):
        base = type(self).__bases__[0]
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.init and getattr(self, f.name) != f.default}
        return _rebuild, (base, fields)
    bundles = ([{}] if self._head_bundle_is_empty else []) + [dict(b) for b in self._bundles]
    return _resources, (bundles,) if self._strategy == "PACK" else (bundles, self._strategy)


def _rebuild(cls: type, fields: dict) -> Any:
    """What a compact dataclass unpickles as: Ray's own class, built from the fields that were not defaults."""
    return cls(**fields)


def _resources(bundles: list, strategy: str = "PACK") -> Any:
    """What a compact resource request unpickles as: Ray's ``PlacementGroupFactory``."""
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    return PlacementGroupFactory(bundles, strategy)


def forget_checkpoints(trial: Any) -> None:
    """From now on the snapshots store no checkpoint of this trial: dastudy deletes its checkpoints (a pruned
    trial, or one failed for good; study/run/storage.py ``CheckpointJanitor``), so no stored state should name them.
    The trial keeps them in memory (Ray finishes with them as before)."""
    if lean_run_metadata(trial):
        trial.run_metadata.forget_checkpoints = True  # Ray's __setattr__ drops the cached JSON


class SnapshotPacing:
    """Scheduler mix-in: when a trial is added (the only hook that is given Ray's controller), give it lean run
    metadata (:func:`lean_run_metadata`) and a syncer of its own (:func:`idle_syncer`), and, if this driver defers
    checkpoint deletions (around ``Tuner.fit``, on any storage), stop the forced snapshots. A trial restored by a
    resume also gets the deletions a killed driver left pending (:func:`study.state.checkpoint_files.remove_orphaned_checkpoints`), and if it runs
    again, its checkpoints are stored again."""

    def on_trial_add(self, tune_controller, trial) -> None:
        lean_run_metadata(trial)
        idle_syncer(trial)
        compact_resources(trial)
        if DEFERRED.enabled:
            stop_forced_snapshots(tune_controller)
        _finish_pending_deletions(trial)
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]  # the scheduler's own


def _finish_pending_deletions(trial: Any) -> None:
    dirs, size = remove_orphaned_checkpoints(trial)
    if dirs:
        print(f"resume: removing {dirs} checkpoint folder(s) ({size / 2**20:.1f} MiB) of "
              f"{getattr(trial.storage, 'trial_dir_name', trial)} that the saved state no longer names "
              "(deletions a stopped driver left pending)", file=sys.stderr)
    metadata = getattr(trial, "run_metadata", None)
    if getattr(metadata, "forget_checkpoints", False) and getattr(trial, "status", None) != "TERMINATED":
        metadata.forget_checkpoints = False  # resumed (resume_errored): its new checkpoints are kept as any


class StudyFIFO(SnapshotPacing, FIFOScheduler):
    """Ray's FIFO scheduler (every trial runs to the end) with :class:`SnapshotPacing`."""
