"""A trial's ``checkpoint_<n>`` folders deleted when nothing will read them: the one place dastudy removes Ray's
checkpoints (a pruned or finally failed trial's, by ``study.run.storage.CheckpointJanitor``; on resume, those a killed
driver left pending, by ``study.run.snapshots.SnapshotPacing``). Below both: it reads Ray's trial objects only through
duck-typed attributes and imports nothing from ``study`` but the checkpoint folder pattern."""
from __future__ import annotations

import os
import sys
from typing import Callable

from study.state.atomic_fs import CHECKPOINT_DIR  # Ray's checkpoint_<n> directories: nothing else is touched

__all__ = ["remove_checkpoint_dirs", "checkpoint_index", "remove_orphaned_checkpoints"]


def remove_checkpoint_dirs(fs, root: str, keep: Callable[[int], bool] = lambda index: False) -> tuple[int, int]:
    """Delete the ``checkpoint_<n>`` directories directly inside ``root`` (a trial's directory, through Ray's
    storage filesystem) whose ``n`` is not kept; nothing else. Returns (directories, bytes)."""
    import pyarrow.fs as pafs

    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return 0, 0
    dirs = total = 0
    for entry in entries:
        if (entry.type != pafs.FileType.Directory or not CHECKPOINT_DIR.match(entry.base_name)
                or keep(checkpoint_index(entry.base_name))):
            continue
        try:
            files = fs.get_file_info(pafs.FileSelector(entry.path, recursive=True))
            size = sum(f.size or 0 for f in files if f.type == pafs.FileType.File)
            fs.delete_dir(entry.path)
        except OSError as err:  # never let housekeeping end a study
            print(f"warning: could not remove {entry.path}: {err}", file=sys.stderr)
            continue
        dirs, total = dirs + 1, total + size
    return dirs, total


def checkpoint_index(name: str) -> int:
    return int(name.rpartition("_")[2])


def remove_orphaned_checkpoints(trial) -> tuple[int, int]:
    """On resume, for one trial restored from the experiment state: delete the checkpoint directories that the
    state does not name and that nothing will read, which a killed driver left pending. Returns (dirs, bytes).

    - the trial's checkpoints were to be deleted (a PRUNED or finally FAILED trial; the janitor's decision is
      stored with the state, :func:`study.run.snapshots.forget_checkpoints`): all of them;
    - otherwise those older than the newest checkpoint the state names, and not named by it: Ray had deleted them
      (``num_to_keep``) and the deletion was still deferred (study/state/atomic_fs.py ``DeferredDeletes``).

    Newer unnamed ones are left alone (a checkpoint written after the last snapshot; the resumed trial rewrites
    its index). Nothing is done when Ray's checkpoint manager fields are not where
    ``tests/study/test_snapshots.py::test_rays_checkpoint_manager_fields_are_where_we_cut_them`` expects them."""
    storage, metadata = getattr(trial, "storage", None), getattr(trial, "run_metadata", None)
    manager = getattr(metadata, "checkpoint_manager", None)
    results = getattr(manager, "_checkpoint_results", None)
    if storage is None or not isinstance(results, list):
        return 0, 0
    named: set[int] = set()
    for result in [*results, getattr(manager, "_latest_checkpoint_result", None)]:
        name = os.path.basename(str(getattr(getattr(result, "checkpoint", None), "path", "")).rstrip("/"))
        if CHECKPOINT_DIR.match(name):
            named.add(checkpoint_index(name))
    if getattr(metadata, "forget_checkpoints", False):
        return remove_checkpoint_dirs(storage.storage_filesystem, storage.trial_fs_path)
    if not named:  # a new trial, or one Ray has no checkpoint of: nothing to decide (and no listing)
        return 0, 0
    newest = max(named)
    return remove_checkpoint_dirs(storage.storage_filesystem, storage.trial_fs_path,
                                  keep=lambda index: index in named or index > newest)
