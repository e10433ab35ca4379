"""The training engine: :class:`Trainer` (one run's state and loop) and :func:`run_training` (a run directory).

Source-only training and output-space adversarial adaptation (AdaptSegNet, https://arxiv.org/abs/1802.10349)
share the loop; ``cfg.adapt.mode`` picks the step function (:mod:`trainables.steps`). Logging, metrics files,
progress bars, TensorBoard and Ray reporting are reporters (:mod:`trainables.reporters`), not loop code.
Nothing here imports Ray.

Typical use by a wrapper (e.g. Ray Tune)::

    trainer = Trainer(cfg, None, reporters=[my_reporter])      # my_reporter.on_evaluate saves a checkpoint
    if checkpoint_file: trainer.load_checkpoint(checkpoint_file)
    while trainer.iteration < trainer.total_iterations:
        trainer.fit(until_iteration=trainer.next_eval_iteration)
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

import models
from trainables import builders, faults
from trainables.checkpoint import CheckpointError, atomic_save, checkpoint_meta, read_checkpoint
from trainables.config import ConfigError, TrainConfig, flatten, to_dict
from trainables.device import resolve_device  # re-exported: callers import it from the engine
from trainables.evaluation import evaluate_model
from trainables.losses import GANLoss
from trainables.reporters import JsonLinesReporter, Reporter, StopTraining
from trainables.rundir import (RunManifest, append_resume, best_checkpoint, last_checkpoint, prepare_run_dir,
                               write_config, write_json_atomic, write_provenance)
from trainables.schedules import apply_poly, remember_base_lrs
from trainables.seeding import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from trainables.steps import adaptation_step, source_only_step
from trainables.streams import BatchStream
from trainables.validators import build_validator_set

__all__ = ["Trainer", "TrainingDiverged", "run_training", "resolve_device", "make_optimizer", "RESUMABLE_CHANGES"]

logger = logging.getLogger("dastudy.train")

# Config keys that may differ between a checkpoint and the run resuming it (they do not change the trajectory,
# or extend it: a larger optim.iter_stop continues the same poly schedule).
RESUMABLE_CHANGES = ("name", "runtime.", "optim.iter_stop", "eval.interval", "eval.max_images", "eval.batch_size",
                     "eval.flip", "data.workers", "data.cache", "data.source.root", "data.target.root",
                     "data.val.root", "eval.validators", "eval.validator_images", "eval.validator_pixels")
NUM_EVAL_SAMPLES = 3


class TrainingDiverged(RuntimeError):
    """A loss or the network's output became NaN/Inf; the run stops instead of reporting NaN metrics."""

    def __init__(self, iteration: int, name: str, value: float, detail: str = ""):
        self.iteration, self.name, self.value, self.detail = iteration, name, value, detail
        super().__init__(f"diverged at iteration {iteration} ({name} = {value})" + (f": {detail}" if detail else ""))

    def __reduce__(self):
        # Pickled by Ray to the driver: rebuild from the fields, not from the formatted message (see ConfigError).
        return type(self), (self.iteration, self.name, self.value, self.detail), self.__dict__


def make_optimizer(cls: type[torch.optim.Optimizer], params, **kwargs) -> torch.optim.Optimizer:
    """``cls(params, fused=True, **kwargs)`` where this torch supports a fused step for the parameters' device, else
    torch's default implementation.

    The fused step updates every parameter in one kernel per tensor list instead of a Python loop over tensors:
    measured on the 2-core CPU (docs/performance.md) SGD+Adam of deeplabv2_tiny 1.83 -> 0.47 ms per step, of the
    ResNet-101 DeepLabV2 76 -> 23 ms. torch >= 2.4 has fused SGD/Adam on CUDA and CPU; older versions or other
    devices raise, and the default (foreach on CUDA) is used.
    """
    params = list(params)
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


class Trainer:
    """State and loop of one run. ``run_dir=None``: nothing is written unless asked (``save_checkpoint``).

    Attributes used by reporters and wrappers: ``cfg``, ``iteration``, ``total_iterations``,
    ``next_eval_iteration``, ``num_classes``, ``model``, ``discriminators``, ``best``, ``last_metrics``,
    ``last_eval_samples`` (≤ 3 dicts ``{"image": uint8 H×W×3 RGB, "label": int64 H×W, "pred": int64 H×W}``),
    ``init_summary`` (the ``LoadSummary`` of ``model.init_checkpoint``), ``stop_reason``.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path | None = None, *, reporters: Iterable[Reporter] = ()):
        builders.validate_config(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.reporters = list(reporters)
        self.manifest: RunManifest | None = None  # set by run_training: the run directory's list of its own files
        self.device = resolve_device(cfg.runtime.device)
        builders.check_memory(cfg, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
        if cfg.runtime.threads is not None:
            torch.set_num_threads(cfg.runtime.threads)
        seed_everything(cfg.runtime.seed)
        self.num_classes = cfg.data.num_classes
        self.levels = builders.output_levels(cfg)
        self.normalization = builders.resolve_normalization(cfg)
        self.total_iterations = cfg.optim.iterations
        selection = cfg.eval.selection  # val/…, select/… (holdout) or a label-free validator uda/<name>
        self.select_key = (f"{'select' if selection == 'holdout' else 'val'}/{cfg.eval.select_metric}"
                           if selection in ("val", "holdout") else f"uda/{selection}")

        self.model = builders.build_segmentation_model(cfg)
        self.init_summary = self._load_init_checkpoint()
        self.model.to(self.device).train()  # BN behaviour in train mode is the model's bn_policy
        if cfg.runtime.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if cfg.runtime.compile else self.model
        self.optimizer = make_optimizer(
            torch.optim.SGD, models.param_groups(self.model, lr=cfg.optim.lr, head_lr_mult=cfg.optim.head_lr_mult),
            lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
        remember_base_lrs(self.optimizer)
        self.discriminators = builders.build_discriminators(cfg) if cfg.adapt.mode == "adversarial" else {}
        self.d_optimizers = {}
        for level, discriminator in self.discriminators.items():
            discriminator.to(self.device).train()
            self.d_optimizers[level] = make_optimizer(torch.optim.Adam, discriminator.parameters(),
                                                      lr=cfg.adapt.lr_d, betas=cfg.adapt.betas_d)
            remember_base_lrs(self.d_optimizers[level])
        self.gan_loss = GANLoss(cfg.adapt.gan)

        pin = self.device.type == "cuda"
        uses_target = cfg.adapt.mode != "source_only"
        data = builders.build_train_data(cfg, normalization=self.normalization, need_target=uses_target)
        for name, dataset in (("source", data.source), ("target", data.target if uses_target else None)):
            if dataset is not None and len(dataset) < cfg.optim.batch_size:
                split = getattr(cfg.data, name)
                raise ConfigError("<config>", "optim.batch_size", cfg.optim.batch_size,
                                  f"at most {len(dataset)}: data.{name} ({split.root}, split {split.split!r}) has "
                                  f"{len(dataset)} items")
        stream = dict(batch_size=cfg.optim.batch_size, workers=cfg.data.workers, pin_memory=pin)
        self.streams = {"source": BatchStream(data.source, seed=derive_seed(cfg.runtime.seed, 0), name="source",
                                              **stream)}
        if uses_target:
            self.streams["target"] = BatchStream(data.target, seed=derive_seed(cfg.runtime.seed, 1), name="target",
                                                 **stream)
        self.val_dataset = builders.build_eval_dataset(cfg, normalization=self.normalization)
        self.selection_dataset = data.selection
        self.validators = build_validator_set(cfg, normalization=self.normalization, device=self.device)

        self.iteration = 0
        self.best: dict[str, Any] = {"metric": self.select_key, "value": None, "iteration": None}
        self.last_metrics: dict[str, float] = {}
        self.last_eval_samples: list[dict[str, Any]] = []
        self.elapsed_s = 0.0  # training + evaluation time over every session of this run
        self.stop_reason: str | None = None
        self._started = False
        self._save_request: tuple[Path, Callable[[int, Path], None]] | None = None
        self._reset_pending()

    # ---------------------------------------------------------------------------------------------- set-up
    def _load_init_checkpoint(self):
        """Load ``model.init_checkpoint`` (e.g. the source-only model before adaptation) or fail before training.

        The seed silently fell back to ImageNet weights when this file was missing (defect S4); here a missing
        file, another model or another class count is an error, and the summary of what was loaded is logged.
        """
        path = self.cfg.model.init_checkpoint
        if path is None:
            return None
        if not Path(path).is_file():
            raise CheckpointError(f"model.init_checkpoint = {path}: no such file")
        from models.pretrained import WeightsError, load_weights

        try:
            summary = load_weights(self.model, path)
        except WeightsError as err:
            raise CheckpointError(f"model.init_checkpoint = {path} does not fit {self.cfg.model.name} with "
                                  f"{self.num_classes} classes: {err}") from None
        logger.info("model.init_checkpoint: %s", summary)
        return summary

    def describe(self) -> str:
        levels = "+".join(self.levels)
        init = f"init from {self.init_summary}" if self.init_summary is not None else (
            f"weights {self.cfg.model.weights}" if self.cfg.model.weights else "random init")
        return (f"{self.cfg.adapt.mode} | {self.cfg.model.name} ({self.num_classes} classes, levels {levels}) | "
                f"{self.device} | iterations {self.iteration}/{self.total_iterations} | {init}")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.runtime.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---------------------------------------------------------------------------------------------- loop
    @property
    def next_eval_iteration(self) -> int:
        interval = self.cfg.eval.interval
        return min(self.total_iterations, (self.iteration // interval + 1) * interval)

    def fit(self, until_iteration: int | None = None) -> dict[str, float]:
        """Train up to ``until_iteration`` (default: the end), evaluating every ``eval.interval`` iterations and at
        the end. Returns the latest metrics. Raises :class:`TrainingDiverged`; a reporter's :class:`StopTraining`
        ends the loop after the current iteration (``self.stop_reason``)."""
        end = self.total_iterations if until_iteration is None else min(until_iteration, self.total_iterations)
        runtime = self.cfg.runtime
        if not self._started:
            self._started = True
            self._notify("on_start", self)
        session_start = time.perf_counter()
        try:
            while self.iteration < end and self.stop_reason is None:
                self._train_one_iteration()
                at_end = self.iteration == self.total_iterations
                if self.iteration % runtime.log_interval == 0 or at_end:
                    self._flush_log()
                if self.iteration % self.cfg.eval.interval == 0 or at_end:
                    self._evaluate_and_report()
                elif (self.run_dir is not None and runtime.checkpoint_interval
                      and self.iteration % runtime.checkpoint_interval == 0):
                    self._write_checkpoint(last_checkpoint(self.run_dir))
                if self._save_request is not None:
                    self._save_now()
        finally:
            self.elapsed_s += time.perf_counter() - session_start
        return self.last_metrics

    def _train_one_iteration(self) -> None:
        optim = self.cfg.optim
        apply_poly(self.optimizer, self.iteration, iter_max=optim.iter_max, power=optim.poly_power)
        for d_optimizer in self.d_optimizers.values():  # every discriminator decays (the seed decayed D1 only: S3)
            apply_poly(d_optimizer, self.iteration, iter_max=optim.iter_max, power=optim.poly_power)
        if "target" in self.streams:
            losses = adaptation_step(self, next(self.streams["source"]), next(self.streams["target"]))
        else:
            losses = source_only_step(self, next(self.streams["source"]))
        self.iteration += 1
        faults.inject("step", self.iteration, seed=self.cfg.runtime.seed, values=losses)  # test-only hook
        for name, value in losses.items():
            self._pending[name] = self._pending[name] + value if name in self._pending else value
        self._pending_count += 1

    def _reset_pending(self) -> None:
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_count = 0
        self._interval_start = time.perf_counter()

    def _pending_means(self) -> dict[str, float]:
        """Mean of each loss since the last log, read with one host sync; raises on NaN/Inf."""
        if not self._pending_count:
            return {}
        names = list(self._pending)
        values = (torch.stack([self._pending[n].float() for n in names]) / self._pending_count).tolist()
        for name, value in zip(names, values):
            if not math.isfinite(value):
                raise TrainingDiverged(self.iteration, name, value)
        return dict(zip(names, values))

    def _flush_log(self) -> None:
        means = self._pending_means()
        if not means:
            return
        scalars = {f"train/{name}": value for name, value in means.items()}
        for group in self.optimizer.param_groups:
            scalars[f"lr/{group.get('name', 'group')}"] = group["lr"]
        for level, d_optimizer in self.d_optimizers.items():
            scalars[f"lr/d_{level}"] = d_optimizer.param_groups[0]["lr"]
        if self.discriminators:  # the weights in effect: population-based training changes them during a run
            adapt = self.cfg.adapt
            scalars["hparams/lambda_adv_main"] = adapt.lambda_adv_main
            if "aux" in self.discriminators:
                scalars["hparams/lambda_adv_aux"] = adapt.lambda_adv_aux
        scalars["time/step_s"] = (time.perf_counter() - self._interval_start) / self._pending_count
        if self.device.type == "cuda":  # what a trial's share of a GPU must hold (fractional-GPU sizing)
            scalars["mem/peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self._reset_pending()
        self._notify("on_log", self.iteration, scalars)

    def _evaluate_and_report(self) -> None:
        metrics = self.evaluate()
        value = metrics.get(self.select_key, math.nan)
        improved = math.isfinite(value) and (self.best["value"] is None or value > self.best["value"])
        if improved:
            self.best = {"metric": self.select_key, "value": value, "iteration": self.iteration}
        if self.run_dir is not None:
            self._write_checkpoint(last_checkpoint(self.run_dir))
            if improved:
                self._write_checkpoint(best_checkpoint(self.run_dir), model_only=True)
        self._notify("on_evaluate", self.iteration, metrics, self)
        self._interval_start = time.perf_counter()  # evaluation time is not step time

    def _notify(self, hook: str, *args) -> None:
        """Call ``hook`` on every reporter; a StopTraining from any of them is honoured after all were called."""
        for reporter in self.reporters:
            try:
                getattr(reporter, hook)(*args)
            except StopTraining as stop:
                self.stop_reason = self.stop_reason or str(stop) or f"stopped by {type(reporter).__name__}"

    # ---------------------------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Metrics on the target val split (``val/…``) and, with ``eval.selection = "holdout"``, on the selection
        split (``select/…``). Also checks that the pending losses and the logits are finite."""
        self._pending_means()
        metrics: dict[str, float] = {}
        splits = [("val", self.val_dataset, NUM_EVAL_SAMPLES)]
        if self.selection_dataset is not None:
            splits.append(("select", self.selection_dataset, 0))
        for prefix, dataset, num_samples in splits:
            out = evaluate_model(
                self.model, builders.eval_loader(dataset, self.cfg, pin_memory=self.device.type == "cuda"),
                num_classes=self.num_classes, device=self.device, flip=self.cfg.eval.flip,
                normalization=self.normalization, num_samples=num_samples, autocast=self.autocast,
                channels_last=self.cfg.runtime.channels_last)
            if out.nonfinite_logits:
                raise TrainingDiverged(self.iteration, f"{prefix} logits", math.nan,
                                       f"{out.nonfinite_logits} non-finite values on the {prefix} split")
            metrics.update({f"{prefix}/{key}": value for key, value in out.metrics.items()})
            if num_samples:
                self.last_eval_samples = out.samples
        if self.validators is not None:  # label-free scores (uda/…) on unlabelled target train + source val
            metrics.update(self.validators.score(
                self.model, lambda ds: builders.eval_loader(ds, self.cfg, pin_memory=self.device.type == "cuda"),
                discriminator=self.discriminators.get("main"), autocast=self.autocast,
                channels_last=self.cfg.runtime.channels_last))
        faults.inject("evaluate", self.iteration, seed=self.cfg.runtime.seed, values=metrics)  # test-only
        self.last_metrics = metrics
        return metrics

    # ---------------------------------------------------------------------------------------------- state
    def meta(self) -> dict[str, Any]:
        return checkpoint_meta(self.model, config=to_dict(self.cfg))

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs (loads with ``torch.load(weights_only=True)``)."""
        return {
            "model": self.model.state_dict(),
            "meta": self.meta(),
            "discriminators": {level: d.state_dict() for level, d in self.discriminators.items()},
            "optimizers": {"model": self.optimizer.state_dict(),
                           **{f"d_{level}": o.state_dict() for level, o in self.d_optimizers.items()}},
            "scaler": None,  # bf16 autocast needs no loss scaling
            "iteration": self.iteration,
            "best": dict(self.best),
            "last_metrics": dict(self.last_metrics),
            "rng": capture_rng_state(),
            "streams": {name: stream.state_dict() for name, stream in self.streams.items()},
            "pending": {"losses": {k: v.detach().cpu() for k, v in self._pending.items()},
                        "count": self._pending_count},
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str = "checkpoint",
                        allow_changes: Iterable[str] = ()) -> None:
        """Continue from ``state`` (another run's state too: population-based training clones a donor).

        ``allow_changes``: config keys that may differ from the checkpoint's besides :data:`RESUMABLE_CHANGES`
        (a PBT restart passes exactly its mutated keys). The learning rates' poly schedule continues from the
        checkpoint's iteration on this config's base rates (``optim.lr``, ``adapt.lr_d``), not the saved ones.
        """
        meta = state.get("meta") or {}
        if meta.get("model") != self.cfg.model.name or meta.get("num_classes") != self.num_classes:
            raise CheckpointError(f"{source} holds {meta.get('model')!r} with {meta.get('num_classes')} classes; "
                                  f"this run is {self.cfg.model.name!r} with {self.num_classes}")
        if "optimizers" not in state:
            raise CheckpointError(f"{source} holds model weights only (e.g. best.pt); resume from checkpoints/last.pt")
        self._check_resumable(meta.get("config") or {}, source, allow=tuple(allow_changes))
        if set(state["discriminators"]) != set(self.discriminators):
            raise CheckpointError(f"{source} has discriminators {sorted(state['discriminators'])}, "
                                  f"this run needs {sorted(self.discriminators)}")
        # An optimizer's state dict carries its groups' base_lr: keep this config's (equal on a plain resume).
        base_lrs = [[g["base_lr"] for g in o.param_groups] for o in (self.optimizer, *self.d_optimizers.values())]
        try:
            self.model.load_state_dict(state["model"])
            for level, discriminator in self.discriminators.items():
                discriminator.load_state_dict(state["discriminators"][level])
            self.optimizer.load_state_dict(state["optimizers"]["model"])
            for level, d_optimizer in self.d_optimizers.items():
                d_optimizer.load_state_dict(state["optimizers"][f"d_{level}"])
            for name, stream in self.streams.items():
                stream.load_state_dict(state["streams"][name])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{source} does not match this run: {err}") from None
        for optimizer, rates in zip((self.optimizer, *self.d_optimizers.values()), base_lrs):
            for group, rate in zip(optimizer.param_groups, rates):
                group["base_lr"] = rate
        self.iteration = int(state["iteration"])
        self.best = dict(state["best"])
        self.last_metrics = dict(state.get("last_metrics", {}))
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        self._reset_pending()
        pending = state.get("pending") or {}
        self._pending = {k: v.to(self.device) for k, v in pending.get("losses", {}).items()}
        self._pending_count = int(pending.get("count", 0))
        restore_rng_state(state["rng"])

    def _check_resumable(self, saved: dict[str, Any], source: str, allow: tuple[str, ...] = ()) -> None:
        if not saved:
            return
        now, before = flatten(to_dict(self.cfg)), flatten(saved)
        changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k) and k not in allow
                         and not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUMABLE_CHANGES))
        if changed:
            details = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
            raise CheckpointError(f"{source} was trained with a different configuration ({details}); only "
                                  f"{', '.join(RESUMABLE_CHANGES + allow)} may change on resume")

    def set_hyperparameters(self, values: dict[str, Any]) -> None:
        """Change ``adapt.lambda_adv_main`` / ``adapt.lambda_adv_aux`` / ``optim.lr`` / ``adapt.lr_d`` from the next
        iteration on (a PBT schedule replayed in one run): the poly schedule continues from this iteration on the
        new base rates (the head group keeps its multiplier). Other keys are refused."""
        from dataclasses import replace

        allowed = ("adapt.lambda_adv_main", "adapt.lambda_adv_aux", "optim.lr", "adapt.lr_d")
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError("<schedule>", unknown[0], values[unknown[0]], f"one of {', '.join(allowed)}")
        adapt, optim = self.cfg.adapt, self.cfg.optim
        adapt = replace(adapt, **{k.split(".")[1]: float(v) for k, v in values.items() if k.startswith("adapt.")})
        if "optim.lr" in values:  # the rates a fresh optimizer would get, exactly (a resumed clone's are these)
            optim = replace(optim, lr=float(values["optim.lr"]))
            fresh = models.param_groups(self.model, lr=optim.lr, head_lr_mult=optim.head_lr_mult)
            for group, new in zip(self.optimizer.param_groups, fresh):
                group["base_lr"] = new["lr"]
        for d_optimizer in self.d_optimizers.values():
            for group in d_optimizer.param_groups:
                group["base_lr"] = adapt.lr_d
        self.cfg = replace(self.cfg, adapt=adapt, optim=optim)

    def request_save(self, path: str | Path, then: Callable[[int, Path], None]) -> None:
        """Ask the loop (from any thread) to write the full state to ``path`` after the iteration it is in, then
        call ``then(iteration, path)`` from the training thread. A graceful stop uses it so that no iteration is
        lost between evaluations: the state carries the data streams and RNGs, so a run continued from it equals
        the uninterrupted one."""
        self._save_request = (Path(path), then)

    def _save_now(self) -> None:
        (path, then), self._save_request = self._save_request, None
        self._write_checkpoint(path)
        then(self.iteration, path)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the full training state to ``path`` atomically (no reporter is notified)."""
        return atomic_save(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path, *, allow_changes: Iterable[str] = ()) -> None:
        self.load_state_dict(read_checkpoint(path), source=str(path), allow_changes=allow_changes)

    def _write_checkpoint(self, path: Path, *, model_only: bool = False) -> None:
        if model_only:  # best.pt: what evaluation and model.init_checkpoint need
            atomic_save({"model": self.model.state_dict(), "meta": self.meta(), "iteration": self.iteration,
                         "best": dict(self.best), "metrics": dict(self.last_metrics)}, path)
        else:
            self.save_checkpoint(path)
        if self.manifest is not None:  # what --overwrite may remove later: this file and our TensorBoard events
            self.manifest.record(path)
            self.manifest.record_new_events()
        self._notify("on_checkpoint", self.iteration, path)

    def result(self, *, status: str, message: str | None = None, wall_s: float = 0.0) -> dict[str, Any]:
        return {"name": self.cfg.name, "status": status, "message": message, "iterations": self.iteration,
                "total_iterations": self.total_iterations, "wall_s": wall_s, "elapsed_s": self.elapsed_s,
                "best_metric": self.best["metric"], "best_value": self.best["value"],
                "best_iteration": self.best["iteration"], "metrics": dict(self.last_metrics),
                "run_dir": str(self.run_dir) if self.run_dir else None}

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def run_training(cfg: TrainConfig, run_dir: str | Path, *, reporters: Iterable[Reporter] = (),
                 resume: bool | str | Path = False, overwrite: bool = False) -> dict[str, Any]:
    """One run in ``run_dir``: ``config.toml``, ``provenance.json``, ``metrics.jsonl``, ``checkpoints/last.pt`` and
    ``best.pt``, ``result.json``. Returns the result dict (``status``: completed | stopped | diverged | interrupted).

    An existing non-empty ``run_dir`` is refused unless ``resume`` (continue from ``checkpoints/last.pt`` or the
    given checkpoint) or ``overwrite`` (replace a previous dastudy run's files) is passed.
    """
    builders.validate_config(cfg)
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    checkpoint = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    manifest = RunManifest(run_dir)
    reporters = [JsonLinesReporter(run_dir / "metrics.jsonl"), *reporters]
    try:
        trainer = Trainer(cfg, run_dir, reporters=reporters)
        trainer.manifest = manifest
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
    except BaseException:
        if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # leave nothing behind for a run that never started
        raise
    device = str(trainer.device)
    if checkpoint is None:
        extra = {"init_checkpoint": str(trainer.init_summary)} if trainer.init_summary is not None else {}
        write_provenance(run_dir, cfg, device=device, extra=extra)
    else:
        append_resume(run_dir, checkpoint=checkpoint, iteration=trainer.iteration, device=device)
    write_config(run_dir, cfg)
    manifest.record("config.toml", "provenance.json", "metrics.jsonl")
    start = time.perf_counter()
    # Pessimistic until proven: anything that leaves fit() early without one of the outcomes below (SystemExit
    # from Ray's worker shutdown, GeneratorExit, ...) is an interrupted run, never a completed one (issue 11: a
    # baseline stopped at 149 of 400 was recorded as completed and reused by later studies).
    status, message = "interrupted", None
    try:
        trainer.fit()
        if trainer.stop_reason is not None:
            status, message = "stopped", trainer.stop_reason
            trainer._write_checkpoint(last_checkpoint(run_dir))
        elif trainer.iteration >= trainer.total_iterations:
            status = "completed"
        else:
            message = f"fit() returned at iteration {trainer.iteration} of {trainer.total_iterations}"
    except TrainingDiverged as err:
        status, message = "diverged", str(err)
        logger.error("%s", err)
    except Exception as err:
        status, message = "failed", f"{type(err).__name__}: {err}"
        raise
    except BaseException as err:  # KeyboardInterrupt, SystemExit, GeneratorExit
        status = "interrupted"
        message = f"interrupted at iteration {trainer.iteration} of {trainer.total_iterations} ({type(err).__name__})"
        raise
    finally:
        trainer.close()
        result = trainer.result(status=status, message=message, wall_s=time.perf_counter() - start)
        write_json_atomic(run_dir / "result.json", _finite_or_none(result))
        manifest.record("result.json")
        trainer._notify("on_end", result)
        manifest.record_new_events()  # a TensorBoard reporter may create its last event file at the end
    return result
