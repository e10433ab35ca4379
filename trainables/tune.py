"""Ray Tune function trainables around the training engine (the only module of ``trainables`` importing Ray).

No training logic lives here: a trial builds a :class:`trainables.engine.Trainer` from the study's base run
config plus the overrides its searcher sampled, and a reporter turns each evaluation into one ``tune.report``
with the metrics and a full-state checkpoint (so ``training_iteration`` = number of evaluations = ASHA's time
unit, and a restarted trial continues bit-exactly from ``tune.get_checkpoint()``).

Only ``ray.tune`` is used: in Ray 2.60 the Ray Train entry points (report, get_checkpoint) raise inside Tune trainables.

Where a trial writes: its engine run directory (``config.toml``, ``provenance.json``, ``metrics.jsonl``, ``tb/``
with clean TensorBoard tags) is ``<study_dir>/<trial_dir>/run``, written directly when the study storage is a
filesystem path (local, or a network filesystem mounted at the same path on every node). With an object-store
URI (``s3://...``) the run directory is the trial's working directory and Ray uploads it with
``SyncConfig(sync_artifacts=True)``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ray import tune

from trainables import faults
from trainables.config import TrainConfig, from_dict, merge, replace_path
from trainables.lineage import PBT_MUTABLE_KEY
from trainables.reporters import JsonLinesReporter, Reporter
from trainables.staging import staging_prefix, sweep_stale_staging

__all__ = ["TrialContext", "TrialFailed", "train_trial", "oom_reason", "FINAL_FAILURES", "apply_overrides",
           "trial_train_config", "estimate_gpu_memory_gib", "gpu_share", "run_baseline", "FINISHED_KEY",
           "FAILURE_FILE", "RUN_SUBDIR", "probe_trial", "LAST_EVAL_FILE", "tune_summary", "PBT_MUTABLE_KEY",
           "STOP_STATE", "stop_channel_name", "open_stop_channel", "check_node"]

FINISHED_KEY = "finished"  # 1.0 in the report of the evaluation that ends a full run
FAILURE_FILE = "failure.json"  # why a trial failed, next to Ray's error.txt in the trial directory
# Failures that would repeat from the same checkpoint: a retry (FailureConfig.max_failures, `study resume`) fails
# at once instead of training again. A crash or a killed worker is retried from the last checkpoint.
FINAL_FAILURES = ("diverged", "oom", "resources")
RUN_SUBDIR = "run"  # the engine's run directory inside the trial directory
# <run>/last_eval.json: the latest evaluation (every metric, per-class IoUs included), rewritten at each evaluation,
# so that `study report`/`study status` read one small file per trial instead of every line of metrics.jsonl.
LAST_EVAL_FILE = "last_eval.json"
GIB = 1024 ** 3
# <run>/checkpoints/stop.pt: the full state a trial saved at its current iteration when the study was stopped
# gracefully (SIGTERM at a SLURM time limit, Ctrl-C); its next start continues from it, not from the evaluation
# before, when it lies between that evaluation and the next.
STOP_STATE = "stop.pt"
STOP_NAMESPACE = "dastudy"


class TrialFailed(RuntimeError):
    """A trial that must end now (diverged, out of its GPU share); the message is the reason shown everywhere."""


@dataclass(frozen=True)
class TrialContext:
    """Read-only inputs shared by every trial of a study (passed once through ``tune.with_parameters``).

    ``train``: the base run config dict (paths absolute); ``study_dir``: the study directory when the storage is a
    filesystem path ("" for an object-store URI); ``metric``: the reported key the study optimises;
    ``init_checkpoint``: the baseline's checkpoint; ``gpu``: the per-trial GPU request (fraction or whole);
    ``store``: with object storage, the study's URI in the store (``s3://bucket/prefix/<study>``), where failure
    records go so that a retry on another node sees them ("" for a filesystem storage).
    """

    train: Mapping[str, Any]
    study_dir: str
    metric: str
    init_checkpoint: str | None = None
    gpu: float = 0.0
    metric_tags: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    store: str = ""
    checkpoint_every: int = 1  # every k-th evaluation (and the last) carries a checkpoint


# ---------------------------------------------------------------------------------------------------------
# configuration


def _config_key(name: str) -> str:
    # A space may qualify a dimension (optim.lr@deeplabv2_tiny: the lr range of that backbone); it sets optim.lr.
    return name.split("@", 1)[0]


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The base run config dict with each dotted override (``adapt.lambda_adv_main``) set; keys are applied
    in sorted order so that the result does not depend on the searcher's dict order."""
    out = merge(base, {})
    for name in sorted(overrides):
        out = replace_path(out, _config_key(name), overrides[name])
    return out


def trial_train_config(context: TrialContext, config: Mapping[str, Any], *, trial_name: str) -> TrainConfig:
    """The validated run config of one trial (the study's base + the sampled overrides + the baseline init)."""
    data = apply_overrides(context.train, config)
    if context.init_checkpoint:
        init = context.init_checkpoint
        if "://" in init:  # the baseline's checkpoint in the study's object store: one download per node
            from trainables.objectstore import local_copy

            init = local_copy(init)
        data = replace_path(data, "model.init_checkpoint", init)
    data = replace_path(data, "name", trial_name)
    data = replace_path(data, "runtime.progress", False)
    return from_dict(TrainConfig, data, source=f"trial {trial_name} (sampled {dict(config)})")


# ---------------------------------------------------------------------------------------------------------
# GPU shares

# Measured on an H100 (shared/reference/environment.md, 2026-11-26): one AdaptSegNet adversarial step of
# DeeplabMulti ResNet-101, 19 classes, source 1280x720 + target 1024x512, two discriminators. Peak GiB by
# (amp, batch): bf16 1 → 4.0, bf16 4 → 14.4, fp32 1 → 7.0, fp32 4 → 26.9. A line through each pair gives a fixed
# part (weights, optimizer state, workspace) and a part per image pair that scales with the pixel count.
_REF_PIXELS = 1280 * 720 + 1024 * 512
_FIXED_GIB = {"bf16": 4.0 - (14.4 - 4.0) / 3, "off": 7.0 - (26.9 - 7.0) / 3}
_PER_PAIR_GIB = {"bf16": (14.4 - 4.0) / 3, "off": (26.9 - 7.0) / 3}


def _pixels(domain) -> int:
    width, height = domain.crop or domain.size
    return width * height


def estimate_gpu_memory_gib(cfg: TrainConfig) -> float:
    """Peak GPU memory of one training step of ``cfg`` in GiB, scaled from the measured ResNet-101 step by
    batch size and pixel count (source-only steps count the source image only). An upper bound for the small
    CPU variants; DeepLabV3+ is assumed to cost what DeepLabV2 does (not measured)."""
    pixels = _pixels(cfg.data.source)
    if cfg.adapt.mode != "source_only" and cfg.data.target is not None:
        pixels += _pixels(cfg.data.target)
    amp = "bf16" if cfg.runtime.amp == "bf16" else "off"
    return _FIXED_GIB[amp] + _PER_PAIR_GIB[amp] * cfg.optim.batch_size * pixels / _REF_PIXELS


def gpu_share(cfg: TrainConfig, fraction: float) -> float | None:
    """Cap this process's CUDA allocator at ``fraction`` of the device (0 < fraction < 1) so that one trial's
    out-of-memory cannot take its neighbours down, and fail now when the estimate does not fit the share.
    Returns the cap in GiB (None: no cap, e.g. no CUDA or a whole GPU)."""
    import torch

    if not (0 < fraction < 1) or cfg.runtime.device == "cpu" or not torch.cuda.is_available():
        return None
    device = torch.device(cfg.runtime.device if cfg.runtime.device.startswith("cuda") else "cuda")
    total = torch.cuda.get_device_properties(device).total_memory / GIB
    cap = fraction * total
    need = estimate_gpu_memory_gib(cfg)
    if need > cap:
        raise TrialFailed(f"needs about {need:.1f} GiB of GPU memory (batch {cfg.optim.batch_size}, amp "
                          f"{cfg.runtime.amp}, scaled from the measured ResNet-101 step) but its share is "
                          f"{cap:.1f} GiB (gpu = {fraction} of {total:.0f} GiB): raise resources.gpu, lower "
                          f"optim.batch_size / image size, or use runtime.amp = 'bf16'")
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return cap


# ---------------------------------------------------------------------------------------------------------
# the trainable


def _finite_numbers(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _per_class(key: str) -> bool:
    return key.startswith("IoU/") or "/IoU/" in key


def tune_summary(values: Mapping[str, Any]) -> dict[str, float]:
    """What Tune receives: finite scalar summaries without the per-class IoUs. Ray keeps every reported key of
    every trial in its experiment state and snapshots it over and over; 19 per-class values per report made a
    1,000-trial state 28 MB (issue 12). They stay in metrics.jsonl, last_eval.json and TensorBoard."""
    return {k: v for k, v in _finite_numbers(values).items() if not _per_class(k)}


def tune_payload(metrics: Mapping[str, Any], *, iteration: int, finished: bool,
                 timings: Mapping[str, float] | None = None) -> dict[str, float]:
    """What one evaluation sends to Tune: the evaluation's scalar summaries (:func:`tune_summary`), the engine
    iteration, :data:`FINISHED_KEY` on the last one and the trial's timings. Nothing else: Ray tracks every numeric
    key of every trial in its experiment state, which each snapshot re-encodes (issue 12); the training scalars
    (losses, learning rates) are in ``run/metrics.jsonl`` and TensorBoard, where the report and users read them."""
    payload = {**tune_summary(metrics), "iteration": iteration, **(timings or {})}
    if finished:
        payload[FINISHED_KEY] = 1.0
    return payload


class _TuneReporter(Reporter):
    """One ``tune.report`` per evaluation (:func:`tune_payload`) with a full-state checkpoint; ``last_eval.json``
    with every metric of that evaluation in the run directory."""

    def __init__(self, *, metric: str, started: float, run_dir: Path | None = None, checkpoint_every: int = 1):
        self.metric = metric
        self.started = started
        self.run_dir = run_dir
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.engine_started: float | None = None

    def on_start(self, trainer) -> None:
        self.engine_started = time.perf_counter()

    def on_evaluate(self, iteration: int, metrics: dict[str, float], trainer) -> None:
        value = metrics.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            # Never report NaN: ASHA never prunes it and Optuna refuses it (the trial would stay RUNNING).
            raise TrialFailed(f"diverged at iteration {iteration}: {self.metric} = {value}")
        now = time.perf_counter()
        report = tune_payload(metrics, iteration=iteration, finished=iteration >= trainer.total_iterations,
                              timings={"time/setup_s": (self.engine_started or now) - self.started,
                                       "time/engine_s": now - (self.engine_started or now)})
        if self.run_dir is not None:
            from trainables.rundir import write_json_atomic

            with contextlib.suppress(OSError, ValueError):
                write_json_atomic(self.run_dir / LAST_EVAL_FILE, _json_safe({
                    "iteration": iteration, "time": time.time(), "finished": iteration >= trainer.total_iterations,
                    **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}))
        evaluation = math.ceil(iteration / trainer.cfg.eval.interval)
        if evaluation % self.checkpoint_every and iteration < trainer.total_iterations:
            tune.report(report)  # no checkpoint this time (checkpoint_every): no snapshot forced by it either
            return
        with tempfile.TemporaryDirectory(prefix=staging_prefix()) as tmp:  # trainables/staging.py
            trainer.save_checkpoint(Path(tmp) / "state.pt")
            faults.inject("checkpoint", iteration, seed=trainer.cfg.runtime.seed)  # test-only: not yet in Ray
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
        if self.run_dir is not None:  # Ray holds a later state now than a graceful stop saved: never used again
            with contextlib.suppress(OSError):
                (self.run_dir / "checkpoints" / STOP_STATE).unlink()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _trial_dir(context: TrialContext) -> Path:
    name = Path(tune.get_context().get_trial_dir()).name
    if context.study_dir:
        return Path(context.study_dir) / name
    return Path.cwd()  # object-store storage: Ray uploads the working directory (sync_artifacts)


def _store_path(context: TrialContext, trial_dir: Path) -> str | None:
    return f"{context.store.rstrip('/')}/{trial_dir.name}/{FAILURE_FILE}" if context.store else None


def _write_failure(trial_dir: Path, kind: str, reason: str, context: TrialContext | None = None) -> None:
    text = json.dumps({"kind": kind, "reason": reason, "time": time.time()})
    try:
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / FAILURE_FILE).write_text(text)
    except OSError:
        pass  # the reason still reaches Ray's error.txt through the exception
    uri = _store_path(context, trial_dir) if context is not None else None
    if uri is not None:  # object storage: the working directory is this node's; a retry elsewhere reads the store
        from trainables.objectstore import write_bytes

        with contextlib.suppress(OSError):
            write_bytes(uri, text.encode())


def _node_label() -> str:
    import socket

    import ray

    context = ray.get_runtime_context()
    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()}, node {context.get_node_id()[:8]})"


def check_node(context: TrialContext) -> None:
    """On the node Ray placed this trial on, whenever a trial starts: the study's storage is there. A cluster that
    scales from zero has one node when the driver's own check runs, so this is where a worker that joined later
    and lacks the shared mount, or the store's credentials, is found; the error is one line naming the node."""
    if context.study_dir:
        if not (Path(context.study_dir) / "study.toml").is_file():
            raise TrialFailed(
                f"node {_node_label()} does not see the study directory {context.study_dir} (no study.toml there): "
                "mount the shared storage at the same path on every node, or use an object store "
                "(--storage s3://...); see docs/cluster.md")
    elif context.store:
        from trainables.objectstore import exists

        try:
            exists(context.store)
        except Exception as err:  # pyarrow raises OSError for auth, endpoint and network problems alike
            reason = (str(err).strip().splitlines() or [""])[0][:200]
            raise TrialFailed(
                f"node {_node_label()} cannot reach the study's store {context.store} ({type(err).__name__}: "
                f"{reason}): give every node the store's credentials and endpoint (AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY or an instance or pod role; AWS_ENDPOINT_URL for a non-AWS store)") from None


def _final_failure(trial_dir: Path, context: TrialContext | None = None) -> str | None:
    uri = _store_path(context, trial_dir) if context is not None else None
    try:
        if uri is not None:
            from trainables.objectstore import read_bytes

            data = json.loads(read_bytes(uri))
        else:
            data = json.loads((trial_dir / FAILURE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("reason")) if isinstance(data, dict) and data.get("kind") in FINAL_FAILURES else None


def oom_reason(err: BaseException, *, cap_gib: float | None, share: float) -> str:
    """The failure reason of a trial that ran out of GPU memory: its memory cap and what to change."""
    text = str(err).strip()
    detail = text.splitlines()[0] if text else type(err).__name__
    if cap_gib is not None:
        where = f"its memory cap of {cap_gib:.1f} GiB (resources.gpu = {share:g} of the device)"
    elif 0 < share < 1:
        where = f"its GPU share (resources.gpu = {share:g}; no memory cap was set: torch saw no CUDA device)"
    elif share >= 1:
        where = f"{share:g} whole GPU(s) (resources.gpu = {share:g}, no memory cap)"
    else:
        where = "a GPU it did not request (resources.gpu = 0, no memory cap)"
    return (f"CUDA out of memory within {where}: lower optim.batch_size or the image size, use "
            f"runtime.amp = 'bf16', or raise resources.gpu ({detail})")


def _is_oom(err: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError, or a plain RuntimeError from code paths (and torch versions) that raise one
    return type(err).__name__ == "OutOfMemoryError" or (isinstance(err, RuntimeError)
                                                         and "out of memory" in str(err).lower())


def train_trial(config: dict[str, Any], *, context: TrialContext) -> None:
    """The Ray function trainable of a study (source-only or adversarial, as the run config says)."""
    started = time.perf_counter()
    sweep_stale_staging()  # checkpoints that killed trials left in this node's temp folder
    check_node(context)  # before anything is written: a node without the storage gets one line, nothing else
    trial_dir = _trial_dir(context)
    previous = _final_failure(trial_dir, context)
    if previous is not None:  # a retry of a divergence / OOM would only repeat it
        raise TrialFailed(f"{previous} (not retried: it would repeat from the same checkpoint)")
    from trainables.engine import Trainer, TrainingDiverged
    from trainables.rundir import append_resume, write_config, write_json_atomic, write_provenance

    run_dir = trial_dir / RUN_SUBDIR
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and run_dir.is_dir() and any(run_dir.iterdir()):
        # A restart without a checkpoint (it failed or was killed before its first evaluation): keep what the
        # earlier attempt wrote next to the fresh run instead of mixing both in one metrics file.
        attempt = 1
        while (trial_dir / f"{RUN_SUBDIR}.attempt-{attempt}").exists():
            attempt += 1
        run_dir.rename(trial_dir / f"{RUN_SUBDIR}.attempt-{attempt}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = trial_train_config(context, config, trial_name=trial_dir.name)
    faults.inject("start", seed=cfg.runtime.seed)  # test-only (DASTUDY_FAULT)
    cap = None
    try:
        cap = gpu_share(cfg, context.gpu)
    except TrialFailed as err:
        _write_failure(trial_dir, "resources", str(err), context)
        raise
    reporters: list[Any] = [JsonLinesReporter(run_dir / "metrics.jsonl")]
    try:
        from trainables.tensorboard import TensorBoardReporter, param_label

        hparams = {param_label(k): v for k, v in sorted(config.items())}  # the names status and reports use
        reporters.append(TensorBoardReporter(run_dir / "tb", hparams=hparams, metric_tags=context.metric_tags,
                                             hparam_domains=context.extra.get("hparam_domains")))
    except ImportError:
        pass
    mutable = tuple(context.extra.get(PBT_MUTABLE_KEY, ()))  # population-based training: the mutated keys
    lineage = None
    if mutable:
        from trainables.lineage import LineageReporter

        lineage = LineageReporter(run_dir, keys=mutable, metric=context.metric, name=trial_dir.name)
        reporters.append(lineage)
    ray_reporter = _TuneReporter(metric=context.metric, started=started, run_dir=run_dir,
                                 checkpoint_every=context.checkpoint_every)
    reporters.append(ray_reporter)

    trainer = Trainer(cfg, None, reporters=reporters)
    if checkpoint is not None:
        from trainables.checkpoint import read_checkpoint

        # PBT exploits by restarting this trial with a new config from another member's (the donor's) latest
        # checkpoint: exactly the mutated keys may differ from the donor's config, and the state is the donor's.
        # Not checkpoint.as_directory(): its download folder is named after the checkpoint, so a donor resuming
        # from its own checkpoint while a clone restarts from it (PBT with synch) shared and removed one folder
        # (a torn state.pt, seen in tests/study/test_pbt_ray.py). A private copy per restart instead.
        context_dir = (tempfile.TemporaryDirectory(prefix=staging_prefix()) if mutable
                       else checkpoint.as_directory())
        with context_dir as directory:
            if mutable:
                checkpoint.to_directory(directory)
            state = read_checkpoint(Path(directory) / "state.pt")
            trainer.load_state_dict(state, source=f"{checkpoint.path}/state.pt", allow_changes=mutable)
        if lineage is not None:
            lineage.origin = (str(((state.get("meta") or {}).get("config") or {}).get("name", trial_dir.name)),
                              trainer.iteration)
        del state
        stopped_at = None if mutable else _continue_from_stop_state(trainer, run_dir)
        append_resume(run_dir, checkpoint=stopped_at or Path(checkpoint.path), iteration=trainer.iteration,
                      device=str(trainer.device))
    else:
        import ray

        write_provenance(run_dir, cfg, device=str(trainer.device),
                         extra={"trial": trial_dir.name, "sampled": dict(config), "gpu_share": context.gpu,
                                "gpu_memory_cap_gib": cap, "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                                "ray_node_id": ray.get_runtime_context().get_node_id()})
    write_config(run_dir, cfg)
    status, message = "completed", None
    watch = None
    if context.extra.get("stop_channel") and not mutable:  # PBT's members are saved and cloned by Ray itself
        watch = _StopWatch(trainer, name=str(context.extra["stop_channel"]), path=run_dir / "checkpoints" / STOP_STATE,
                           trial_id=tune.get_context().get_trial_id())
    try:
        trainer.fit()
    except TrainingDiverged as err:
        status, message = "diverged", str(err)
        _write_failure(trial_dir, "diverged", message, context)
        raise TrialFailed(message) from None
    except TrialFailed as err:
        status, message = "diverged", str(err)
        _write_failure(trial_dir, "diverged", message, context)
        raise
    except SystemExit:  # Ray stops a trial (ASHA, the end of the study) by exiting its thread at a report
        status, message = "stopped", "stopped by Ray (the scheduler, or the study ended)"
        raise
    except BaseException as err:
        status, message = "failed", f"{type(err).__name__}: {err}"
        if _is_oom(err):
            message = oom_reason(err, cap_gib=cap, share=context.gpu)
            _write_failure(trial_dir, "oom", message, context)
            raise TrialFailed(message) from None
        if isinstance(err, Exception):  # the reason Optuna and the report show if no retry succeeds
            _write_failure(trial_dir, "error", message, context)
        raise
    finally:
        if watch is not None:
            watch.close()
        trainer.close()
        result = trainer.result(status=status, message=message, wall_s=time.perf_counter() - started)
        with contextlib.suppress(OSError, ValueError):
            write_json_atomic(run_dir / "result.json", _json_safe(result))
        for reporter in reporters:
            try:
                reporter.on_end(result)
            except Exception:
                pass


# ---------------------------------------------------------------------------------------------------------
# graceful stop: each running trial saves its state at its current iteration before Ray stops it


def stop_channel_name(study_name: str) -> str:
    """The named Ray actor through which a study's driver asks its trials to save now (one driver per study)."""
    return f"dastudy-stop-{study_name}"


class _StopChannel:
    """The driver creates it when a stop is asked for; trials find it by name, save, report, and hold."""

    def __init__(self):
        self.saved: dict[str, int] = {}

    def report_saved(self, trial_id: str, iteration: int) -> None:
        self.saved[trial_id] = iteration

    def saved_trials(self) -> dict[str, int]:
        return dict(self.saved)


def open_stop_channel(study_name: str):
    """Create the study's stop channel (the driver, on SIGTERM/SIGINT): every trial that finds it saves its state
    at the iteration it is in, reports ``(trial_id, iteration)`` to it, and holds until Ray stops it. The actor
    lives as long as the driver (not detached) and takes no CPU. Returns the actor handle."""
    import ray

    actor_class = ray.remote(num_cpus=0, max_concurrency=64)(_StopChannel)
    return actor_class.options(name=stop_channel_name(study_name), namespace=STOP_NAMESPACE,
                               get_if_exists=True).remote()


class _StopWatch:
    """A daemon thread in the trial: every ``poll_s`` it looks for the study's stop channel; once it exists, the
    engine saves ``path`` after its current iteration and the training thread holds there (no iteration is
    trained that the study would lose), reporting the save, until Ray stops the trial. If the channel vanishes
    (its driver died before stopping Ray), training goes on."""

    def __init__(self, trainer, *, name: str, path: Path, trial_id: str, poll_s: float = 1.0):
        import threading

        self.trainer, self.name, self.path, self.trial_id, self.poll_s = trainer, name, path, trial_id, poll_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dastudy-stop-watch", daemon=True)
        self._thread.start()

    def _channel(self):
        import ray

        try:
            return ray.get_actor(self.name, namespace=STOP_NAMESPACE)
        except ValueError:  # not created: no stop asked for
            return None

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            if self._channel() is not None:
                self.trainer.request_save(self.path, self._hold)
                return

    def _hold(self, iteration: int, path: Path) -> None:
        import ray

        channel = self._channel()
        if channel is None:
            return
        ray.get(channel.report_saved.remote(self.trial_id, iteration))
        print(f"stop requested: state saved at iteration {iteration} ({path}); waiting to be stopped", flush=True)
        while self._channel() is not None:
            time.sleep(self.poll_s)

    def close(self) -> None:
        self._done.set()


def _continue_from_stop_state(trainer, run_dir: Path) -> Path | None:
    """Load ``<run>/checkpoints/stop.pt`` into ``trainer`` (just restored from Ray's checkpoint) when it continues
    that checkpoint: its iteration lies after the restored one and before the next evaluation (a later Ray
    checkpoint, or an older stop, fall outside). Returns the file used, or None."""
    from trainables.checkpoint import CheckpointError, read_checkpoint

    path = run_dir / "checkpoints" / STOP_STATE
    if not path.is_file():
        return None
    try:
        state = read_checkpoint(path, what="stop state")
    except CheckpointError as err:  # torn by a kill while saving: Ray's checkpoint stands
        print(f"note: {err}; continuing from the last evaluation", flush=True)
        return None
    if not trainer.iteration < int(state.get("iteration", -1)) < trainer.next_eval_iteration:
        return None
    trainer.load_state_dict(state, source=str(path))
    return path


# ---------------------------------------------------------------------------------------------------------
# baseline and probes


def run_baseline(train: Mapping[str, Any], run_dir: str, *, resume: bool = False) -> dict[str, Any]:
    """Train the source-only baseline into ``run_dir`` (run as a Ray task by the study driver)."""
    from trainables.engine import run_training

    cfg = from_dict(TrainConfig, train, source=f"baseline {run_dir}")
    cfg = replace(cfg, runtime=replace(cfg.runtime, progress=False))
    reporters = []
    try:  # the baseline's curves next to the trials' in the study's TensorBoard
        from trainables.tensorboard import TensorBoardReporter

        reporters.append(TensorBoardReporter(Path(run_dir) / "tb"))
    except ImportError:
        pass
    return run_training(cfg, run_dir, reporters=reporters, resume=resume)


def probe_trial(config: dict[str, Any], *, context: TrialContext) -> None:
    """A trainable that trains nothing (no torch): measures Ray's per-trial cost and checks trial packing.

    It waits (up to 60 s) until as many probes have started as the study runs at once (``max_concurrent_trials``
    of its ``study.toml``, at most ``num_samples``), so a study of probes proves that its trials really ran
    together, then reports ``steps`` times. ``probe.json`` in the trial directory records the process, node,
    GPU ids and wall-clock interval.
    """
    import tomllib

    import ray

    started = time.time()
    trial_dir = _trial_dir(context)
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "probe.started").write_text(str(started))
    expected = 1
    if context.study_dir and (Path(context.study_dir) / "study.toml").is_file():
        study = tomllib.loads((Path(context.study_dir) / "study.toml").read_text())
        expected = min(int(study.get("max_concurrent_trials", 1)), int(study.get("num_samples", 1)))
    deadline = time.time() + 60
    while len(list(trial_dir.parent.glob("trial_*/probe.started"))) < expected and time.time() < deadline:
        time.sleep(0.05)
    together = time.time()
    steps, sleep_s = int(config.get("steps", 2)), float(config.get("sleep_s", 0.2))
    for step in range(1, steps + 1):
        time.sleep(sleep_s)
        faults.inject("step", step)  # test-only (DASTUDY_FAULT): a probe trial can crash like a real one
        tune.report({context.metric: float(config.get("value", step)), "iteration": step,
                     "probe/waited_s": together - started, **({FINISHED_KEY: 1.0} if step == steps else {})})
    (trial_dir / "probe.json").write_text(json.dumps({
        "start": started, "end": time.time(), "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "expected_together": expected, "waited_s": together - started, "config": dict(config)}))


def checkpoint_state_bytes(cfg: TrainConfig) -> int:
    """Bytes of one full-state checkpoint of ``cfg`` (what each ``tune.report`` saves): the segmentation network's
    weights and buffers, SGD momentum, each discriminator with its two Adam moments. Counted on torch's meta
    device (no memory, no weight download); the RNG, stream and metric entries are a few KiB and ignored."""
    import torch

    from trainables.builders import build_discriminators, build_segmentation_model

    cfg = replace(cfg, model=replace(cfg.model, weights=None, init_checkpoint=None))

    def nbytes(module: torch.nn.Module, *, param_copies: int) -> int:
        params = sum(p.numel() * p.element_size() for p in module.parameters())
        buffers = sum(b.numel() * b.element_size() for b in module.buffers())
        return params * param_copies + buffers

    with torch.device("meta"):
        model = build_segmentation_model(cfg)
        total = nbytes(model, param_copies=2 if cfg.optim.momentum else 1)
        if cfg.adapt.mode == "adversarial":
            total += sum(nbytes(d, param_copies=3) for d in build_discriminators(cfg).values())
    return int(total)


def checkpoint_probe(config: dict[str, Any], *, context: TrialContext) -> None:
    """A trainable that trains nothing but reports like a real trial: one report per evaluation of the study's
    run config, each with a checkpoint of ``DASTUDY_PROBE_CKPT_BYTES`` bytes (default 1 MiB; a full-state
    DeepLabV2 checkpoint is ~400 MiB). Its metric rises at a rate set by the sampled values, so ASHA prunes some
    trials; a trial whose rate falls under ``DASTUDY_PROBE_DIVERGE_BELOW`` (unset: never) diverges at its second
    evaluation, recorded like a real divergence, and is not retried (as :func:`train_trial`). Each report also
    appends to ``run/probe.jsonl`` (the run directory: synced to an object store like TensorBoard events) and
    sleeps ``DASTUDY_PROBE_SLEEP_S`` (default 0). For the checkpoint-economy and object-storage tests."""
    import hashlib

    size = int(os.environ.get("DASTUDY_PROBE_CKPT_BYTES", str(1 << 20)))
    sleep_s = float(os.environ.get("DASTUDY_PROBE_SLEEP_S", "0"))
    diverge_below = float(os.environ.get("DASTUDY_PROBE_DIVERGE_BELOW", "-1"))
    train = from_dict(TrainConfig, apply_overrides(context.train, config), source="checkpoint probe")
    total = math.ceil(train.optim.iterations / train.eval.interval)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).digest()
    rate = int.from_bytes(digest[:4], "big") / 2 ** 32  # deterministic in the sampled values, in [0, 1)
    trial_dir = _trial_dir(context)
    previous = _final_failure(trial_dir, context)
    if previous is not None:
        raise TrialFailed(f"{previous} (not retried: it would repeat from the same checkpoint)")
    (trial_dir / RUN_SUBDIR).mkdir(parents=True, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    start = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = int(json.loads((Path(directory) / "step.json").read_text())["step"])
    for step in range(start + 1, total + 1):
        if rate < diverge_below and step == 2:
            message = f"diverged at evaluation {step}: {context.metric} = nan (probe)"
            _write_failure(trial_dir, "diverged", message, context)
            raise TrialFailed(message)
        time.sleep(sleep_s)
        with (trial_dir / RUN_SUBDIR / "probe.jsonl").open("a") as log:
            log.write(json.dumps({"step": step, "time": time.time()}) + "\n")
        with tempfile.TemporaryDirectory(prefix="dastudy-probe-") as tmp:
            (Path(tmp) / "state.bin").write_bytes(os.urandom(min(size, 1 << 16)) * max(1, size >> 16)
                                                  if size >= 1 << 16 else os.urandom(size))
            (Path(tmp) / "step.json").write_text(json.dumps({"step": step}))
            tune.report({context.metric: rate * step / total, "iteration": step,
                         **({FINISHED_KEY: 1.0} if step == total else {})},
                        checkpoint=tune.Checkpoint.from_directory(tmp))
