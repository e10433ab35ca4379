"""Ctrl-C (SIGINT) and SIGTERM while a study runs: a graceful stop with the state saved, then one honest line.

Ray Tune stops a run gracefully when its interrupt event is set: the loop ends, the experiment state is written
one last time (``runner.checkpoint(force=True)``), the trials' actors are stopped and the unfinished trials stay
RUNNING in that state, so ``Tuner.restore`` (``dastudy study resume``) continues them from their checkpoints. Ray
sets that event from its own SIGINT handler and, always, from SIGUSR1 (``ray.tune.tune._setup_signal_catching``).
Left alone, Ray's SIGINT path returned normally from ``fit``, so the driver printed "study ended" and exited 1,
Ray logged "Resume experiment with: Tuner.restore(...)" (a call the user never makes here), and SIGTERM (what
SLURM sends at a job's time limit) killed the driver with no final snapshot.

:func:`graceful_stop` routes both signals through Ray's SIGUSR1 handler (``TUNE_DISABLE_SIGINT_HANDLER=1`` keeps
Ray from replacing ours), remembers which signal came, and drops Ray's own interrupt messages at their logger;
the caller then raises :class:`StudyInterrupted`, which the command turns into "interrupted — resume with:
dastudy study resume NAME" and exit code 130 (SIGINT) or 143 (SIGTERM). A second signal stops at once
(KeyboardInterrupt), as with Ray's handler.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator

__all__ = ["EXIT_SIGINT", "EXIT_SIGTERM", "StudyInterrupted", "graceful_stop", "stop_requested",
           "save_running_trials", "STOP_GRACE_ENV"]

STOP_GRACE_ENV = "DASTUDY_STOP_GRACE_S"  # how long a graceful stop waits for the running trials to save
DEFAULT_STOP_GRACE_S = 300.0

EXIT_SIGINT = 128 + signal.SIGINT  # 130, the shell's code for a Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: stopped by SIGTERM (a scheduler's time limit), state saved

# Ray's messages about an interrupt it did not start: its restore hint names a Python call, not our command.
_RAY_INTERRUPT_MESSAGES = ("Stop signal received", "Experiment has been interrupted", "Trials did not complete")
_state: dict[str, object] = {"signum": None, "channel": None}


class StudyInterrupted(Exception):
    """The study was stopped by a signal after its state was saved; ``exit_code`` 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signum: int, name: str):
        self.signum, self.name = signum, name
        self.exit_code = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
        super().__init__(f"study {name} interrupted by {signal.Signals(signum).name}")

    def __reduce__(self):  # pickle/copy rebuild from the fields, not from the formatted message
        return type(self), (self.signum, self.name)

    def resume_line(self, storage: str | None = None) -> str:
        """The one line the command prints (``storage``: its --storage, repeated so the line can be pasted)."""
        import shlex

        flag = f" --storage {shlex.quote(str(storage))}" if storage else ""
        return f"interrupted — resume with: dastudy study resume {shlex.quote(self.name)}{flag}"


def stop_requested() -> int | None:
    """The signal that asked the running study to stop, or None."""
    return _state["signum"]  # type: ignore[return-value]


def save_running_trials(study_name: str, running: Callable[[], set[str]], *, grace_s: float | None = None,
                        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> None:
    """Ask every running trial of the study to save its full state at the iteration it is in
    (``trainables.tune.open_stop_channel``) and wait until each trial in ``running()`` (Ray trial ids) has saved, at
    most ``grace_s`` (default ``$DASTUDY_STOP_GRACE_S`` or 300 s). A trial that has not saved by then continues
    from its last evaluation when the study resumes."""
    import ray

    from trainables.tune import open_stop_channel

    grace = float(os.environ.get(STOP_GRACE_ENV, DEFAULT_STOP_GRACE_S)) if grace_s is None else grace_s
    channel = open_stop_channel(study_name)
    _state["channel"] = channel  # a named actor lives while a handle does: until the study has stopped
    deadline = time.monotonic() + grace
    while True:
        saved = ray.get(channel.saved_trials.remote())
        waiting = running() - set(saved)
        if not waiting:
            if saved:
                log(f"{len(saved)} running trial(s) saved their state at iterations "
                    f"{', '.join(str(i) for i in sorted(saved.values()))}")
            return
        if time.monotonic() > deadline:
            log(f"{len(waiting)} trial(s) did not save within {grace:.0f} s ({STOP_GRACE_ENV}): they will continue "
                "from their last evaluation")
            return
        time.sleep(0.5)


class _DropRayInterruptMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_RAY_INTERRUPT_MESSAGES)


def _drain_then_stop(drain: Callable[[], None]) -> None:
    try:
        drain()
    except Exception as err:  # the stop itself must happen: trials then continue from their last evaluation
        print(f"note: the running trials could not be asked to save ({type(err).__name__}: {err})",
              file=sys.stderr, flush=True)
    finally:
        # Ray's handler must run in the main thread (it re-installs a signal handler): signal this process
        os.kill(os.getpid(), signal.SIGUSR1)


@contextlib.contextmanager
def graceful_stop(drain: Callable[[], None] | None = None) -> Iterator[None]:
    """For the block (``Tuner.fit``): SIGINT and SIGTERM stop the study gracefully through Ray Tune's interrupt
    path; :func:`stop_requested` says which signal came. ``drain`` (e.g. :func:`save_running_trials`) runs first,
    in a thread while Ray's loop goes on, and Ray is told to stop when it returns. Outside the main thread signals
    cannot be caught: the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["signum"] = None
    old_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # read by Ray when fit starts: our SIGINT handler stays

    def handler(signum: int, frame) -> None:
        if _state["signum"] is not None:
            raise KeyboardInterrupt  # a second signal: stop now, without the final snapshot
        _state["signum"] = signum
        ray_handler = signal.getsignal(signal.SIGUSR1)
        if not callable(ray_handler):  # Ray's loop has not started (or has ended): nothing to stop gracefully
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        if drain is None:
            print(f"\n{name}: stopping the study and saving its state (again to stop at once)",
                  file=sys.stderr, flush=True)
            ray_handler(signal.SIGUSR1, frame)
            return
        print(f"\n{name}: the running trials save their state where they are, then the study stops and saves its "
              "state (again to stop at once)", file=sys.stderr, flush=True)
        threading.Thread(target=_drain_then_stop, args=(drain,), name="dastudy-drain",
                         daemon=True).start()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray_logger = logging.getLogger("ray.tune.tune")
    quiet = _DropRayInterruptMessages()
    ray_logger.addFilter(quiet)
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        _state["channel"] = None  # the study has stopped: its stop channel may go
        for sig, old in previous.items():
            signal.signal(sig, old)
        ray_logger.removeFilter(quiet)
        if old_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_env
