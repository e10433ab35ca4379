"""Object storage as a study's home: the files that define a study kept in step with the store, and a study
restored from the store onto a new head.

With ``--storage s3://bucket/prefix`` Ray writes trials, checkpoints, TensorBoard events (the trial's working
directory, ``sync_artifacts``) and its experiment state to ``s3://bucket/prefix/<study>``; failure records go
there from the trial (``trainables/tune.py``). The driver keeps ``study.toml``, ``space.json``,
``provenance.json``, ``asha_rungs.json``, the Optuna journal and ``baseline/`` in a local directory (the journal
and the ASHA rungs are written at every report; an object store has no appends) and :class:`StoreSync` uploads
the changed ones right before each experiment snapshot Ray takes. Ray uploads its snapshot after that, so the
store never holds a snapshot newer than the journal next to it: a restore finds every Optuna trial the snapshot
knows (a journal *ahead* of the snapshot is handled by the searcher, which adopts the orphan trial).

``dastudy study resume s3://bucket/prefix/<study>`` downloads those files into an empty local directory
(:func:`pull_study`) and resumes there. The Optuna state can instead live in PostgreSQL (``search.storage =
"postgresql://..."``), which every machine reaches directly; see docs/cluster.md for the choice.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from ray.tune import Callback

from study.state.checkpoint_files import remove_checkpoint_dirs
from study.state.location import locate
from study.run.snapshots import forget_checkpoints
from trainables.objectstore import filesystem

__all__ = ["STATE_FILES", "StoreSync", "push_study", "pull_study", "study_uri", "CheckpointJanitor",
           "bind_store", "publish_checkpoint", "restore_from_store"]

# What defines a study besides Ray's own files, relative to its home (baseline/ is uploaded recursively).
STATE_FILES = ("study.toml", "space.json", "provenance.json", "asha_rungs.json", "optuna.journal")
STATE_DIRS = ("baseline",)


def study_uri(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def _local_files(home: Path) -> Iterable[Path]:
    for name in STATE_FILES:
        if (home / name).is_file():
            yield home / name
    for name in STATE_DIRS:
        if (home / name).is_dir():
            yield from (p for p in sorted((home / name).rglob("*")) if p.is_file())


def push_study(home: Path, uri: str, *, seen: dict[str, tuple[int, int]] | None = None) -> list[str]:
    """Upload the study files of ``home`` that changed since ``seen`` (size, mtime_ns) to ``uri``; returns the
    uploaded relative paths. Each object is written whole."""
    fs, root = filesystem(uri)
    uploaded = []
    for path in _local_files(home):
        rel = path.relative_to(home).as_posix()
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        if seen is not None and seen.get(rel) == key:
            continue
        data = path.read_bytes()
        with fs.open_output_stream(f"{root}/{rel}") as out:
            out.write(data)
        if seen is not None:
            seen[rel] = key
        uploaded.append(rel)
    return uploaded


def pull_study(uri: str, home: Path) -> Path:
    """Download a study's files from the store into ``home``, which must not exist or be empty (a local copy is
    never overwritten); returns ``home``."""
    import pyarrow.fs as pafs

    home = Path(home)
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise FileExistsError(f"{home} already exists and is not empty; resume the local copy with `dastudy study "
                              f"resume {home}`, or remove it to restore {uri} there")
    fs, root = filesystem(uri)
    if fs.get_file_info(f"{root}/study.toml").type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no study in the store (no study.toml); check the URI and AWS_ENDPOINT_URL")
    home.mkdir(parents=True, exist_ok=True)
    wanted = [f"{root}/{n}" for n in STATE_FILES]
    for name in STATE_DIRS:
        info = fs.get_file_info(pafs.FileSelector(f"{root}/{name}", recursive=True, allow_not_found=True))
        wanted += [i.path for i in info if i.type == pafs.FileType.File]
    for path in wanted:
        rel = path[len(root) + 1:]
        try:
            with fs.open_input_stream(path) as src:
                data = src.read()
        except FileNotFoundError:
            continue  # asha_rungs.json / optuna.journal do not exist before the first report
        target = home / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return home


# The study this driver process runs: (local home, study URI in the store). Set by the driver before ``fit``
# (bind_store), never pickled: Ray pickles callbacks into tuner.pkl and a restore on a new head has another home.
_BOUND: dict[str, Any] = {}


def bind_store(home: Path, uri: str) -> None:
    _BOUND.clear()
    _BOUND.update(home=Path(home), uri=uri, seen={})


class StoreSync(Callback):
    """Keeps the study files in the store in step with the local home: everything at the start, the changed
    files right before every experiment snapshot (``get_state`` runs inside Ray's ``save_to_dir``, before the
    snapshot is uploaded) and at the end. Location-free: it syncs what :func:`bind_store` names."""

    # What this driver process uploaded (objects, bytes, seconds spent): benchmarks/scale.py reads them.
    uploads = 0
    uploaded_bytes = 0
    upload_s = 0.0

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        pass

    def _push(self) -> None:
        from study.state.lease import lease_lost

        if lease_lost():  # another driver holds the study now (study/state/lease.py): its files are not ours to replace
            print("warning: the study files are no longer uploaded: this driver lost its lease", file=sys.stderr)
            return
        if not _BOUND:
            print("warning: the study files are not synchronised with the store (no bind_store)", file=sys.stderr)
            return
        started = time.perf_counter()
        pushed = push_study(_BOUND["home"], _BOUND["uri"], seen=_BOUND["seen"])
        StoreSync.upload_s += time.perf_counter() - started
        StoreSync.uploads += len(pushed)
        StoreSync.uploaded_bytes += sum(_BOUND["seen"][rel][0] for rel in pushed)

    def setup(self, **info) -> None:
        self._push()

    def get_state(self):
        self._push()
        return None  # nothing of ours in Ray's snapshot: the files themselves are the state

    def on_experiment_end(self, trials, **info) -> None:
        self._push()


# ---------------------------------------------------------------------------------------------------------
# checkpoint volume

FINAL_FAILURES = ("diverged", "oom", "resources")  # as trainables.tune: a retry would repeat them


class CheckpointJanitor(Callback):
    """Deletes the checkpoints of PRUNED trials and of trials FAILED for good when they end (``keep_pruned_
    checkpoints = false``): at 1,000 trials of ~400 MiB full-state DeepLabV2 checkpoints they are most of a
    study's terabyte (issue 12). Completed trials keep Ray's ``num_to_keep`` best plus the latest.

    Only ``checkpoint_<n>`` directories inside the trial's own directory in the study storage are deleted
    (through Ray's storage filesystem: local, NFS or ``s3://``). A trial that failed with a retriable error
    (a crash, a lost node) keeps its checkpoints: ``dastudy study resume`` continues it from the latest one; a
    diverged/OOM trial (``failure.json``) would only fail again, so its checkpoints go.

    When: not at once, but at the second experiment snapshot after the trial ended (and at the end of the study).
    The first snapshot after the end records the trial as finished; until it is in the storage a driver killed now
    would be resumed from an older snapshot in which the trial still runs, and Ray would restart it from the
    checkpoint deleted here. Known limit: an upload of that snapshot still running at the second one (a slow
    object store) leaves this window open for that long.
    """

    def __init__(self, *, max_t: int, finished_key: str = "finished"):
        self.max_t = max_t
        self.finished_key = finished_key
        self.removed_bytes = 0
        self.removed_dirs = 0
        self._snapshots = 0
        self._pending: list[tuple[int, Any, str]] = []  # (snapshots seen when the trial ended, fs, trial path)

    def __getstate__(self) -> dict:  # pickled into tuner.pkl at the start: nothing pending then
        return {"max_t": self.max_t, "finished_key": self.finished_key}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _mark(self, trial) -> None:
        storage = getattr(trial, "storage", None)
        if storage is not None:
            self._pending.append((self._snapshots, storage.storage_filesystem, storage.trial_fs_path))
            # The snapshot that records the trial as ended no longer names its checkpoints: a TERMINATED or
            # finally FAILED trial is never restored from one, and the files go two snapshots later.
            forget_checkpoints(trial)

    def _sweep(self, *, everything: bool = False) -> None:
        due = [p for p in self._pending if everything or p[0] <= self._snapshots - 2]
        self._pending = [p for p in self._pending if p not in due]
        for _, fs, root in due:
            self._clean(fs, root)

    def get_state(self):
        self._snapshots += 1  # Ray calls this while writing each experiment snapshot
        self._sweep()
        return None

    def on_experiment_end(self, trials, **info) -> None:
        self._sweep(everything=True)

    def _clean(self, fs, root: str) -> None:
        dirs, size = remove_checkpoint_dirs(fs, root)
        self.removed_dirs += dirs
        self.removed_bytes += size

    def _final_failure(self, trial) -> bool:
        storage = getattr(trial, "storage", None)
        if storage is None:
            return False
        try:
            with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/failure.json") as src:
                return json.loads(src.read()).get("kind") in FINAL_FAILURES
        except (OSError, ValueError, AttributeError):
            return False

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        step = int(result.get("training_iteration", 0) or 0)
        if not result.get(self.finished_key) and step < self.max_t:  # stopped early by the scheduler: PRUNED
            self._mark(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if self._final_failure(trial):
            self._mark(trial)


# ---------------------------------------------------------------------------------------------------------
# what the driver adds to a study (study/run/tuner.py calls these)


def study_callbacks(study, location) -> tuple[list[Callback], Any]:
    """The Tune callbacks and the stopper of a study: the checkpoint janitor, the store sync (object storage) and
    the watchdog for trials that never start. Binds the store to this driver."""
    from study.run.autoscale import PendingWatchdog

    callbacks: list[Callback] = []
    if not study.keep_pruned_checkpoints:
        callbacks.append(CheckpointJanitor(max_t=study.max_t))
    if not location.shared_fs:
        bind_store(location.home, location.experiment_path)
        callbacks.append(StoreSync())
    request = {"CPU": float(study.resources.cpu), **({"GPU": float(study.resources.gpu)} if study.resources.gpu
                                                     else {})}
    watchdog = PendingWatchdog(timeout_s=study.resources.pending_timeout, request=request)
    callbacks.append(watchdog.callback())
    return callbacks, watchdog.stopper()


def preflight_study(study, location, nodes, log) -> int:
    """Launch checks of this module's concerns; returns the trial slots available now. An autoscaling cluster
    without room for a trial is asked for it; the checkpoint estimate is printed and, on a local filesystem,
    a study that cannot fit is refused."""
    from study.run.autoscale import request_from_autoscaler
    from study.config.resources import check_checkpoint_space, check_cluster_resources, estimate_checkpoint_bytes
    from trainables.tune import checkpoint_state_bytes

    res = study.resources
    slots = check_cluster_resources(cpu=res.cpu, gpu=res.gpu, nodes=nodes, autoscaling=res.autoscaling)
    if slots == 0:
        bundle = request_from_autoscaler(cpu=res.cpu, gpu=res.gpu, trials=study.max_concurrent_trials)
        log(f"cluster: no alive node can host a trial ({bundle}); asked the autoscaler for "
            f"{study.max_concurrent_trials} of them, trials wait up to {res.pending_timeout:g} s")
    try:
        state_bytes = checkpoint_state_bytes(study.train)
    except Exception as err:  # a network the meta device cannot build: no estimate, no refusal
        log(f"checkpoints: no size estimate ({type(err).__name__}: {err})")
        return slots
    estimate = estimate_checkpoint_bytes(
        state_bytes=state_bytes, kept=study.checkpoints_to_keep + 1,
        num_samples=study.num_trials, keep_pruned=study.keep_pruned_checkpoints, max_t=study.max_t,
        grace_period=study.scheduler.grace_period, reduction_factor=study.scheduler.reduction_factor,
        asha=study.scheduler.kind == "asha")
    log(estimate.describe())
    if location.shared_fs:
        check_checkpoint_space(estimate, location.home)
    return slots


def publish_checkpoint(path: str | Path, uri: str) -> str:
    """Upload the baseline's checkpoint next to the study in the store (``<study>/baseline/init.pt``) and return
    its URI: with object storage the driver's disk is not the trials' (trainables/objectstore.local_copy)."""
    target = f"{uri.rstrip('/')}/baseline/init{Path(path).suffix or '.pt'}"
    fs, key = filesystem(target)
    with open(path, "rb") as src, fs.open_output_stream(key) as out:
        while chunk := src.read(64 << 20):
            out.write(chunk)
    return target


def restore_from_store(study: str, storage: str | None) -> Path | None:
    """``dastudy study resume`` on a new head: the local study directory, downloaded from the store when
    ``study`` is an object-store URI (``s3://bucket/prefix/<name>``), or a bare name whose ``--storage`` is one
    and which has no local copy yet; None when the study is local (the caller locates it as before)."""
    from study.config.resources import is_uri

    if is_uri(study):
        storage, _, name = study.rstrip("/").rpartition("/")
    elif storage and is_uri(storage) and "/" not in study:
        name = study
    else:
        return None
    location = locate(name, storage)
    if not is_uri(study) and (location.home / "study.toml").is_file():
        return None  # this head has the study (it ran here): resume the local copy
    print(f"study {name}: restoring {location.experiment_path} into {location.home}")
    return pull_study(location.experiment_path, location.home)
