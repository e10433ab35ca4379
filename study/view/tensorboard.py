"""TensorBoard over a whole study directory: every trial's ``tb/`` run (clean tags, prediction panels, one HParams
session per trial) and the source-only baseline side by side.

What TensorBoard is pointed at is a *view* of the study, ``<study>/tb/`` (:func:`build_view`; the trial
directories stay as Ray wrote them):

- one entry per trial named by its trial label (:func:`study.config.labels.trial_label`, ``#6 λ=0.0291 lr=0.0429
  seed=1``: the Optuna trial number and the searched values), a relative symlink to ``trial_<id>/run/tb``. The
  same label names the trial in ``dastudy study status`` (its ``trial`` column and ``best`` line), the live
  progress lines of ``study run``/``resume``, the report (the trials table, figure legends, the best trial) and
  optuna-dashboard (the user attribute ``label``); ``trial_<id>`` is only its directory, shown beside the label
  where a path is wanted. A replicate (``search.seeds``) is its configuration's label with its seed (``#6 λ=0.0291
  lr=0.0429 seed=2``: the seeds of a configuration share its Optuna number); ``study status`` and
  optuna-dashboard list configurations, labelled without a seed;
- ``baseline``: the source-only baseline as its own HParams row (λ_adv = 0, its lr and seed) with its selected
  checkpoint's metrics at step 0, where every trial starts from it, so it shares the trials' x-axis instead of
  stretching it to its own length; its full curves are under ``z_baseline/…`` tags: one group that sorts after
  every trial group (TensorBoard orders tag groups by name; ``baseline/`` opened the page on 43 baseline charts);
- the custom-scalars layout (one chart per mIoU, the losses) travels in every run's own events, and in the
  baseline run for trials written before it did: no run exists only to hold it.

IoUs are shown in percent with the unit in the tag (``val/mIoU16 %``). ``serve`` prints a Time Series link that
opens with smoothing 0 (TensorBoard's default 0.6 bends curves of a handful of evaluations; the ``smoothing`` query
parameter sets the slider) and the study metric's charts pinned on top (``pinnedCards``), and a Custom Scalars link
with smoothing 0 too (that older dashboard reads ``_smoothingWeight`` from the URL's fragment).

``serve`` starts TensorBoard as a child process (``python -m tensorboard.main``) bound to 127.0.0.1 unless told
otherwise, waits until it answers, prints the URL and stops it on Ctrl-C. The child is terminated on every exit
path (and, on Linux, also receives SIGTERM if this process dies), so no TensorBoard is left orphaned holding the
port. ``start`` is the non-blocking form used by tests and notebooks.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

from study.errors import UserError
from trainables.tensorboard import LAYOUT

__all__ = ["TensorBoardError", "TensorBoardProcess", "event_files", "start", "serve", "port_is_free",
           "build_view", "run_name", "VIEW_DIR", "LAYOUT", "BASELINE_PREFIX", "study_url"]

EVENTS_GLOB = "events.out.tfevents.*"
VIEW_DIR = "tb"
VIEW_MARKER = ".dastudy-view.json"  # what the last build_view made (and only that is replaced by the next one)
# The baseline's own curves: a tag group whose name sorts after every trial group (run, select, train, trial, uda,
# val), so that Scalars and Time Series open on the trials' metrics.
BASELINE_PREFIX = "z_baseline"


def run_name(params: Mapping[str, Any], dimensions: Sequence[str], number: int | None = None,
             fallback: str = "", seed: Any = None) -> str:
    """The trial's run name: its label (:func:`study.config.labels.trial_label`), ``#6 λ=0.0291 lr=0.0429 seed=1``;
    a ``/`` in a value would make a sub-directory, so it becomes ``_``."""
    from study.config.labels import trial_label

    return trial_label(number, params, dimensions, fallback=fallback, seed=seed).replace("/", "_")


def _optuna_numbers(study_dir: Path) -> tuple[dict[str, int], dict[str, Any]]:
    """Trial directory → Optuna trial number (a replicate: its configuration's) and replicate directory → its seed,
    from the study's journal (empty without one); the report reads them the same way (StudyData.label)."""
    try:
        import tomllib

        name = str(tomllib.loads((study_dir / "study.toml").read_text()).get("name", study_dir.name))
    except (OSError, ValueError):
        name = study_dir.name
    from study.report.importance import read_optuna

    summary = read_optuna(study_dir, name)
    return dict(summary.numbers), dict(summary.seeds)


def _trial_params(trial_dir: Path) -> dict[str, Any]:
    for path, key in ((trial_dir / "params.json", None), (trial_dir / "run" / "provenance.json", "sampled")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        data = data.get(key, {}) if key else data
        if isinstance(data, dict) and data:
            return data
    return {}


def _remove_made(view: Path) -> None:
    try:
        made = json.loads((view / VIEW_MARKER).read_text()).get("made", [])
    except (OSError, ValueError, AttributeError):
        return
    for name in made:
        path = view / str(name)
        if path.parent != view:  # a name from a tampered marker: never outside the view
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def build_view(study_dir: str | Path, *, view: str | Path | None = None) -> Path | None:
    """(Re)build the TensorBoard view of a study (see the module docstring); ``None`` for a directory that is not a
    study (no ``space.json``). ``view`` defaults to ``<study>/tb``; only what an earlier build made there is
    replaced. Raises ``OSError`` when the view cannot be written (a read-only study: see :func:`start`)."""
    study_dir = Path(study_dir).resolve()
    try:
        description = json.loads((study_dir / "space.json").read_text())
    except (OSError, ValueError):
        return None
    dimensions = list(description.get("dimensions", {}))
    view = Path(view) if view is not None else study_dir / VIEW_DIR
    view.mkdir(parents=True, exist_ok=True)
    _remove_made(view)
    made: list[str] = []

    def free(name: str, fallback: str) -> str:
        return name if name and name not in made and not os.path.lexists(view / name) else fallback

    numbers, seeds = _optuna_numbers(study_dir)
    for trial_dir in sorted(study_dir.glob("trial_*"), key=lambda d: (numbers.get(d.name, 1 << 30), d.name)):
        tb = trial_dir / "run" / "tb"
        if not tb.is_dir():
            continue
        label = run_name(_trial_params(trial_dir), dimensions, numbers.get(trial_dir.name),
                         fallback=trial_dir.name, seed=seeds.get(trial_dir.name))
        name = free(label, "") or free(f"{label} {trial_dir.name}", trial_dir.name)
        target = os.path.relpath(tb, view) if view.resolve().is_relative_to(study_dir) else str(tb)
        (view / name).symlink_to(target, target_is_directory=True)
        made.append(name)
    if (study_dir / "baseline").is_dir() and not os.path.lexists(view / "baseline"):
        if _write_baseline_run(study_dir, view / "baseline", description):
            made.append("baseline")
    (view / VIEW_MARKER).write_text(json.dumps({"made": made}, indent=1) + "\n")
    return view


def _nested(table: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(table, Mapping) or part not in table:
            return None
        table = table[part]
    return table


def _write_baseline_run(study_dir: Path, dest: Path, description: Mapping[str, Any]) -> bool:
    """The baseline's HParams row and curves (see the module docstring); False when it has no metrics."""
    import tomllib

    from torch.utils.tensorboard import SummaryWriter

    from study.config.spaces import hparam_domains, param_label
    from study.state.location import load_study_dir
    from study.config.study_config import metric_tags
    from trainables.tensorboard import (PRUNED_TAG, default_metric_tags, percent_tag, write_hparams_session,
                                        write_layout, write_session_end)

    base = study_dir / "baseline"
    records = []
    try:
        for line in (base / "metrics.jsonl").read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    except OSError:
        return False
    if not records:
        return False
    try:
        result = json.loads((base / "result.json").read_text())
    except (OSError, ValueError):
        result = {}
    try:
        config = tomllib.loads((base / "config.toml").read_text())
    except (OSError, ValueError):
        config = {}
    try:  # the trials' metric columns, so that the baseline's row lines up with theirs
        study, _ = load_study_dir(study_dir)
        tags = metric_tags(study)
    except (OSError, ValueError):  # a study.toml this version cannot load: the metric it names, the mIoUs
        try:
            data = tomllib.loads((study_dir / "study.toml").read_text())
        except (OSError, ValueError):
            data = {}
        num_classes = _nested(data, "train.data.num_classes") or 16
        tags = (str(data.get("metric", "val/mIoU16")),) + default_metric_tags(num_classes,
                                                                             data.get("selection", "val"))
    tags = tuple(dict.fromkeys(tuple(tags) + (PRUNED_TAG,)))
    hparams: dict[str, Any] = {}
    for name, variants in description.get("dimensions", {}).items():
        key = variants[0].get("applies_to", name.split("@", 1)[0])
        # a source-only run has no adversarial or target-loss term: its λ is 0
        value = 0.0 if key.startswith("adapt.lambda_") else _nested(config, key)
        if value is not None:
            hparams[param_label(name)] = value
    numbers = [(r, {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and k not in ("iteration", "time")}) for r in records if isinstance(r.get("iteration"), int)]
    evals = [(r, values) for r, values in numbers if any(k in values for k in tags)]
    chosen = next((values for r, values in evals if r["iteration"] == result.get("best_iteration")),
                  evals[-1][1] if evals else {})
    with SummaryWriter(str(dest)) as writer:
        write_hparams_session(writer, hparams, metric_tags=tags, domains=hparam_domains(description))
        write_layout(writer, _nested(config, "data.num_classes"))  # for trials written before their runs carried it
        # The trials start from the checkpoint the baseline selected: its metrics at their step 0.
        for tag in tags:
            if tag in chosen:
                shown = percent_tag(tag)
                writer.add_scalar(shown or tag, (100 if shown else 1) * float(chosen[tag]), 0)
        for record, values in numbers:
            for tag, value in values.items():
                shown = percent_tag(tag)
                writer.add_scalar(f"{BASELINE_PREFIX}/{shown or tag}", (100 if shown else 1) * float(value),
                                  int(record["iteration"]))
        status = result.get("status", "completed")
        write_session_end(writer, status if status in ("completed", "failed", "diverged") else "stopped",
                          iteration=0)
    return True


class TensorBoardError(UserError):
    """TensorBoard cannot be started for this study (no events, port busy, TensorBoard failed)."""


def event_files(study_dir: str | Path) -> list[Path]:
    """Every TensorBoard event file under ``study_dir`` (sorted)."""
    return sorted(Path(study_dir).rglob(EVENTS_GLOB))


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now (TensorBoard itself would fail later, less clearly)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As TensorBoard's server does: SO_REUSEADDR ignores connections in TIME_WAIT (a TensorBoard stopped a
        # moment ago) while a port with a live listener still refuses the bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            # Not "port in use": the address is not this machine's (or not a host name at all).
            if err.errno == 99 or isinstance(err, socket.gaierror):  # 99 = EADDRNOTAVAIL on Linux
                raise TensorBoardError(f"--host {host}: not an address of this machine ({err.strerror or err}); "
                                       "use 127.0.0.1, 0.0.0.0 or one of this machine's addresses") from None
            return False
    return True


def _die_with_parent() -> None:
    # Linux only: the kernel sends SIGTERM to TensorBoard when the process that started it dies, even by SIGKILL.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TensorBoardProcess:
    """A running TensorBoard child process; ``stop()`` (or leaving the ``with`` block) terminates it."""

    def __init__(self, process: subprocess.Popen, *, url: str, logdir: Path, log_path: Path,
                 owns_log: bool = False, private_view: Path | None = None):
        self.process = process
        self.url = url
        self.logdir = logdir
        self.log_path = log_path
        self._owns_log = owns_log
        self._private_view = private_view  # a temp view of a read-only study: removed on stop

    @property
    def hparams_url(self) -> str:
        return self.url + "#hparams"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate TensorBoard (SIGTERM, then SIGKILL after ``timeout`` s) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)
            self._owns_log = False
        if self._private_view is not None:
            shutil.rmtree(self._private_view, ignore_errors=True)
            self._private_view = None
        return self.process.returncode

    def __enter__(self) -> TensorBoardProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _log_tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def start(study_dir: str | Path, *, host: str = "127.0.0.1", port: int = 6006, timeout: float = 90.0,
          log_path: str | Path | None = None, extra_args: Sequence[str] = ()) -> TensorBoardProcess:
    """Start TensorBoard on ``study_dir`` and return once it answers HTTP requests.

    Raises :class:`TensorBoardError` when the directory has no event files, the port is taken, or TensorBoard
    exits or does not answer within ``timeout`` seconds. TensorBoard's own output goes to ``log_path``
    (default: discarded once it is running; its tail is shown when it fails).
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: no such study directory")
    if not event_files(study_dir):
        raise TensorBoardError(f"{study_dir}: no TensorBoard event files yet (each trial writes <trial>/…/tb/ "
                               "events once it starts training); nothing to show")
    if not 0 < port < 65536:
        raise TensorBoardError(f"port = {port!r} is not valid; allowed: 1-65535")
    if not port_is_free(host, port):
        raise TensorBoardError(f"port {port} on {host} is already in use (another TensorBoard?); choose another "
                               "one with --port")
    import tempfile

    private_view = None
    try:
        view = build_view(study_dir)
    except OSError:  # a read-only study (an archive): the view goes to a private temp dir, removed on stop
        private_view = Path(tempfile.mkdtemp(prefix="dastudy-tb-view-"))
        view = build_view(study_dir, view=private_view)
    logdir = view if view is not None else study_dir.resolve()
    owns_log = log_path is None
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="dastudy-tensorboard-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host,
               "--port", str(port), "--window_title", f"dastudy: {study_dir.name}", *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    shown_host = f"[{host}]" if ":" in host else host
    board = TensorBoardProcess(process, url=f"http://{shown_host}:{port}/", logdir=logdir, log_path=log_path,
                               owns_log=owns_log, private_view=private_view)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                tail = _log_tail(log_path)
                hint = " (the port is in use)" if "could not bind" in tail.lower() else ""
                raise TensorBoardError(f"TensorBoard exited with code {process.returncode}{hint}:\n{tail}")
            try:
                with urllib.request.urlopen(board.url + "data/environment", timeout=2) as response:
                    if response.status == 200:
                        return board
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TensorBoardError(f"TensorBoard did not answer on {board.url} within {timeout:.0f} s:\n"
                                       + _log_tail(log_path))
            time.sleep(0.25)
    except BaseException:
        board.stop()
        raise


def _metric(study_dir: Path) -> str:
    import tomllib

    try:
        metric = tomllib.loads((study_dir / "study.toml").read_text()).get("metric")
    except (OSError, ValueError):
        metric = None
    return metric if isinstance(metric, str) else "val/mIoU16"


def study_url(url: str, metric: str) -> str:
    """The Time Series page with smoothing 0 and the study metric's charts pinned on top: ``smoothing`` and
    ``pinnedCards`` are TensorBoard's own query parameters (the link a user gets from its "share" state)."""
    import urllib.parse

    from trainables.tensorboard import percent_tag

    first = percent_tag(metric) or metric
    mean = first.split("/", 1)[-1]
    tags = list(dict.fromkeys([first, f"val/{mean}", f"select/{mean}"]))
    pinned = json.dumps([{"plugin": "scalars", "tag": t} for t in tags], separators=(",", ":"))
    query = urllib.parse.urlencode({"smoothing": "0", "pinnedCards": pinned})
    return f"{url}?{query}#timeseries"


def serve(study_dir: str | Path, *, host: str = "127.0.0.1", port: int = 6006) -> int:
    """Serve the study in TensorBoard until Ctrl-C (or SIGTERM); returns TensorBoard's exit code."""
    study_dir = Path(study_dir)
    board = start(study_dir, host=host, port=port)
    runs = [p for p in board.logdir.iterdir() if p.is_dir()] if board.logdir != study_dir.resolve() else \
        sorted({p.parent for p in event_files(study_dir)})
    print(f"TensorBoard for study {study_dir.name} ({len(runs)} runs): {study_url(board.url, _metric(study_dir))}",
          flush=True)
    print(f"  hyperparameters: {board.hparams_url}", flush=True)
    print(f"  one chart per mIoU: {board.url}#custom_scalars&_smoothingWeight=0", flush=True)
    print("  (curves unsmoothed: a few evaluations per trial; the Settings slider brings smoothing back)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  note: bound to {host}, reachable from other machines", flush=True)
    print("Ctrl-C to stop.", flush=True)

    def _terminate(signum, frame):  # SIGTERM (e.g. from a job scheduler) stops it like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while board.running():
            time.sleep(0.5)
        tail = _log_tail(board.log_path)
        print(f"TensorBoard stopped by itself (exit code {board.process.returncode})" + (f":\n{tail}" if tail else ""),
              file=sys.stderr)
        return board.process.returncode or 1
    except KeyboardInterrupt:
        print("stopping TensorBoard", file=sys.stderr)
        return 0
    finally:
        board.stop()
        signal.signal(signal.SIGTERM, previous)
