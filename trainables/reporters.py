"""Reporters: the hooks the training engine calls, so that logging never lives inside the training loop.

A reporter subclasses :class:`Reporter` and overrides what it needs (every hook is a no-op by default):

- ``on_start(trainer)``: once, before the first step (after a resume, ``trainer.iteration`` is the resumed one);
- ``on_log(iteration, scalars)``: every ``runtime.log_interval`` iterations, with float scalars such as
  ``train/loss_seg``, ``lr/backbone``, ``time/step_s`` (losses are the mean over the interval);
- ``on_evaluate(iteration, metrics, trainer)``: at each evaluation, with the flat metric dict (``val/mIoU16`` …);
  ``trainer.last_eval_samples`` and ``trainer.num_classes`` are then available, and a reporter may call
  ``trainer.save_checkpoint(path)`` (the Ray wrapper does);
- ``on_checkpoint(iteration, path)``: after the engine wrote a checkpoint;
- ``on_end(result)``: once, with the run's result dict (also after divergence or an early stop).

Any hook may raise :class:`StopTraining` to end the run early and cleanly (``result["status"] == "stopped"``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.engine import Trainer

__all__ = ["Reporter", "StopTraining", "ConsoleReporter", "JsonLinesReporter"]


class StopTraining(Exception):
    """Raised by a reporter to end the run after the current iteration; the message becomes the result's reason."""


class Reporter:
    """Base class with no-op hooks (see the module docstring for when each is called)."""

    def on_start(self, trainer: Trainer) -> None:
        pass

    def on_log(self, iteration: int, scalars: dict[str, float]) -> None:
        pass

    def on_evaluate(self, iteration: int, metrics: dict[str, float], trainer: Trainer) -> None:
        pass

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        pass

    def on_end(self, result: dict[str, Any]) -> None:
        pass


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/Inf; null keeps the file parseable by every reader.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonLinesReporter(Reporter):
    """Appends one JSON object per log/evaluation to ``path`` (``metrics.jsonl`` in the run directory).

    Lines: ``{"kind": "train" | "eval", "iteration": k, "time": unix seconds, <scalars or metrics>}``. On a resume,
    lines written after the checkpoint's iteration (work that was lost) are dropped first, so the file describes
    one consistent run.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_start(self, trainer: Trainer) -> None:
        if self.path.exists() and trainer.iteration > 0:
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("iteration", 0) <= trainer.iteration:
                        kept.append(line)
                except json.JSONDecodeError:  # a line torn by a crash
                    continue
            self.path.write_text("".join(f"{line}\n" for line in kept))

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def on_log(self, iteration: int, scalars: dict[str, float]) -> None:
        self._write({"kind": "train", "iteration": iteration, "time": time.time(), **scalars})

    def on_evaluate(self, iteration: int, metrics: dict[str, float], trainer: Trainer) -> None:
        self._write({"kind": "eval", "iteration": iteration, "time": time.time(), **metrics})


class ConsoleReporter(Reporter):
    """A tqdm progress bar with ETA over the run's iterations, loss postfix, and the per-class IoU table at each
    evaluation. ``progress=False`` prints plain log lines instead (non-interactive logs)."""

    def __init__(self, *, progress: bool = True, stream=None):
        self.progress = progress
        self.stream = stream or sys.stderr
        self._bar = None
        self._num_classes = 16
        self._last = 0

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def on_start(self, trainer: Trainer) -> None:
        self._num_classes = trainer.num_classes
        self._last = trainer.iteration
        self._print(f"{trainer.cfg.name}: {trainer.describe()}")
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=trainer.total_iterations, initial=trainer.iteration, desc=trainer.cfg.name,
                             unit="it", file=self.stream, dynamic_ncols=True, smoothing=0.05)

    def on_log(self, iteration: int, scalars: dict[str, float]) -> None:
        shown = {k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith("train/")}
        if self._bar is not None:
            self._bar.update(iteration - self._last)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        else:
            text = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
            self._print(f"[{iteration}] {text} lr={scalars.get('lr/backbone', math.nan):.3g} "
                        f"step={scalars.get('time/step_s', math.nan):.3f}s")
        self._last = iteration

    def on_evaluate(self, iteration: int, metrics: dict[str, float], trainer: Trainer) -> None:
        from trainables.metrics import format_iou_table

        for prefix, title in (("val/", "target val"), ("select/", "selection (holdout)")):
            if any(k.startswith(prefix) for k in metrics):
                self._print(format_iou_table(metrics, self._num_classes, prefix=prefix,
                                             title=f"iteration {iteration}: {title}"))

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        if self._bar is None:
            self._print(f"[{iteration}] checkpoint {path}")

    def on_end(self, result: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(result.get("iterations", self._last) - self._last)
            self._bar.close()
            self._bar = None
        line = f"{result.get('status')}: {result.get('iterations')} iterations in {result.get('wall_s', 0):.1f} s"
        if result.get("best_value") is not None:
            metric, value = result["best_metric"], result["best_value"]
            # mIoU and pixel accuracy are fractions shown in percent; a label-free score (uda/im, ...) is not one
            shown = (f"{100 * value:.2f} %" if metric.rsplit("/", 1)[-1].startswith(("mIoU", "pixel_acc"))
                     else f"{value:.4g}")
            line += f"; best {metric} = {shown} at {result['best_iteration']}"
        if result.get("message"):
            line += f" ({result['message']})"
        self._print(line)
