"""Assembling and running a study: Ray set-up, the one function that builds the ``Tuner``, the baseline.

:func:`build_tuner` turns a :class:`StudyConfig` into a Ray Tune ``Tuner``: :class:`StudySearch` (OptunaSearch
with the space, metric/mode, a seeded sampler and a persistent Optuna storage in the study directory), ASHA on
``training_iteration`` with rungs that survive a restore (or FIFO), per-trial resources, checkpoints kept by the
study metric, failure retries, Ray's console output off and one line per trial event instead.

:func:`run_study` is the driver: refuse an existing study directory, check datasets, start/connect Ray, check the
cluster (GPU present, one trial fits a node, storage shared), write ``study.toml``/``space.json``/
``provenance.json``, train the source-only baseline if the study has one, then fit. :func:`resume_study` restores
an interrupted study (``Tuner.restore(resume_errored=True)``; the Optuna study comes back from its storage).
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from study.config.pbt_settings import PBT_KINDS
from study.config.preflight import diagnose, mask_secrets
from study.config.resources import check_storage_shared, cluster_nodes, describe_nodes, private_tmpdir
from study.config.spaces import get_space, grid_search_space, hparam_domains, label_optuna_study, make_define_by_run
from study.config.study_config import StudyConfig, metric_tags
from study.run.baseline import copy_baseline_files, prepare_baseline
from study.run.interrupts import StudyInterrupted, graceful_stop, stop_requested
from study.run.pbt import pbt_context, pbt_parts
# StudyLocation is also a name of this module: a study whose driver callbacks held one pickled it as
# study.tuner.StudyLocation before study/ was regrouped (study/_moved.py maps study.tuner here).
from study.state.atomic_fs import DEFERRED, atomic_local_filesystem
from study.state.store_fs import ray_path, store_filesystem
from study.state.driver_files import driver_temp_dirs, recover_driver_files
from study.state.lease import hold_study
from study.state.location import (StudyLocation, load_study_dir, locate, package_versions, relocated_checkpoint,
                                  relocated_storage, write_json, write_study_files)
from study.state.lock import study_lock
from study.state.optuna_storage import optuna_storage
from study.state.resume_checks import SpaceChanged, StudyFinished, finished_trials, space_changes
from trainables.config import to_dict

# Imported inside the functions that use them, for start-up cost and order, not to dodge a circle: Ray (and the
# study/run modules that import it at their top: search, replicates, snapshots, storage, autoscale, progress)
# after configure_environment() has set RAY_ENV, which Ray reads when it is first imported; Optuna and
# trainables.tune (torch) only when a study runs.

__all__ = ["RAY_ENV", "configure_environment", "ray_session", "make_sampler", "trial_context", "wrap_trainable",
           "build_tuner", "study_progress", "run_study", "resume_study", "resume_sampler"]

# Quiet, private Ray (ray-tune-optuna notes §5.4). TUNE_DISABLE_AUTO_CALLBACK_LOGGERS drops Ray's TBX logger
# (tags ray/tune/...; the engine writes clean ones); CSV/JSON loggers are passed explicitly for dataframes.
# Ray's warning about experiment snapshots forced less than 5 s apart stays on. On a filesystem storage Ray's forced
# snapshots are off (study/run/snapshots.py: checkpoint deletions are deferred instead); on an object store they follow
# checkpoint_every and checkpoints_to_keep (a snapshot is forced after that many checkpoints of one trial). Ray's
# periodic ones follow TUNE_GLOBAL_CHECKPOINT_S ("auto": >= 10 s apart, <= 5 % of the driver's time).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # the legacy reporter prints nothing at verbose=0 (the new one prints a header)
}


def ray_filesystem(location: StudyLocation):
    """Ray's storage filesystem. For a filesystem path one whose files are written whole or not at all (Ray copies
    its experiment state in place; a driver killed mid-copy left 0-byte state files that `study resume` could not
    use, see study/state/atomic_fs.py); for an object store pyarrow's own (objects are written whole) with Ray's
    checkpoint deletions deferred (study/state/store_fs.py). Both let Ray's forced snapshots be switched off."""
    return atomic_local_filesystem() if location.shared_fs else store_filesystem(location.ray_storage)


def ray_storage_path(location: StudyLocation) -> str:
    """``storage_path`` for Ray's RunConfig next to :func:`ray_filesystem` (an object store's without its scheme)."""
    return location.ray_storage if location.shared_fs else ray_path(location.ray_storage)


def ray_experiment_path(location: StudyLocation) -> str:
    """The experiment path for ``Tuner.restore`` / ``can_restore`` next to :func:`ray_filesystem`."""
    return location.experiment_path if location.shared_fs else ray_path(location.experiment_path)


def configure_environment() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def ray_session(*, address: str | None = None, num_cpus: int | None = None,
                num_gpus: int | None = None) -> Iterator[str | None]:
    """Start a private local Ray (``address=None``) or connect to a cluster; shut down only what we started.
    Yields the private Ray temp dir of a local Ray (None otherwise): a killed driver leaves it behind, with the
    files Ray had not yet copied into the study (study/state/driver_files.py).

    A local cluster gets a short private temp dir (unix socket paths are limited to ~107 characters) and is
    stopped by ``ray.shutdown()``; ``ray stop`` is never used (it kills every Ray process on the machine).
    An already initialised Ray (a test session) is used as it is. A request made to the autoscaler during the
    session is withdrawn at its end, however it ends (study/run/autoscale.py).
    """
    import ray

    # Keys the driver's environment already sets stay out of the job's runtime env: inside a Ray job (`ray job
    # submit`, a KubeRay RayJob) they come from the job's own runtime env, and ray.init refuses to set one again
    # ("Failed to merge the Job's runtime env"; tests/deploy/test_job_submit.py).
    job_env = {key: value for key, value in RAY_ENV.items() if key not in os.environ}
    configure_environment()
    from study.run.autoscale import autoscaler_request_released  # an autoscaler request ends with the session

    if ray.is_initialized():
        with autoscaler_request_released():
            yield None
        return
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    tmp = None
    if address is None:  # the workers of a local cluster inherit this process's environment
        tmp = private_tmpdir()
        kwargs.update(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _temp_dir=tmp)
        _quiet_default_token_notice()
    else:  # on a running cluster, the quiet-Ray settings travel with the job
        kwargs.update(address=address, runtime_env={"env_vars": job_env} if job_env else None)
    ray.init(**kwargs)
    try:
        with autoscaler_request_released():  # withdrawn while still connected: done, failed or interrupted
            yield tmp
    finally:
        ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class _DropDefaultTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled for this Ray cluster")


def _quiet_default_token_notice() -> None:
    """Drop Ray's notice that a new local cluster has token authentication on (its default, logged on every run).

    Setting the auth-mode variable to "token" ourselves would also silence it, but Ray reads the mode into its
    cached config when it is imported: the driver then stays in 'disabled' while the GCS it starts wants a token,
    and ray.init fails ("InvalidAuthToken"). Ray's own path (authentication_token_setup._enable_token_auth) refreshes that
    cache; we keep Ray's choice and only drop the line. A warning that auth is *disabled* still shows.
    """
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropDefaultTokenNotice) for f in log.filters):
        log.addFilter(_DropDefaultTokenNotice())


# ---------------------------------------------------------------------------------------------------------
# pieces


def make_sampler(study: StudyConfig):
    import optuna

    search = study.search
    if search.sampler == "grid":
        grid = grid_search_space(get_space(search.space), study.space_params, base=study.train)
        return optuna.samplers.GridSampler(grid, seed=search.seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    # Parallel trials: constant liar (running trials count as bad guesses, so concurrent asks spread out),
    # multivariate TPE, and group=True where the space is conditional (a backbone chooses which lr range exists).
    # With N trials in flight the first max(N, startup_trials) trials are random by nature; no cap is needed.
    conditional = any(d.get("when") for dims in study.describe_space()["dimensions"].values() for d in dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group` is marked experimental
        return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=search.startup_trials,
                                          constant_liar=True, multivariate=True, group=conditional)




def trial_context(study: StudyConfig, location: StudyLocation, init_checkpoint: str | None):
    from trainables.tune import TrialContext, stop_channel_name

    return TrialContext(train=to_dict(study.train), study_dir=str(location.home) if location.shared_fs else "",
                        metric=study.study_metric, init_checkpoint=init_checkpoint, gpu=study.resources.gpu,
                        metric_tags=metric_tags(study), store="" if location.shared_fs else location.experiment_path,
                        checkpoint_every=study.checkpoint_every,
                        extra={"hparam_domains": hparam_domains(study.describe_space()),
                               # a graceful stop asks each trial to save at its current iteration (PBT: Ray's own)
                               **({} if study.scheduler.kind in PBT_KINDS
                                  else {"stop_channel": stop_channel_name(study.name)})})


def wrap_trainable(study: StudyConfig, context, trainable: Callable | None = None):
    """``tune.with_resources(tune.with_parameters(trainable, context=...), {"cpu", "gpu"})`` (cpu always set:
    without it Ray reserves 0 CPU for the trial)."""
    from ray import tune

    from trainables.tune import train_trial

    resources = {"cpu": study.resources.cpu, "gpu": study.resources.gpu}
    return tune.with_resources(tune.with_parameters(trainable or train_trial, context=context), resources)


def build_tuner(study: StudyConfig, *, location: StudyLocation, init_checkpoint: str | None = None,
                trainable: Callable | None = None):
    """The one place a study becomes a ``ray.tune.Tuner`` (Ray must be initialised: parameters go to its
    object store)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from study.run.snapshots import StudyFIFO

    from study.run.search import PersistentASHA, StudySearch, trial_dirname

    configure_environment()
    metric, mode = study.study_metric, study.mode
    define = make_define_by_run(get_space(study.search.space), study.space_params,
                                grid=study.search.sampler == "grid", base=study.train)
    searcher = StudySearch(define, metric=metric, mode=mode, max_t=study.max_t, num_samples=study.num_samples,
                           study_dir=location.home if location.shared_fs else location.experiment_path,
                           sampler=make_sampler(study), study_name=study.name,
                           storage=optuna_storage(study, location.home))
    for key, value in (("num_samples", study.num_samples), ("metric", metric), ("mode", mode),
                       ("space", study.search.space), ("sampler", study.search.sampler),
                       ("sampler_seed", study.search.seed), ("max_t", study.max_t)):
        searcher._ot_study.set_user_attr(key, value)
    label_optuna_study(searcher._ot_study, metric=metric, param_names=list(study.describe_space()["dimensions"]))
    seeds = study.search.seeds
    if seeds:  # replicates: one Optuna trial per configuration, one Ray trial per (configuration, seed)
        from study.run.replicates import ReplicateASHA, ReplicateSearch

        searcher._ot_study.set_user_attr("replicate_seeds", list(seeds))
        searcher = ReplicateSearch(searcher, seeds=seeds)
    if study.scheduler.kind == "asha" and seeds:  # a configuration's seeds promoted or stopped together
        scheduler = ReplicateASHA(replicates=len(seeds), study_dir=location.home, max_t=study.max_t,
                                  grace_period=study.scheduler.grace_period,
                                  reduction_factor=study.scheduler.reduction_factor)
    elif study.scheduler.kind == "asha":
        scheduler = PersistentASHA(study_dir=location.home, time_attr="training_iteration",
                                   max_t=study.max_t, grace_period=study.scheduler.grace_period,
                                   reduction_factor=study.scheduler.reduction_factor)
    elif study.scheduler.kind in ("pbt", "pb2"):  # Ray refuses any searcher beside PBT: study/run/pbt.py

        pbt = pbt_parts(study, define=define, sampler=make_sampler(study), ot_study=searcher._ot_study,
                        home=location.home if location.shared_fs else None)
        searcher, scheduler = pbt.searcher, pbt.scheduler
    else:
        scheduler = StudyFIFO()

    trainable = wrap_trainable(study, pbt_context(study, trial_context(study, location, init_checkpoint)), trainable)
    tune_config = tune.TuneConfig(
        metric=metric, mode=mode, search_alg=searcher, scheduler=scheduler, num_samples=study.num_trials,
        # PBT: the population generator runs every member at once (resources permitting), as Ray's PBT needs; Ray
        # ignores max_concurrent_trials for a generator and said so in a warning on every PBT study
        max_concurrent_trials=None if study.scheduler.kind in ("pbt", "pb2") else study.max_concurrent_trials,
        reuse_actors=study.reuse_actors,
        trial_name_creator=trial_dirname, trial_dirname_creator=trial_dirname)
    from study.run.storage import study_callbacks

    extra_callbacks, stopper = study_callbacks(study, location)  # checkpoint janitor, store sync, pending watchdog
    run_config = tune.RunConfig(
        name=study.name, storage_path=ray_storage_path(location), storage_filesystem=ray_filesystem(location),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=study.checkpoints_to_keep,
                                                checkpoint_score_attribute=metric, checkpoint_score_order=mode),
        failure_config=tune.FailureConfig(max_failures=study.max_failures),
        sync_config=None if location.shared_fs else tune.SyncConfig(sync_artifacts=True),
        verbose=0,
        callbacks=[CSVLoggerCallback(), JsonLoggerCallback(),
                   study_progress(study), *extra_callbacks], stop=stopper)
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def study_progress(study: StudyConfig):
    """What a running study shows (study/run/progress.py): every trial named by its label, as TensorBoard, the
    report and ``study status`` name it (``#6 λ=0.0291 lr=0.0429``; a replicate: its configuration's Optuna number
    and its seed), its directory (``trial_<id>``) only where a path is wanted."""
    from study.run.progress import LiveProgress
    from study.run.search import StudyProgress, TrialLabels

    label_of = TrialLabels(list(study.describe_space()["dimensions"]), replicates=bool(study.search.seeds))
    metric, mode = study.study_metric, study.mode
    return LiveProgress(StudyProgress(metric=metric, mode=mode, max_t=study.max_t, num_samples=study.num_trials,
                                      name_of=label_of),
                        name_of=label_of, metric=metric, mode=mode, max_t=study.max_t, num_samples=study.num_trials,
                        max_concurrent=study.max_concurrent_trials, name=study.name)


# ---------------------------------------------------------------------------------------------------------
# baseline


















# ---------------------------------------------------------------------------------------------------------
# driver


def _preflight_cluster(study: StudyConfig, location: StudyLocation, log: Callable[[str], None]) -> None:
    nodes = cluster_nodes()
    from study.run.storage import preflight_study

    slots = preflight_study(study, location, nodes, log)  # autoscaler request, checkpoint volume
    check_storage_shared(location.ray_storage, nodes)
    log(f"cluster: {describe_nodes(nodes)}; {min(slots, study.max_concurrent_trials)} trial(s) at a time "
        f"(cpu {study.resources.cpu:g}, gpu {study.resources.gpu:g} each)")


def _fit(tuner, location: StudyLocation, study: StudyConfig):
    """``Tuner.fit`` with Ray's checkpoint deletions deferred on a filesystem storage until no stored experiment
    state can name them, so that Ray's forced snapshots can be switched off (study/run/snapshots.py). The ones still
    pending when ``fit`` returns (its final state has landed) are deleted then; if ``fit`` raises they stay.
    SIGINT / SIGTERM stop it gracefully and raise :class:`~study.run.interrupts.StudyInterrupted` once Ray has saved
    the state (study/run/interrupts.py); before that, each running trial saves its state at its current iteration
    (:func:`~study.run.interrupts.save_running_trials`; PBT studies stop at their last evaluation)."""
    from study.run.interrupts import save_running_trials
    from study.run.progress import running_trial_ids

    drain = (None if study.scheduler.kind in PBT_KINDS
             else lambda: save_running_trials(study.name, running_trial_ids))
    DEFERRED.enable()
    try:
        with graceful_stop(drain):
            fitted = tuner.fit()
    except BaseException:
        DEFERRED.disable()
        raise
    DEFERRED.flush()
    signum = stop_requested()
    # Ray saved its state and stopped the trials (resumable): say so, not "study ended"; unless every trial had
    # ended by then (a stop that came as the last trials finished: a requeued job would only find nothing to do)
    if signum is not None and finished_trials(study, location.home) is None:
        raise StudyInterrupted(signum, location.name)
    return fitted


def run_study(study: StudyConfig, *, storage: str | None = None, address: str | None = None,
              num_cpus: int | None = None, trainable: Callable | None = None,
              log: Callable[[str], None] = print):
    """Run a new study; returns ``(ResultGrid, StudyLocation)``. Never touches an existing study directory."""
    from study.run.autoscale import raise_if_pending_timeout
    location = locate(study.name, storage)
    if location.home.exists():
        raise FileExistsError(f"study directory {location.home} already exists; continue it with "
                              f"`dastudy study resume {study.name}` or choose another --name")
    # Every check that needs no cluster, before Ray starts: each trial's resolved config, files, datasets, URL.

    _, problems = diagnose(study, trials=trainable is None)
    import ray

    # the local Ray's resources, as the dry run checks them (an already running Ray, e.g. a test session, is used
    # as it is by ray_session: its own resources are checked once it runs)
    if address is None and trainable is None and not ray.is_initialized():
        from study.config.preflight import resource_problems
        from study.config.resources import local_node

        problems += resource_problems(study, location.home, [local_node(num_cpus)], where="this machine")[0]
    if problems:  # the first one's full message; the dry run lists them all, each with its fix
        if len(problems) > 1:
            print(f"{len(problems)} problems stop this study; `dastudy study run ... --dry-run` lists each with the "
                  "command that fixes it. The first:", file=sys.stderr)
        raise problems[0].error

    with hold_study(location, study, command=" ".join(mask_secrets(a) for a in sys.argv), new=True), \
            ray_session(address=address, num_cpus=num_cpus) as ray_temp_dir:
        _preflight_cluster(study, location, log)
        init_checkpoint, extra, baseline_run = None, {"ray_temp_dir": ray_temp_dir}, None
        if study.baseline is not None:
            baseline_run, init_checkpoint = prepare_baseline(study, storage_root=location.home.parent, log=log)
            if not location.shared_fs:  # trials on other nodes read it from the store, not the driver's disk
                from study.run.storage import publish_checkpoint

                init_checkpoint = publish_checkpoint(init_checkpoint, location.experiment_path)
            extra["baseline"] = {"config": study.baseline.config, "run_dir": str(baseline_run),
                                 "checkpoint": init_checkpoint}
        write_study_files(study, location, extra=extra)
        with study_lock(location.home, command=" ".join(mask_secrets(a) for a in sys.argv)):
            if baseline_run is not None:
                copy_baseline_files(baseline_run, location.home / "baseline", init_checkpoint)
            count = (f"{study.num_samples} configurations x {study.replicates} seeds = {study.num_trials} trials"
                     if study.search.seeds else f"{study.num_samples} trials")
            log(f"study {study.name}: {count} of space {study.search.space!r} "
                f"({study.search.sampler}, seed {study.search.seed}), metric {study.study_metric} ({study.mode}), "
                f"{study.scheduler.kind} max_t={study.max_t} -> {location.home}")
            tuner = build_tuner(study, location=location, init_checkpoint=init_checkpoint, trainable=trainable)
            results = _fit(tuner, location, study)
            raise_if_pending_timeout()  # the watchdog ended the study: trials could not start
    return results, location


def _restored_parts(tuner) -> tuple[Any, Any]:
    """The searcher and scheduler ``Tuner.restore`` unpickled from ``tuner.pkl``, to be bound to the study's
    current home before ``fit``. Ray has no public accessor for a restored Tuner's TuneConfig (and restores
    scheduler state not at all, ray#30838), so this reads a private attribute here and nowhere else;
    tests/study/test_tune_resume.py::test_restored_tuner_parts_are_reachable fails if an upgrade moves it."""
    config = tuner._local_tuner._tune_config
    return config.search_alg, config.scheduler












def resume_sampler(study: StudyConfig, storage):
    """The sampler of a resumed study: a new one seeded past the trials already asked. The restored one would
    replay the random state of Ray's last snapshot, so a trial asked after that snapshot (and adopted on resume)
    had its values drawn again, identically, for the next trial (issue 11). A grid keeps its seed: the seed fixes
    the grid's shuffled order, which maps each trial's grid id to its point (another order repeats points); its
    points come from trial numbers and the unvisited set, not from a replayed random state."""
    from dataclasses import replace

    import optuna

    if study.search.sampler == "grid":
        return make_sampler(study)

    try:
        asked = len(optuna.load_study(study_name=study.name, storage=storage).get_trials(deepcopy=False))
    except KeyError:  # no study in the storage yet
        asked = 0
    return make_sampler(replace(study, search=replace(study.search, seed=study.search.seed + asked)))






def _recover_driver_files(home: Path, provenance: dict[str, Any], log: Callable[[str], None]) -> None:
    """Ray's files of trials a killed driver of this study had not yet copied into it (study/state/driver_files.py)."""
    for found in recover_driver_files(home, driver_temp_dirs(provenance)):
        log(f"resume: recovered {found.files} file(s) of Ray's (params.json, result.json, ...) for "
            f"{len(found.trials)} trial(s) that started after the stopped driver's last snapshot "
            f"({', '.join(found.trials)}), from {found.staging}; that driver's Ray temp dir stays, with its logs")


def resume_study(home: Path, *, address: str | None = None, num_cpus: int | None = None,
                 trainable: Callable | None = None, allow_changed_space: bool = False,
                 log: Callable[[str], None] = print):
    """Continue an interrupted study: finished trials are kept, unfinished and errored ones resume from their last
    checkpoint, the searcher (with its Optuna study) is restored, ASHA rungs come back from ``asha_rungs.json``.

    Only one driver at a time (study/state/lock.py). Everything is located from ``home``, where the study is now: a
    moved or copied study continues there and writes nothing into its old location. A study file whose space
    was edited since the study ran is refused (:class:`SpaceChanged`) unless ``allow_changed_space``."""
    from ray import tune

    from study.run.autoscale import raise_if_pending_timeout
    from study.run.storage import bind_store

    home = Path(home)
    study, provenance = load_study_dir(home)
    ended = finished_trials(study, home)
    if ended is not None:
        raise StudyFinished(f"study {study.name} in {home} is finished ({ended}); nothing to resume")
    changes = space_changes(study, home, provenance)
    if changes and not allow_changed_space:
        raise SpaceChanged(f"{home / 'study.toml'}: the search space differs from the one this study ran with "
                           f"(space.json): {'; '.join(changes[:5])}{' ...' if len(changes) > 5 else ''}; restore "
                           "the file, or pass --allow-changed-space to sample the remaining trials from the new "
                           "space")
    location = StudyLocation(home=home, ray_storage=relocated_storage(provenance, home), name=study.name)

    with study_lock(home, command=" ".join(mask_secrets(a) for a in sys.argv)), \
            hold_study(location, study, command=" ".join(mask_secrets(a) for a in sys.argv)), \
            ray_session(address=address, num_cpus=num_cpus) as ray_temp_dir:
        if not tune.Tuner.can_restore(ray_experiment_path(location), storage_filesystem=ray_filesystem(location)):
            raise FileNotFoundError(f"{location.experiment_path}: no Ray experiment state (tuner.pkl) to resume; "
                                    "the study was interrupted before its first trial started")
        _preflight_cluster(study, location, log)
        init_checkpoint = relocated_checkpoint((provenance.get("baseline") or {}).get("checkpoint"), provenance,
                                                home)
        context = pbt_context(study, trial_context(study, location, init_checkpoint))
        if location.shared_fs:
            _recover_driver_files(home, provenance, log)
        provenance.setdefault("resumes", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                     "command": [mask_secrets(a) for a in sys.argv],
                                                     "versions": package_versions(), "home": str(home),
                                                     "hostname": platform.node(), "ray_temp_dir": ray_temp_dir,
                                                     **({"space_changes": changes} if changes else {})})
        write_json(home / "provenance.json", provenance)
        log(f"study {study.name}: resuming from {location.home}")
        tuner = tune.Tuner.restore(ray_experiment_path(location), trainable=wrap_trainable(study, context, trainable),
                                   resume_errored=True, storage_filesystem=ray_filesystem(location))
        searcher, scheduler = _restored_parts(tuner)
        storage = optuna_storage(study, home)
        searcher.bind(study_dir=home if location.shared_fs else location.experiment_path, storage=storage,
                      sampler=resume_sampler(study, storage))
        if changes:
            searcher.bind_space(make_define_by_run(get_space(study.search.space), study.space_params,
                                                   grid=study.search.sampler == "grid", base=study.train))
        if hasattr(scheduler, "bind"):
            scheduler.bind(study_dir=home)
        if not location.shared_fs:
            bind_store(home, location.experiment_path)  # the restored StoreSync syncs this home
        results = _fit(tuner, location, study)
        raise_if_pending_timeout()
        if hasattr(searcher, "record_reruns"):
            searcher.record_reruns(results)  # failed trials this resume ran to an end
    return results, location
