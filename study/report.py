"""The study report: ``report.md``, PNG figures and ``best_config.toml`` written from a finished study directory.

Everything is read from the study directory alone (``study.toml``, the trial directories Ray wrote, the engine's
run files, ``optuna.journal``, ``baseline/``), so the report can be regenerated on a copy brought back from a
cluster. Regenerating it is byte-identical: no clock, no absolute paths, sorted inputs and PNGs without the
matplotlib version stamp.

Conventions (stated in the report too):

- a trial's score is the study metric at its **last** report (Ray's ``scope="last"``, and what OptunaSearch tells
  Optuna), so an ASHA-stopped trial is scored at the rung where it was stopped;
- the metric is read on the selection split (``select/…`` = a labelled holdout cut from the target train split,
  ``val/…`` = target val); target-val numbers are always shown separately, as the final numbers;
- per-class IoU uses the seed's Table-2 layout (16 classes, mIoU16, mIoU13; ``*`` = not in mIoU13).

Sections follow the seed's published comparison (its Tables 2 and 3): per-class IoU of the adapted model
against source-only, and the λ_adv sensitivity, here over every searched hyperparameter.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["ReportSummary", "TrialRecord", "StudyData", "ReportError", "load_study", "write_report",
           "asha_rungs", "per_class_rows", "read_optuna", "OptunaSummary"]

FIGURES = "figures"
STATUSES = ("completed", "pruned", "stopped", "diverged", "failed", "running")


class ReportError(ValueError):
    """A study directory the report cannot be built from (missing or malformed file)."""


# ---------------------------------------------------------------------------------------------------------
# reading the study directory


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the report sees it (all paths relative to the study directory)."""

    name: str  # the trial's directory name
    trial_id: str
    params: Mapping[str, Any]  # the searched hyperparameters (Optuna names, e.g. "optim.lr@deeplabv2_tiny")
    status: str  # completed | pruned | stopped | diverged | failed | running
    rounds: int  # reports to Ray (training_iteration) = evaluation rounds
    iteration: int | None  # the engine's SGD iteration at the last report
    metric: float | None  # the study metric at the last report
    final: Mapping[str, float]  # every metric of the last evaluation (val/..., select/...)
    curve: tuple[tuple[int, float], ...]  # (training_iteration, study metric)
    time_s: float | None
    run_dir: str | None  # where the engine's run files are (config.toml, metrics.jsonl, tb/)
    reason: str | None = None  # why a failed/diverged trial failed
    order: int | None = None  # the Optuna trial number (start order): breaks ties between equal scores


@dataclass(frozen=True)
class StudyData:
    name: str
    metric: str
    mode: str
    space: str
    sampler: str
    time_attr: str
    max_t: int | None
    grace_period: int | None
    reduction_factor: float | None
    trials: tuple[TrialRecord, ...]
    baseline: Mapping[str, float] | None  # the source-only run's last evaluation
    baseline_dir: str | None
    num_classes: int
    scheduler: str = "asha"
    optuna: OptunaSummary = field(default_factory=lambda: OptunaSummary())

    @property
    def selection(self) -> str:
        return "holdout" if self.metric.startswith("select/") else "val"

    def scored(self) -> list[TrialRecord]:
        """Trials with a finite metric that did not fail or diverge, best first; equal scores in start order
        (as ``dastudy study status``), then by name."""
        sign = -1.0 if self.mode == "max" else 1.0
        ok = [t for t in self.trials if t.metric is not None and math.isfinite(t.metric)
              and t.status not in ("failed", "diverged")]
        return sorted(ok, key=lambda t: (sign * t.metric, t.order if t.order is not None else math.inf, t.name))

    def best(self) -> TrialRecord | None:
        # Scheduler-stopped trials are scored at an early rung: the best is chosen among the others if any.
        scored = self.scored()
        finished = [t for t in scored if t.status == "completed"]
        return (finished or scored or [None])[0]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ReportError(f"{path}: missing; is this a dastudy study directory?") from None
    except tomllib.TOMLDecodeError as err:
        raise ReportError(f"{path}: not valid TOML ({err})") from None


def _lookup(mapping: Mapping[str, Any], *dotted: str, default: Any = None) -> Any:
    """The first of several dotted keys present in ``mapping`` (study.toml layouts differ between versions)."""
    for key in dotted:
        node: Any = mapping
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    return default


def _json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a crash or a copy in progress
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _ray_states(study_dir: Path) -> dict[str, str]:
    """Trial directory name → Ray status (TERMINATED, ERROR, RUNNING, ...) from the newest experiment state."""
    states = sorted(study_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        out = {}
        for trial_json, _runtime in data.get("trial_data", []):
            trial = json.loads(trial_json)
            out[Path(str(trial.get("relative_logdir", ""))).name] = str(trial.get("status", ""))
        return out
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        return {}  # an internal Ray format: the trial files alone still give a usable report


def _find_run_dir(trial_dir: Path) -> Path | None:
    for candidate in (trial_dir, trial_dir / "run", *sorted(p for p in trial_dir.iterdir() if p.is_dir())):
        if (candidate / "config.toml").is_file() or (candidate / "metrics.jsonl").is_file():
            return candidate
    return None


def _last_eval(run_dir: Path | None) -> dict[str, float]:
    if run_dir is None:
        return {}
    evals = [r for r in _json_lines(run_dir / "metrics.jsonl") if r.get("kind", "eval") == "eval"]
    return _metrics_of(evals[-1]) if evals else {}


def _metrics_of(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) if v is not None else math.nan for k, v in row.items()
            if k.startswith(("val/", "select/")) and (v is None or _number(v) is not None)}


def _engine_status(run_dir: Path | None) -> str | None:
    """``status`` of the engine's ``result.json`` (a JSON object; Ray's ``result.json`` is JSON lines and is
    skipped when the run directory is the trial directory itself)."""
    if run_dir is None or not (run_dir / "result.json").is_file():
        return None
    try:
        data = json.loads((run_dir / "result.json").read_text())
    except json.JSONDecodeError:
        return None
    return data["status"] if isinstance(data, dict) and isinstance(data.get("status"), str) else None


def _failure(trial_dir: Path) -> tuple[str | None, str | None]:
    """(kind, reason) of a failed trial: ``failure.json`` written by the trainable, else Ray's error.txt."""
    try:
        data = json.loads((trial_dir / "failure.json").read_text())
        return str(data.get("kind", "error")), str(data.get("reason", ""))
    except (OSError, ValueError, AttributeError):
        pass
    error = trial_dir / "error.txt"
    if error.is_file():
        lines = [ln.strip() for ln in error.read_text(errors="replace").splitlines() if ln.strip()]
        return "error", lines[-1] if lines else "see error.txt"
    return None, None


def _trial_status(rows: list[dict[str, Any]], *, ray_status: str, failure_kind: str | None,
                  engine_status: str | None, max_t: int | None) -> str:
    """The rule the study's searcher tells Optuna (study.search.StudySearch): failed, else finished (the run
    trained all its iterations, or reached max_t evaluations), else pruned (stopped early by the scheduler)."""
    if ray_status == "TERMINATED" or engine_status == "completed":
        failure_kind = None  # failed once, retried from its checkpoint and ended normally (error.txt stays)
    if failure_kind == "diverged" or engine_status == "diverged":
        return "diverged"
    if failure_kind is not None or ray_status == "ERROR":
        return "failed"
    if ray_status in ("RUNNING", "PENDING", "PAUSED"):
        return "running"
    if not rows:
        return "failed"
    last = rows[-1]
    if last.get("finished") or (max_t is not None and int(last.get("training_iteration", 0)) >= max_t):
        return "completed"
    if max_t is None and engine_status == "completed":
        return "completed"
    return "pruned"


def _searched_names(study_dir: Path, trial_params: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the searched dimensions: from space.json, else the parameters that vary across trials."""
    space = study_dir / "space.json"
    if space.is_file():
        try:
            dims = json.loads(space.read_text()).get("dimensions")
        except (json.JSONDecodeError, AttributeError):
            dims = None
        if isinstance(dims, Mapping) and dims:
            return list(dims)
    params = list(trial_params)
    names = sorted({k for p in params for k in p})
    return [n for n in names if len({json.dumps(p.get(n), sort_keys=True) for p in params}) > 1]


def _full_run_evaluations(config: Mapping[str, Any]) -> int | None:
    # scheduler.max_t left out means "every evaluation of a full run" (study.study_config.n_evaluations).
    optim = _lookup(config, "train.optim", default={})
    interval = _lookup(config, "train.eval.interval")
    iterations = optim.get("iter_stop") or optim.get("iter_max") if isinstance(optim, Mapping) else None
    if _number(iterations) is None or _number(interval) is None or interval <= 0:
        return None
    return math.ceil(iterations / interval)


def load_study(study_dir: str | Path) -> StudyData:
    """Everything the report needs, read from the study directory (nothing outside it)."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ReportError(f"{study_dir}: no such study directory")
    config = _read_toml(study_dir / "study.toml")
    metric = _lookup(config, "metric", "study.metric", "search.metric", "tune.metric")
    if not isinstance(metric, str):
        raise ReportError(f"{study_dir / 'study.toml'}: metric = {metric!r} is not valid; allowed: a metric "
                          "name such as 'val/mIoU13'")
    mode = _lookup(config, "mode", "study.mode", "search.mode", "tune.mode", default="max")
    max_t = _lookup(config, "scheduler.max_t")
    if max_t is None:
        max_t = _full_run_evaluations(config)
    grace = _lookup(config, "scheduler.grace_period", "scheduler.grace")
    rf = _lookup(config, "scheduler.reduction_factor", "scheduler.rf")
    ray_states = _ray_states(study_dir)
    name = str(_lookup(config, "name", "study.name", default=study_dir.name))
    optuna_summary = read_optuna(study_dir, name)
    trial_dirs = sorted(p for p in study_dir.iterdir() if p.is_dir() and (p / "params.json").is_file())
    raw = []
    for trial_dir in trial_dirs:
        params = _flatten(json.loads((trial_dir / "params.json").read_text()))
        rows = _json_lines(trial_dir / "result.json")
        raw.append((trial_dir, params, rows))
    searched = _searched_names(study_dir, (p for _, p, _ in raw))
    trials = []
    for trial_dir, params, rows in raw:
        run_dir = _find_run_dir(trial_dir)
        final = {**_last_eval(run_dir), **(_metrics_of(rows[-1]) if rows else {})}
        curve = tuple((int(r["training_iteration"]), float(r[metric])) for r in rows
                      if _number(r.get(metric)) is not None and "training_iteration" in r)
        last = rows[-1] if rows else {}
        failure = _failure(trial_dir)
        trials.append(TrialRecord(
            name=trial_dir.name,
            trial_id=str(last.get("trial_id", trial_dir.name)),
            params={n: params[n] for n in searched if n in params},
            status=_trial_status(rows, ray_status=ray_states.get(trial_dir.name, ""), failure_kind=failure[0],
                                 engine_status=_engine_status(run_dir), max_t=max_t),
            reason=failure[1],
            order=optuna_summary.order.get(trial_dir.name),
            rounds=int(last.get("training_iteration", 0)),
            iteration=int(last["iteration"]) if _number(last.get("iteration")) is not None else None,
            metric=curve[-1][1] if curve else None,
            final=final,
            curve=curve,
            time_s=_number(last.get("time_total_s")),
            run_dir=str(run_dir.relative_to(study_dir)) if run_dir is not None else None,
        ))
    baseline_dir = study_dir / "baseline"
    baseline = _last_eval(baseline_dir) if baseline_dir.is_dir() else None
    num_classes = _lookup(config, "train.data.num_classes", "base.data.num_classes", "data.num_classes",
                          default=None)
    if num_classes is None:
        has_19 = any("val/mIoU19" in t.final for t in trials) or bool(baseline and "val/mIoU19" in baseline)
        num_classes = 19 if has_19 else 16
    return StudyData(
        name=name,
        metric=metric, mode=str(mode),
        space=str(_lookup(config, "search.space", "space", default="?")),
        sampler=str(_lookup(config, "search.sampler", "sampler", default="?")),
        time_attr=str(_lookup(config, "scheduler.time_attr", default="training_iteration")),
        max_t=int(max_t) if _number(max_t) is not None else None,
        grace_period=int(grace) if _number(grace) is not None else None,
        reduction_factor=float(rf) if _number(rf) is not None else None,
        trials=tuple(trials),
        baseline=baseline or None,
        baseline_dir="baseline" if baseline else None,
        num_classes=int(num_classes),
        scheduler=str(_lookup(config, "scheduler.kind", default="asha")),
        optuna=optuna_summary,
    )


def asha_rungs(*, max_t: int | None, grace_period: int | None, reduction_factor: float | None) -> list[int]:
    """ASHA's milestones (bracket 0): grace·rf^k up to max_t (Li et al., https://arxiv.org/abs/1810.05934;
    Ray's AsyncHyperBandScheduler computes the same list)."""
    if not max_t or not grace_period or not reduction_factor or reduction_factor <= 1:
        return []
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1 + 1e-9)
    return [int(round(grace_period * reduction_factor ** k)) for k in range(count)]


def _rungs(data: StudyData) -> list[int]:
    if data.scheduler != "asha":
        return []
    return asha_rungs(max_t=data.max_t, grace_period=data.grace_period, reduction_factor=data.reduction_factor)


# ---------------------------------------------------------------------------------------------------------
# Optuna


@dataclass(frozen=True)
class OptunaSummary:
    """What the report takes from ``optuna.journal``."""

    states: Mapping[str, int] = field(default_factory=dict)  # COMPLETE / PRUNED / FAIL / RUNNING → count
    order: Mapping[str, int] = field(default_factory=dict)  # trial directory → Optuna trial number (start order)
    importances: Mapping[str, float] = field(default_factory=dict)
    note: str | None = None


def read_optuna(study_dir: Path, name: str) -> OptunaSummary:
    """Trial states, start order and PED-ANOVA importances (Optuna's default evaluator) from ``optuna.journal``.

    The journal is read from a private copy: the study directory may be a read-only copy, and the journal
    backend opens its file for appending."""
    journal = study_dir / "optuna.journal"
    if not journal.is_file():
        return OptunaSummary(note="no optuna.journal in the study directory: no parameter importance")
    import warnings

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dastudy-report-") as tmp:
        copy = Path(tmp) / "optuna.journal"
        shutil.copyfile(journal, copy)
        try:
            storage = JournalStorage(JournalFileBackend(str(copy)))
            names = optuna.study.get_all_study_names(storage)
            if not names:
                return OptunaSummary(note="optuna.journal holds no study: no parameter importance")
            study = optuna.load_study(study_name=name if name in names else names[0], storage=storage)
            trials = study.get_trials(deepcopy=False)
        except Exception as err:  # a damaged journal must not stop the rest of the report
            return OptunaSummary(note=f"the Optuna journal could not be read ({type(err).__name__}: {err})")
        states = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
        summary = OptunaSummary(states={k: v for k, v in states.items() if v},
                                order={str(t.user_attrs["trial_dir"]): t.number for t in trials
                                       if "trial_dir" in t.user_attrs})
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < 3:
            return replace(summary, note=f"parameter importance needs at least 3 completed Optuna trials; this "
                                         f"study has {len(complete)}")
        params = sorted({n for t in complete for n in t.distributions})
        varied = [n for n in params if len({repr(t.params.get(n)) for t in complete if n in t.params}) > 1]
        if not varied:
            return replace(summary, note="no parameter took more than one value among completed trials: "
                                         "importance is undefined")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values = optuna.importance.get_param_importances(study, params=varied)
            except Exception as err:  # PED-ANOVA refuses degenerate studies (e.g. all values equal)
                return replace(summary, note=f"Optuna could not compute importances ({type(err).__name__}: {err})")
    # e.g. "Target and region quantiles select the same set of trials": too few trials to tell parameters apart
    note = "; ".join(sorted({f"Optuna: {w.message}".rstrip(".") for w in caught})) or None
    return replace(summary, importances={k: float(v) for k, v in values.items()}, note=note)


# ---------------------------------------------------------------------------------------------------------
# tables


def _pct(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.{digits}f}"


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def per_class_rows(data: StudyData, best: TrialRecord | None) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """The seed's Table-2 layout: header (classes, mIoU16, mIoU13) and rows of fractions (NaN = missing)."""
    from data.labels import CLASSES_13_IN_16, class_names

    names = list(class_names(16))
    header = [n + ("*" if i not in CLASSES_13_IN_16 else "") for i, n in enumerate(names)] + ["mIoU16", "mIoU13"]
    keys = [f"val/IoU/{n}" for n in names] + ["val/mIoU16", "val/mIoU13"]

    def row(metrics: Mapping[str, float]) -> list[float]:
        return [float(metrics.get(k, math.nan)) for k in keys]

    rows = []
    if data.baseline:
        rows.append(("source only (baseline)", row(data.baseline)))
    if best is not None:
        rows.append((f"best trial ({best.name})", row(best.final)))
    if data.baseline and best is not None:
        rows.append(("difference", [b - a for a, b in zip(rows[0][1], rows[1][1])]))
    return header, rows


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _summary_header(data: StudyData, searched: Sequence[str]) -> list[str]:
    final_keys = _final_keys(data)
    return (["rank", "trial", "status", *searched, "rounds", "iteration", f"{data.metric} (selection)"]
            + [f"{k} (final)" for k in final_keys] + ["time s"])


def _final_keys(data: StudyData) -> list[str]:
    means = ["val/mIoU16", "val/mIoU13"] if data.num_classes == 16 else ["val/mIoU19", "val/mIoU16", "val/mIoU13"]
    return [k for k in means if k != data.metric]


def _summary_rows(data: StudyData, searched: Sequence[str]) -> list[list[str]]:
    ranked = data.scored()
    unranked = sorted((t for t in data.trials if t not in ranked), key=lambda t: t.name)
    rows = []
    for rank, trial in enumerate(ranked + unranked, start=1):
        rows.append([str(rank) if trial in ranked else "-", trial.name, trial.status,
                     *[_param_text(trial.params.get(n, "")) for n in searched], str(trial.rounds),
                     str(trial.iteration) if trial.iteration is not None else "n/a", _pct(trial.metric),
                     *[_pct(trial.final.get(k)) for k in _final_keys(data)],
                     f"{trial.time_s:.0f}" if trial.time_s is not None else "n/a"])
    return rows


# ---------------------------------------------------------------------------------------------------------
# summary returned to the caller


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`write_report` wrote; ``str(summary)`` is the summary table for the terminal."""

    study: str
    metric: str
    mode: str
    selection: str
    counts: Mapping[str, int]
    best_trial: str | None
    best_params: Mapping[str, Any]
    best_metric: float | None
    best_final: Mapping[str, float]
    importances: Mapping[str, float]
    report: Path
    figures: tuple[Path, ...]
    best_config: Path | None
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = field(default=())

    def table(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(self.header, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in self.rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        head = f"study {self.study}: {counts}; metric {self.metric} ({self.mode}, selection split: {self.selection})"
        best = (f"best: {self.best_trial} {self.metric} = {_pct(self.best_metric)}" if self.best_trial
                else "best: none (no trial reported the metric)")
        return "\n".join([head, self.table(), best, f"report: {self.report}"])


# ---------------------------------------------------------------------------------------------------------
# figures (matplotlib, Agg; PNG metadata without the version stamp so that a regenerated figure is identical)

_STATUS_STYLE = {"completed": ("o", 1.0), "pruned": ("x", 0.8), "stopped": ("x", 0.8), "running": ("^", 0.6)}


def _is_seed(name: str) -> bool:
    return name.split("@", 1)[0].rsplit(".", 1)[-1] == "seed"


def _log_scale(name: str, values: Sequence[Any], space: Mapping[str, Any]) -> bool:
    variants = space.get(name) or []
    if any(isinstance(v, Mapping) and v.get("log") for v in variants):
        return True
    numbers = [float(v) for v in values if _number(v) is not None]
    if not numbers or min(numbers) <= 0:
        return False
    return "lambda" in name or max(numbers) / min(numbers) >= 20


def _space_dimensions(study_dir: Path) -> Mapping[str, Any]:
    try:
        dims = json.loads((study_dir / "space.json").read_text()).get("dimensions", {})
        return dims if isinstance(dims, Mapping) else {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def _save(fig, path: Path) -> Path:
    # "Software" would stamp the matplotlib version; the Agg PNG writer adds no date of its own.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _sensitivity(path: Path, data: StudyData, searched: Sequence[str], space: Mapping[str, Any]) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    axes_names = [n for n in searched if not _is_seed(n)]
    if not axes_names:
        return None
    cols = min(3, len(axes_names))
    rows = math.ceil(len(axes_names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    plotted = data.scored()
    failed = [t for t in data.trials if t.status in ("failed", "diverged")]
    for ax, name in zip(axes.flat, axes_names):
        values = [t.params.get(name) for t in plotted]
        numeric = all(_number(v) is not None for v in values)
        categories = sorted({str(v) for v in values})

        def x_of(value: Any) -> float:
            return float(value) if numeric else float(categories.index(str(value)))

        for status, (marker, alpha) in _STATUS_STYLE.items():
            group = [t for t in plotted if t.status == status and name in t.params]
            if group:
                ax.scatter([x_of(t.params[name]) for t in group], [100 * t.metric for t in group], marker=marker,
                           alpha=alpha * (0.45 if status == "completed" else 1.0), s=28,
                           color="tab:blue" if status == "completed" else "tab:gray",
                           label=status if status != "completed" else "completed (one seed)")
        # Repeats that differ only in the seed: mean ± standard deviation over seeds.
        others = [n for n in searched if not _is_seed(n)]
        groups: dict[str, list[TrialRecord]] = {}
        for t in plotted:
            if t.status == "completed" and name in t.params:
                groups.setdefault(json.dumps([t.params.get(n) for n in others], default=str), []).append(t)
        means = [(x_of(g[0].params[name]), float(np.mean([100 * t.metric for t in g])),
                  float(np.std([100 * t.metric for t in g]))) for g in groups.values() if len(g) > 1]
        means.sort()
        if means:
            ax.errorbar([m[0] for m in means], [m[1] for m in means], yerr=[m[2] for m in means], fmt="s",
                        color="tab:blue", capsize=3, ms=5, label="mean ± sd over seeds")
        if data.baseline and data.metric in data.baseline and math.isfinite(data.baseline[data.metric]):
            ax.axhline(100 * data.baseline[data.metric], color="tab:red", ls="--", lw=1, label="source only")
        if numeric and _log_scale(name, values, space):
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=15))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if not numeric:
            ax.set_xticks(range(len(categories)), categories, rotation=20)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set_xlabel(name)
        ax.set_ylabel(f"{data.metric} (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(axes_names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if labels:  # nothing to label when every trial failed
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels), frameon=False)
    title = f"{data.name}: {data.metric} at each trial's last report"
    if failed:
        title += f" ({len(failed)} failed/diverged, not shown)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)


def _learning_curves(path: Path, data: StudyData, rungs: Sequence[int]) -> Path | None:
    import matplotlib.pyplot as plt

    curves = [t for t in data.trials if t.curve]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    cmap = plt.get_cmap("tab20")
    for index, trial in enumerate(curves):
        xs = [x for x, _ in trial.curve]
        ys = [100 * y for _, y in trial.curve]
        dashed = trial.status != "completed"
        ax.plot(xs, ys, ls="--" if dashed else "-", lw=1.0 if dashed else 1.6, color=cmap(index % 20),
                marker=".", ms=4, label=f"{trial.name} ({trial.status})")
        if trial.status in ("pruned", "stopped", "failed", "diverged"):
            ax.plot(xs[-1:], ys[-1:], marker="x", ms=8, color="black" if trial.status != "failed" else "tab:red")
    for k, rung in enumerate(rungs):
        ax.axvline(rung, color="0.5", ls=":", lw=1)
        ax.annotate(f"rung {k}", (rung, 1.0), xycoords=("data", "axes fraction"), fontsize=7, ha="right",
                    va="top", rotation=90, color="0.4")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"{data.time_attr} (evaluation rounds)")
    ax.set_ylabel(f"{data.metric} (%)")
    ax.set_title(f"{data.name}: learning curves (dashed = stopped early; x = last report)", fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) <= 16:
        ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def _per_class_figure(path: Path, data: StudyData, best: TrialRecord | None) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    header, rows = per_class_rows(data, best)
    bars = [(name, values) for name, values in rows if name != "difference"]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(11, 4.2))
    width = 0.8 / len(bars)
    positions = np.arange(len(header))
    colors = ["tab:gray", "tab:blue"] if len(bars) == 2 else ["tab:blue"]
    for k, (name, values) in enumerate(bars):
        heights = [0.0 if not math.isfinite(v) else 100 * v for v in values]
        ax.bar(positions + (k - (len(bars) - 1) / 2) * width, heights, width, label=name, color=colors[k])
    ax.set_xticks(positions, header, rotation=45, ha="right")
    ax.set_ylabel("IoU on target val (%)")
    ax.set_title(f"{data.name}: per-class IoU (* = not in mIoU13)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _importance_figure(path: Path, data: StudyData, importances: Mapping[str, float]) -> Path | None:
    import matplotlib.pyplot as plt

    if not importances:
        return None
    ordered = sorted(importances.items(), key=lambda kv: (kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(ordered) + 1.6))
    ax.barh([k for k, _ in ordered], [v for _, v in ordered], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, normalised)")
    ax.set_title(f"{data.name}: hyperparameter importance for {data.metric}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _draw_all(figure_dir: Path, data: StudyData, *, best: TrialRecord | None, searched: Sequence[str],
              importances: Mapping[str, float], rungs: Sequence[int]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    space = _space_dimensions(figure_dir.parent)
    out: dict[str, Path] = {}
    with plt.style.context("default"), matplotlib.rc_context({"svg.hashsalt": "dastudy", "path.simplify": True}):
        for key, draw in (
            ("sensitivity", lambda p: _sensitivity(p, data, searched, space)),
            ("learning_curves", lambda p: _learning_curves(p, data, rungs)),
            ("per_class_iou", lambda p: _per_class_figure(p, data, best)),
            ("importance", lambda p: _importance_figure(p, data, importances)),
        ):
            path = draw(figure_dir / f"{key}.png")
            if path is not None:
                out[key] = path
    return out


# ---------------------------------------------------------------------------------------------------------
# the report


def _best_config(study_dir: Path, data: StudyData, best: TrialRecord | None) -> tuple[Path | None, str | None]:
    """The best trial's resolved run config, re-validated, renamed and written as ``best_config.toml``."""
    if best is None:
        return None, "no trial has a score: no best configuration"
    if best.run_dir is None or not (study_dir / best.run_dir / "config.toml").is_file():
        return None, f"trial {best.name} has no config.toml in its run directory: no best_config.toml"
    from study.config import dump_toml
    from trainables.config import ConfigError, RuntimeConfig, TrainConfig, from_dict, to_dict

    source = study_dir / best.run_dir / "config.toml"
    try:
        cfg = from_dict(TrainConfig, _read_toml(source), source=str(source.relative_to(study_dir)))
    except ConfigError as err:
        return None, f"the best trial's config.toml is not a valid run config ({err})"
    data_dict = to_dict(cfg)
    data_dict["name"] = f"{data.name}-best"
    # Trials run without progress bars (their output goes to Ray's logs); a run of its own shows one again.
    data_dict.setdefault("runtime", {})["progress"] = RuntimeConfig().progress
    path = study_dir / "best_config.toml"
    header = (f"# Best configuration of study {data.name!r}: trial {best.name}, "
              f"{data.metric} = {_pct(best.metric)} at its last report.\n"
              f"# Run it with: dastudy adapt best_config.toml\n")
    if cfg.model.init_checkpoint:
        header += ("# model.init_checkpoint is the study's source-only baseline as it was on the machine that ran "
                   "the study;\n# point it at your copy of that checkpoint when you run this elsewhere.\n")
    path.write_text(header + dump_toml(data_dict))
    return path, None


def write_report(study_dir: str | Path) -> ReportSummary:
    """Write ``report.md``, ``figures/*.png`` and ``best_config.toml`` into ``study_dir``; return the summary."""
    study_dir = Path(study_dir)
    data = load_study(study_dir)
    if not data.trials:
        raise ReportError(f"{study_dir}: no trial directories (with params.json) yet; has the study started?")
    searched = sorted({n for t in data.trials for n in t.params})
    best = data.best()
    importances, importance_note, optuna_states = dict(data.optuna.importances), data.optuna.note, data.optuna.states
    figure_dir = study_dir / FIGURES
    figure_dir.mkdir(exist_ok=True)
    figures = _draw_all(figure_dir, data, best=best, searched=searched, importances=importances,
                        rungs=_rungs(data))
    best_config, config_note = _best_config(study_dir, data, best)
    notes = tuple(n for n in (importance_note, config_note) if n)
    counts = {s: sum(t.status == s for t in data.trials) for s in STATUSES}
    header = _summary_header(data, searched)
    rows = _summary_rows(data, searched)
    text = _markdown(data, best=best, searched=searched, header=header, rows=rows, figures=figures,
                     importances=importances, best_config=best_config, notes=notes, counts=counts,
                     optuna_states=optuna_states)
    report = study_dir / "report.md"
    report.write_text(text)
    return ReportSummary(
        study=data.name, metric=data.metric, mode=data.mode, selection=data.selection, counts=counts,
        best_trial=best.name if best else None, best_params=dict(best.params) if best else {},
        best_metric=best.metric if best else None, best_final=dict(best.final) if best else {},
        importances=importances, report=report, figures=tuple(figures.values()), best_config=best_config,
        header=tuple(header), rows=tuple(tuple(r) for r in rows), notes=notes,
    )


def _markdown(data: StudyData, *, best, searched, header, rows, figures, importances, best_config, notes,
              counts, optuna_states) -> str:
    selection = ("a labelled **holdout** cut from the target train split (`select/…`)" if data.selection == "holdout"
                 else "**target val** (`val/…`): the selection and the final numbers come from the same images, "
                      "so the best score is optimistic (the seed's protocol)")
    counted = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    lines = [
        f"# Study report: {data.name}",
        "",
        f"- search space `{data.space}`, sampler `{data.sampler}`; {len(data.trials)} trials: {counted}",
        f"- study metric `{data.metric}` ({data.mode}), read on {selection}",
        f"- a trial's score is its metric at its **last** report; final numbers are always target val (`val/…`)",
    ]
    rungs = _rungs(data)
    if rungs:
        lines.append(f"- ASHA: max_t = {data.max_t}, grace_period = {data.grace_period}, reduction_factor = "
                     f"{_param_text(data.reduction_factor)} → rungs at {', '.join(map(str, rungs))} "
                     f"{data.time_attr} (evaluation rounds); pruned = stopped by ASHA at a rung")
    elif data.max_t:
        lines.append(f"- scheduler `{data.scheduler}` (no early stopping), {data.max_t} evaluation rounds per run")
    if optuna_states:
        told = ", ".join(f"{v} {k}" for k, v in sorted(optuna_states.items()))
        lines.append(f"- Optuna journal: {told}; importances use the COMPLETE trials only")
        if counts.get("pruned") and not optuna_states.get("PRUNED"):
            lines.append("- the scheduler's early stops reached Optuna as COMPLETE with their early value (plain "
                         "OptunaSearch), which biases TPE and the importances towards fast starters")
    lines += ["", "## Trials", "", _markdown_table(header, rows), ""]
    failed = [t for t in data.trials if t.status in ("failed", "diverged")]
    if failed:
        lines += ["Failed or diverged trials:", ""]
        lines += [f"- `{t.name}`: {t.status} after {t.rounds} rounds" + (f": {t.reason}" if t.reason else "")
                  for t in failed]
        lines.append("")
    lines += ["## Best configuration", ""]
    if best is None:
        lines += ["No trial reported the study metric.", ""]
    else:
        params = ", ".join(f"`{k}` = {_param_text(v)}" for k, v in sorted(best.params.items()))
        lines += [f"Trial `{best.name}` ({best.status}, Ray trial id {best.trial_id}): {data.metric} = "
                  f"{_pct(best.metric)} after {best.rounds} rounds; {params or 'no searched parameters'}.", ""]
        if best_config is not None:
            lines += [f"Ready to run: [`{best_config.name}`]({best_config.name}) — `dastudy adapt {best_config.name}`",
                      ""]
    lines += ["## Per-class IoU on target val (%)", ""]
    table_header, table_rows = per_class_rows(data, best)
    if table_rows:
        digits = 1
        lines.append(_markdown_table(["run", *table_header],
                                     [[name, *[_signed(v, digits) if name == "difference" else _pct(v, digits)
                                               for v in values]] for name, values in table_rows]))
        lines += ["", "`*` = not in mIoU13 (wall, fence, pole). "
                  + ("" if data.baseline else "No `baseline/` source-only run in this study: no difference row."),
                  ""]
    else:
        lines += ["No evaluation with per-class IoU.", ""]
    titles = {"sensitivity": "Sensitivity", "learning_curves": "Learning curves", "per_class_iou": "Per-class IoU",
              "importance": "Parameter importance"}
    lines += ["## Figures", ""]
    for key, path in figures.items():
        lines += [f"### {titles.get(key, key)}", "", f"![{key}]({FIGURES}/{path.name})", ""]
    lines += ["## Parameter importance (Optuna, PED-ANOVA)", ""]
    if importances:
        lines.append(_markdown_table(["parameter", "importance"],
                                     [[k, f"{v:.3f}"] for k, v in sorted(importances.items(), key=lambda kv: (-kv[1], kv[0]))]))
        lines.append("")
    for note in notes:
        lines += [f"Note: {note}.", ""]
    lines += ["---", "Regenerate with `dastudy study report NAME`; browse the runs with `dastudy study tensorboard "
              "NAME` or `optuna-dashboard optuna.journal`.", ""]
    return "\n".join(lines)


def _signed(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.{digits}f}"

