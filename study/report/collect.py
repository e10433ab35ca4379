"""Reading a study directory: trial records, statuses and scores (``load_study``), ASHA rungs."""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from study.report.importance import OptunaSummary, read_optuna
from trainables.config import flatten

FIGURES = "figures"
STATUSES = ("completed", "pruned", "stopped", "diverged", "failed", "running")


class ReportError(ValueError):
    """A study directory the report cannot be built from (missing or malformed file)."""



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

    def best_report(self, mode: str) -> float | None:
        """The study metric at the trial's best evaluation: with a val/ metric this is an ORACLE choice (the
        evaluation is picked on the images it is scored on, the seed's protocol), shown only next to the score."""
        values = [y for _, y in self.curve if math.isfinite(y)]
        if not values:
            return None
        return max(values) if mode == "max" else min(values)


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
    baseline: Mapping[str, float] | None  # the evaluation of the checkpoint the trials start from (see below)
    baseline_dir: str | None
    num_classes: int
    scheduler: str = "asha"
    optuna: OptunaSummary = field(default_factory=lambda: OptunaSummary())
    model: str | None = None  # the base config's model.name (a searched model.name overrides it per trial)
    base_lambda: float | None = None  # the base config's adapt.lambda_adv_main
    baseline_model: str | None = None  # the source-only baseline's model.name
    baseline_iteration: int | None = None  # the iteration of that checkpoint (best.pt); None: the last evaluation
    baseline_note: str | None = None  # why the source-only numbers may not be those of the start checkpoint

    @property
    def baseline_label(self) -> str:
        """Where the source-only numbers come from, for the report."""
        if self.baseline_iteration is not None:
            return (f"the source-only checkpoint every trial starts from (`best.pt`, selected at iteration "
                    f"{self.baseline_iteration}), its evaluation at that iteration")
        return "the source-only baseline's last evaluation (the start checkpoint's own was not found)"

    @property
    def selection(self) -> str:
        return "holdout" if self.metric.startswith("select/") else "val"

    def label(self, trial: TrialRecord, dimensions: Sequence[str] | None = None) -> str:
        """The trial's label (:func:`study.config.labels.trial_label`), as TensorBoard's run list, the status
        table and the progress lines show it: ``#6 λ=0.0291 lr=0.0429 seed=1``; a replicate (``search.seeds``)
        carries its configuration's Optuna number and its seed; a trial Optuna never numbered, its directory."""
        from study.config.labels import trial_label

        number = self.optuna.numbers.get(trial.name, trial.order)
        return trial_label(number, trial.params, dimensions, fallback=trial.name,
                           seed=self.optuna.seeds.get(trial.name))

    def scored(self) -> list[TrialRecord]:
        """Trials with a finite metric that did not fail or diverge, best first; equal scores in start order
        (as ``dastudy study status``), then by name."""
        sign = -1.0 if self.mode == "max" else 1.0
        ok = [t for t in self.trials if t.metric is not None and math.isfinite(t.metric)
              and t.status not in ("failed", "diverged")]
        return sorted(ok, key=lambda t: (sign * t.metric, t.order if t.order is not None else math.inf, t.name))


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
    try:  # one small file per trial, rewritten at each evaluation (trainables/tune.py LAST_EVAL_FILE)
        return _metrics_of(json.loads((run_dir / "last_eval.json").read_text()))
    except (OSError, ValueError):
        pass  # a run from before last_eval.json existed: the last evaluation line of its metrics file
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


def _engine_only_trials(study_dir: Path, optuna_summary, *, known: set[str]):
    """Trials whose Ray files (``params.json``, ``result.json``) never reached the study: a driver killed within
    Ray's snapshot interval (≥ 10 s) after a trial ended loses the copies its loggers had written locally, while the
    trial's engine output (``run/``) and its Optuna record are complete (the resumed study does not run it again).
    A resume on the driver's machine recovers those copies (study/state/driver_files.py); on another machine or an object
    store it cannot.
    Their parameters come from Optuna, their evaluations from ``run/metrics.jsonl``, as Ray rows would have them."""
    out = []
    for record in getattr(optuna_summary, "records", ()):
        trial_dir = study_dir / record.trial_dir if record.trial_dir else None
        if trial_dir is None or record.trial_dir in known or not (trial_dir / "run" / "result.json").is_file():
            continue
        run_dir = trial_dir / "run"
        evals = [r for r in _json_lines(run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
        rows = [{**{k: v for k, v in r.items() if k.startswith(("val/", "select/", "uda/"))},
                 "iteration": r.get("iteration"), "training_iteration": index,
                 "trial_id": trial_dir.name.removeprefix("trial_")}
                for index, r in enumerate(evals, start=1)]
        if rows and _engine_status(run_dir) == "completed":
            rows[-1]["finished"] = 1.0
        out.append((trial_dir, dict(record.params), rows))
        known.add(record.trial_dir)
    return out


def _trial_status(rows: list[dict[str, Any]], *, ray_status: str, failure_kind: str | None,
                  engine_status: str | None, max_t: int | None) -> str:
    """The rule the study's searcher tells Optuna (study.run.search.StudySearch): failed, else finished (the run
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
    """Names of the searched dimensions: from space.json, else the parameters that vary across trials; and the run
    seed of ``search.seeds`` replicates, which no space dimension names (it is in each trial's params.json: without
    it the report saw every replicate as seed None and paired nothing)."""
    params = list(trial_params)
    space = study_dir / "space.json"
    if space.is_file():
        try:
            dims = json.loads(space.read_text()).get("dimensions")
        except (json.JSONDecodeError, AttributeError):
            dims = None
        if isinstance(dims, Mapping) and dims:
            replicate_seeds = sorted({k for p in params for k in p if k not in dims
                                      and k.split("@", 1)[0].rsplit(".", 1)[-1] == "seed"})
            return [*dims, *replicate_seeds]
    names = sorted({k for p in params for k in p})
    return [n for n in names if len({json.dumps(p.get(n), sort_keys=True) for p in params}) > 1]


def _full_run_evaluations(config: Mapping[str, Any]) -> int | None:
    # scheduler.max_t left out means "every evaluation of a full run" (study.config.study_config.n_evaluations).
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
        params = flatten(json.loads((trial_dir / "params.json").read_text()))
        rows = _json_lines(trial_dir / "result.json")
        raw.append((trial_dir, params, rows))
    raw += _engine_only_trials(study_dir, optuna_summary, known={p.name for p in trial_dirs})
    raw.sort(key=lambda item: item[0].name)
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
    baseline, baseline_iteration, baseline_note = (_start_checkpoint_eval(baseline_dir, study_dir, trials)
                                                   if baseline_dir.is_dir() else (None, None, None))
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
        model=_lookup(config, "train.model.name", default=None) or _run_model(study_dir, trials),
        base_lambda=_number(_lookup(config, "train.adapt.lambda_adv_main")),
        baseline_model=_baseline_model(baseline_dir) if baseline else None,
        baseline_iteration=baseline_iteration if baseline else None,
        baseline_note=baseline_note if baseline else None,
    )


def _start_checkpoint_eval(baseline_dir: Path, study_dir: Path, trials: Iterable[TrialRecord]
                           ) -> tuple[dict[str, float], int | None, str | None]:
    """The source-only number: the evaluation of the checkpoint the trials start from.

    Every trial is initialised from the baseline's ``best.pt`` (study.run.baseline.prepare_baseline), chosen on the
    baseline's selection split at ``best_iteration`` (its ``result.json``); the engine evaluated that very model
    at that iteration, on the same splits and protocol as a trial's evaluations, and wrote it to
    ``metrics.jsonl``. The baseline's *last* evaluation is another model (later, usually a different score).
    Returns (metrics, iteration, note); an older study directory without that record falls back to the last
    evaluation and says so."""
    try:
        result = json.loads((baseline_dir / "result.json").read_text())
    except (OSError, ValueError):
        result = {}
    best_iteration = result.get("best_iteration") if isinstance(result, dict) else None
    evals = [r for r in _json_lines(baseline_dir / "metrics.jsonl") if r.get("kind", "eval") == "eval"]
    at_best = [r for r in evals if _number(best_iteration) is not None and r.get("iteration") == best_iteration]
    if not at_best:
        why = ("baseline/result.json names no best_iteration" if _number(best_iteration) is None else
               f"baseline/metrics.jsonl has no evaluation at best_iteration {best_iteration}")
        return (_last_eval(baseline_dir),  None,
                f"{why} (a study directory from an older version): the source-only numbers are the baseline's last "
                "evaluation, which may not be the checkpoint (best.pt) the trials start from")
    note = _scoring_differs(baseline_dir, study_dir, trials)
    return _metrics_of(at_best[-1]), int(best_iteration), note  # the last: a resumed run re-evaluates once more


_SCORING = (("eval", "protocol"), ("eval", "flip"), ("eval", "max_images"), ("data", "val"), ("data", "num_classes"))


def _scoring_differs(baseline_dir: Path, study_dir: Path, trials: Iterable[TrialRecord]) -> str | None:
    """A note when the baseline was evaluated differently from the trials (another val split or protocol)."""
    run = next((t.run_dir for t in trials if t.run_dir and (study_dir / t.run_dir / "config.toml").is_file()), None)
    if run is None or not (baseline_dir / "config.toml").is_file():
        return None
    try:
        ours, theirs = _read_toml(baseline_dir / "config.toml"), _read_toml(study_dir / run / "config.toml")
    except ReportError:
        return None
    differ = [".".join(k) for k in _SCORING if _lookup(ours, ".".join(k)) != _lookup(theirs, ".".join(k))]
    if not differ:
        return None
    return (f"the source-only baseline was evaluated with other settings than the trials ({', '.join(differ)} "
            f"differ between baseline/config.toml and {run}/config.toml): its numbers are not scored the way the "
            "trials are")


def _run_model(study_dir: Path, trials: Iterable[TrialRecord]) -> str | None:
    """The model a trial ran (its run config), for a study.toml without train.model.name."""
    for t in trials:
        if t.run_dir is not None and (study_dir / t.run_dir / "config.toml").is_file():
            return _baseline_model(study_dir / t.run_dir)
    return None


def _baseline_model(baseline_dir: Path) -> str | None:
    try:
        return str(_read_toml(baseline_dir / "config.toml").get("model", {}).get("name")) or None
    except (ReportError, AttributeError):
        return None


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

