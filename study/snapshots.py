"""Ray's experiment snapshots at the pace Ray chooses for itself, not one per ``num_to_keep`` trial checkpoints.

Ray saves its experiment state (every trial's metadata: ~10–20 kB each) periodically — ``TUNE_GLOBAL_CHECKPOINT_S``,
"auto" keeps it ≥ 10 s apart and ≤ 5 % of the driver's time — and *also* whenever one trial has saved
``CheckpointConfig(num_to_keep)`` checkpoints since the last snapshot, so that the stored state never names a
checkpoint it has already deleted (ray-project/ray#30187; the slowdown it causes is ray-project/ray#31613). The
forced ones grow with the reports of all trials and their size with the trials in the study: at 1,000 trials
463 snapshots of a 20 MB state were the driver's largest cost (docs/performance.md, "Scale").

dastudy's storage filesystem defers those deletions until no stored state can name the checkpoint
(:class:`study.atomic_fs.DeferredDeletes`), which makes the forced snapshots unnecessary; :func:`stop_forced_snapshots`
then switches them off. Object-store storage keeps Ray's behaviour (its deletions are not deferred).

Each snapshot re-encodes every trial's metadata, so its size matters as much as its count: :func:`drop_metric_windows`
removes the last-5/last-10 value windows Ray keeps for every numeric key of every trial (38 % of the state).
"""
from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler

from study.atomic_fs import DEFERRED

__all__ = ["stop_forced_snapshots", "drop_metric_windows", "SnapshotPacing", "StudyFIFO"]


def stop_forced_snapshots(controller: Any) -> bool:
    """Switch off the snapshot Ray forces after ``num_to_keep`` checkpoints of one trial; True when it was on.

    Ray 2.60 has no public switch (ray-project/ray#31613 proposed one), so this sets one private attribute of the
    controller's experiment-checkpoint manager, here and nowhere else;
    ``tests/study/test_snapshots.py::test_rays_forced_snapshot_switch_is_where_we_set_it`` fails if an upgrade
    moves it. Without it studies still work, only with the forced snapshots."""
    manager = getattr(controller, "_checkpoint_manager", None)
    if manager is None or not hasattr(manager, "_sync_every_n_trial_checkpoints"):
        return False
    was_on = bool(manager._sync_every_n_trial_checkpoints)
    manager._sync_every_n_trial_checkpoints = None
    return was_on


def drop_metric_windows(trial: Any) -> bool:
    """Stop Ray keeping, for every numeric key this trial reports, its last 5 and last 10 values and their means
    (``metric_n_steps``, ``last-5-avg``/``last-10-avg``) in the experiment state; True when done.

    They were ~460 bytes per key and trial, 38 % of a 1,000-trial state that every snapshot re-encodes
    (docs/performance.md, "Scale"); only ``ResultGrid.get_best_result(scope="last-5-avg"|"last-10-avg")`` reads
    them, which dastudy never calls (min/max/avg/last stay). Ray 2.60 builds the windows from a constructor
    argument of its private ``_TrainingRunMetadata(n_steps=(5, 10))`` with no way to pass another (the size
    problem is ray-project/ray#11233), so this sets that private attribute here and nowhere else;
    ``tests/study/test_snapshots.py::test_rays_metric_windows_are_where_we_drop_them`` fails if an upgrade
    moves it. A restored trial's saved windows are dropped too."""
    metadata = getattr(trial, "run_metadata", None)
    if metadata is None or not hasattr(metadata, "_n_steps") or not isinstance(
            getattr(metadata, "metric_n_steps", None), dict):
        return False
    if metadata._n_steps or metadata.metric_n_steps:
        metadata._n_steps = ()
        metadata.metric_n_steps = {}
        for analysis in getattr(metadata, "metric_analysis", {}).values():
            for key in [k for k in analysis if str(k).startswith("last-")]:
                del analysis[key]
        metadata.invalidate_cache()
    return True


class SnapshotPacing:
    """Scheduler mix-in: when a trial is added (the only hook that is given Ray's controller), drop its metric
    windows and, if this driver defers checkpoint deletions (a filesystem storage), stop the forced snapshots."""

    def on_trial_add(self, tune_controller, trial) -> None:
        drop_metric_windows(trial)
        if DEFERRED.enabled:
            stop_forced_snapshots(tune_controller)
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]  # the scheduler's own


class StudyFIFO(SnapshotPacing, FIFOScheduler):
    """Ray's FIFO scheduler (every trial runs to the end) with :class:`SnapshotPacing`."""
