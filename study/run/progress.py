"""What a running study shows: on a terminal a trial table refreshed in place under a header with the study's ETA;
elsewhere (a log file, CI, ``| tee``) plain lines, one per trial event plus a progress line after each trial end.

The header and the progress line say the same: trials done (COMPLETE / PRUNED / FAILED), running, pending, the
best value so far, the time one evaluation round takes (one ``tune.report``: ``eval.interval`` SGD iterations and
an evaluation; the table's ``evals`` column counts them) and the ETA. The ETA is an estimate: the rounds still to
run (running trials to ``max_t``, pending ones as many as the ended trials ran on average, ``max_t`` before any
ended) times the median time per round, shared by the trials that run at once.

:class:`LiveProgress` is a Ray Tune callback; ``Tuner.restore`` unpickles it from the study's ``tuner.pkl``, so it
keeps no stream or terminal state in its pickled form.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import statistics
import sys
import time
from typing import Any, Callable, TextIO

from ray.tune import Callback

from study.config.spaces import param_label

__all__ = ["LiveProgress", "format_eta", "running_trial_ids"]

# The Ray trial ids this driver's study shows RUNNING, as of Tune's last loop step (read by a graceful stop, which
# waits for exactly these trials to save).
_RUNNING: set[str] = set()


_AT_STOP: dict[str, set[str] | None] = {"running": None}  # those RUNNING when a stop was asked for


def running_trial_ids() -> set[str]:
    return set(_RUNNING)

_ENDED = ("TERMINATED", "ERROR")


def format_eta(seconds: float | None) -> str:
    """``~45 s``, ``~12 min``, ``~3 h 20 min``; ``unknown`` before the first iteration was timed."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"~{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"~{hours} h {minutes:02d} min"


class LiveProgress(Callback):
    """The study's progress (module docstring). ``plain``: the callback whose lines are shown off a terminal
    (study.run.search.StudyProgress: one line per trial event); ``name_of``: a trial's name (the driver passes
    study.run.search.TrialLabels: its label, as TensorBoard, the report and ``study status`` show it).
    ``live``: redraw a table in place (default: when ``stream`` is a terminal); ``refresh_s``: how often the table
    is redrawn between trial events (the ETA ticks)."""

    def __init__(self, plain: Callback, *, name_of: Callable[[Any], str], metric: str, mode: str, max_t: int,
                 num_samples: int, max_concurrent: int, name: str = "", stream: TextIO | None = None,
                 live: bool | None = None, refresh_s: float = 2.0):
        self.plain, self.name_of = plain, name_of
        self.metric, self.mode, self.max_t, self.num_samples = metric, mode, max_t, num_samples
        self.name, self.max_concurrent, self.refresh_s = name, max(1, int(max_concurrent)), refresh_s
        self._stream, self._live = stream, live
        self._best: tuple[float, str] | None = None
        self._iter_s: list[float] = []
        self._t0 = time.time()
        self._drawn = 0
        self._last_draw = 0.0
        self._ending: dict[str, str] = {}  # trial id -> the status it ended with (Ray may not have set it yet)

    # -- pickling (Tuner.restore): no stream, no terminal state
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_stream=None, _live=None, _drawn=0, _last_draw=0.0)
        return state

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    @property
    def live(self) -> bool:
        if self._live is None:
            isatty = getattr(self.stream, "isatty", None)
            self._live = bool(isatty and isatty())
        return self._live

    # -- output
    def _line(self, text: str) -> None:
        """A line that stays: on a terminal it goes above the table (which is drawn again below it)."""
        elapsed = time.time() - self._t0
        if self.live:
            self._clear()
        print(f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] {text}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def _plain(self):
        """The plain callback prints to sys.stdout: point that at this stream."""
        with contextlib.redirect_stdout(self.stream):
            yield self.plain

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")  # to the table's first line, erase to the end
            self._drawn = 0

    def _draw(self, trials: list) -> None:
        width, height = _screen(self.stream)
        lines = [self.summary(trials), *self._table(trials, max_rows=max(3, height - 4))]
        self._clear()
        for line in lines:
            self.stream.write(line[:width - 1] + "\n")
        self.stream.flush()
        self._drawn = len(lines)
        self._last_draw = time.time()

    # -- the numbers
    def _status(self, trial) -> str:
        """The trial's Ray status, or the status it ends with where Ray has not set it yet: Ray calls
        on_trial_complete / on_trial_error first (the line after "[3/24 trials ended]" said "2/24 done, 2 running")."""
        status = getattr(trial, "status", "")
        return getattr(self, "_ending", {}).get(trial.trial_id, status) if status == "RUNNING" else status

    def _state(self, trial) -> str:
        status = self._status(trial)
        if status == "TERMINATED":
            return "COMPLETE" if _iteration(trial) >= self.max_t else f"PRUNED at {_iteration(trial)}"
        return {"ERROR": "FAILED"}.get(status, status)

    def counts(self, trials: list) -> dict[str, int]:
        statuses = [self._status(t) for t in trials]
        done = sum(s in _ENDED for s in statuses)
        running = sum(s == "RUNNING" for s in statuses)
        return {"done": done, "running": running, "pending": max(self.num_samples - done - running, 0)}

    def seconds_per_iteration(self) -> float | None:
        return statistics.median(self._iter_s) if self._iter_s else None

    def eta_s(self, trials: list) -> float | None:
        per_iter = self.seconds_per_iteration()
        if per_iter is None:
            return None
        ended = [_iteration(t) for t in trials if self._status(t) in _ENDED]
        expected = statistics.fmean(ended) if ended else self.max_t  # ASHA stops most trials early
        running = [t for t in trials if self._status(t) == "RUNNING"]
        left = sum(max(self.max_t - _iteration(t), 0) for t in running)
        left += self.counts(trials)["pending"] * expected
        return left * per_iter / min(self.max_concurrent, max(len(running), 1))

    def summary(self, trials: list) -> str:
        c = self.counts(trials)
        unit = " %" if _percent(self.metric) else ""
        best = (f"best {self.metric} {_value(self.metric, self._best[0])}{unit} ({self._best[1]})"
                if self._best else f"best {self.metric} -")
        per_iter = self.seconds_per_iteration()
        # per evaluation round (one tune.report: eval.interval SGD iterations and an evaluation): "s/iteration" read
        # as the time of one SGD step, 40x too long
        pace = f"{per_iter:.1f} s/evaluation" if per_iter is not None else "s/evaluation -"
        head = f"study {self.name}: " if self.name else ""
        return (f"{head}{c['done']}/{self.num_samples} done, {c['running']} running, {c['pending']} pending · "
                f"{best} · {pace} · ETA {format_eta(self.eta_s(trials))}")

    def _table(self, trials: list, *, max_rows: int) -> list[str]:
        order = {"RUNNING": 0, "PENDING": 1, "PAUSED": 1, "TERMINATED": 2, "ERROR": 2}
        shown = sorted(trials, key=lambda t: order.get(self._status(t), 3))[:max_rows]
        names = sorted({param_label(k) for t in shown for k in (getattr(t, "config", None) or {})})
        header = ["trial", *names, "evals", f"{self.metric} (%)" if _percent(self.metric) else self.metric, "state"]
        rows = []
        for t in shown:
            params = {param_label(k): v for k, v in (getattr(t, "config", None) or {}).items()}
            value = (getattr(t, "last_result", None) or {}).get(self.metric)
            rows.append([self.name_of(t), *(_fmt(params.get(n, "-")) for n in names),
                         f"{_iteration(t)}/{self.max_t}", _value(self.metric, value),
                         self._state(t)])
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]

    # -- Ray Tune callback hooks
    def setup(self, **info) -> None:  # each fit (run or resume) starts with nothing running
        _RUNNING.clear()
        _AT_STOP["running"] = None
        self._ending = {}  # a resume restores the statuses; an errored trial it restarts is RUNNING again

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        getattr(self, "_ending", {}).pop(trial.trial_id, None)  # started (again): its own status holds
        if self.live:
            self._draw(trials)
        else:
            with self._plain() as plain:
                plain.on_trial_start(iteration, trials, trial, **info)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        took = result.get("time_this_iter_s")
        if isinstance(took, (int, float)) and math.isfinite(took) and took > 0:
            self._iter_s.append(float(took))
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and (
                self._best is None or (value > self._best[0] if self.mode == "max" else value < self._best[0])):
            self._best = (float(value), self.name_of(trial))
        if self.live:
            self._draw(trials)
        else:
            with self._plain() as plain:
                plain.on_trial_result(iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._mark_ended(trial, "TERMINATED")
        if self.live:  # the end line stays above the table, in the scrollback
            self._line(f"{self.name_of(trial)} {self._state(trial)}  {self.metric}="
                       f"{_value(self.metric, (trial.last_result or {}).get(self.metric))}")
        else:
            with self._plain() as plain:
                plain.on_trial_complete(iteration, trials, trial, **info)
        self._after_end(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._mark_ended(trial, "ERROR")
        with self._plain() as plain:  # the failure reason, as one line (above the table on a terminal)
            if self.live:
                self._clear()
            plain.on_trial_error(iteration, trials, trial, **info)
        self._after_end(trials)

    def _mark_ended(self, trial, status: str) -> None:
        if not hasattr(self, "_ending"):  # a LiveProgress unpickled from an older tuner.pkl
            self._ending = {}
        self._ending[trial.trial_id] = status

    def _after_end(self, trials: list) -> None:
        if self.live:
            self._draw(trials)
        else:
            self._line(f"progress: {self.summary(trials)}")

    def on_step_end(self, iteration, trials, **info) -> None:  # after each step of Tune's loop
        from study.run.interrupts import stop_requested

        _RUNNING.clear()
        _RUNNING.update(t.trial_id for t in trials if getattr(t, "status", "") == "RUNNING")
        if stop_requested() is not None and _AT_STOP.get("running") is None:
            _AT_STOP["running"] = set(_RUNNING)
        if self.live and time.time() - self._last_draw >= self.refresh_s:
            self._draw(trials)

    def on_experiment_end(self, trials, **info) -> None:
        from study.run.interrupts import stop_requested

        if self.live:
            self._draw(trials)
            self._drawn = 0  # the last table stays on the screen
        signum = stop_requested()
        if signum is None:
            with self._plain() as plain:
                plain.on_experiment_end(trials, **info)
            return
        import signal

        # Ray has stopped the trials that were running by now: those that had not finished are the interrupted ones
        stopped = _AT_STOP.get("running") or set()
        cut = {t.trial_id for t in trials if t.trial_id in stopped
               and not (getattr(t, "last_result", None) or {}).get("finished")}
        interrupted = len(cut) + sum(1 for t in trials if getattr(t, "status", "") == "RUNNING"
                                     and t.trial_id not in cut)
        done = sum(1 for t in trials if getattr(t, "status", "") in _ENDED and t.trial_id not in cut)
        self._line(f"study stopped by {signal.Signals(signum).name}: {done} of {self.num_samples} trials "
                   f"ended, {interrupted} interrupted (each continues on resume from where it saved), state saved")


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _percent(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1].startswith(("mIoU", "pixel_acc"))


def _value(metric: str, value: Any) -> str:
    """mIoU and pixel accuracy (fractions) in percent, the unit named once in the header."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}" if _percent(metric) else f"{value:.4g}"


def _iteration(trial: Any) -> int:
    value = (getattr(trial, "last_result", None) or {}).get("training_iteration", 0)
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0


def _screen(stream) -> os.terminal_size:
    """The size of the terminal the table is drawn on: the stream's own, not sys.stdout's (a test runner, ``| tee``
    or a driver started with its stdout elsewhere reports another or none). A terminal nobody has sized (0 x 0, a
    fresh pty) or no terminal: $COLUMNS / $LINES, else 120 x 24."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        size = None
    if size is not None and size.columns > 0 and size.lines > 0:
        return size
    return shutil.get_terminal_size((120, 24))
