"""Figures of the report, fit for a paper draft: each figure as a PNG at 200 dpi (for report.md) and a
vector PDF beside it (for LaTeX), both without version or date stamps so that a regenerated figure is identical
(:mod:`study.report.figure_files`, which the validator-agreement figure uses too).

Conventions (the reasons are in the functions):

- every mean over seeds carries its 95 % Student-t interval where n >= 2 and says its n in the legend; a
  configuration with one seed is a plain marker and is called so;
- a line joins only configurations that share every other searched parameter (one series per value of the
  others); when the others vary from point to point (a TPE/random search) the means are drawn unjoined and the
  legend says why;
- learning curves run over the engine's SGD iterations (not Ray's ``training_iteration``), one per trial,
  labelled with the trial label (:func:`study.config.labels.trial_label`), replicates of one configuration as a mean
  with a band;
- mIoU in percent, as everywhere else.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from study.report.aggregate import MODEL_KEY, ConfigAggregate, is_seed
from study.report.collect import StudyData, TrialRecord, _number
from study.report.figure_files import save_figure
from study.config.pbt_settings import PBT_KINDS
from study.report.schedules import schedule_figure
from study.report.tables import param_label, per_class_rows

_STATUS_STYLE = {"completed": ("o", 1.0), "pruned": ("x", 0.8), "stopped": ("x", 0.8), "running": ("^", 0.6)}


def _log_scale(name: str, values: Sequence[Any], space: Mapping[str, Any]) -> bool:
    variants = space.get(name) or []
    if any(isinstance(v, Mapping) and v.get("log") for v in variants):
        return True
    numbers = [float(v) for v in values if _number(v) is not None]
    if not numbers or min(numbers) < 0:
        return False
    # zeros (a λ_adv = 0 control arm) are drawn as horizontal lines, the positive values on the log axis
    positive = [v for v in numbers if v > 0]
    if not positive or (min(numbers) == 0 and "lambda" not in name):
        return False
    return "lambda" in name or max(positive) / min(positive) >= 20


def _space_dimensions(study_dir: Path) -> Mapping[str, Any]:
    try:
        dims = json.loads((study_dir / "space.json").read_text()).get("dimensions", {})
        return dims if isinstance(dims, Mapping) else {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def _group_of(data: StudyData, trial: TrialRecord) -> str:
    """The colour group of a trial: its backbone (a searched ``model.name``, else the base config's)."""
    return str(trial.params.get(MODEL_KEY, data.model or "runs"))


def _log_ticks(ax, values: Sequence[float]) -> None:
    """A log x-axis whose labels never overlap and are never a lone label: the searched values themselves when
    there are few (rotated), 1-2-5 steps within a span of under three decades, else one label per decade."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter

    ax.set_xscale("log")
    distinct = sorted({v for v in values if v > 0})
    if 0 < len(distinct) <= 6:
        ax.xaxis.set_major_locator(FixedLocator(distinct))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.tick_params(axis="x", labelrotation=35, labelsize=8)
        low, high = distinct[0], distinct[-1]
        span = (high / low) ** 0.08 if high > low else 2.0
        ax.set_xlim(low / span, high * span)
    elif distinct and distinct[-1] / distinct[0] < 1e3:  # a decade or two: one labelled tick per decade is too few
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.tick_params(axis="x", labelrotation=35, labelsize=8)
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=8))
        ax.xaxis.set_major_formatter(LogFormatterSciNotation())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _interval_text(ns: Sequence[int]) -> str:
    """What the error bars of a series are, honestly: its replicate counts decide."""
    ns = sorted(set(ns))
    if not ns or ns[-1] < 2:
        return "one seed each, no interval"
    if len(ns) == 1:
        return f"mean ± 95 % t-interval, n = {ns[0]}"
    return f"mean ± 95 % t-interval where n ≥ 2 (n = {ns[0]}–{ns[-1]})"


def _values_text(params: Mapping[str, Any], names: Sequence[str]) -> str:
    from study.config.labels import format_value, symbol

    return " ".join(f"{symbol(n)}={format_value(params[n])}" if symbol(n) else format_value(params[n])
                    for n in names if n in params)


MAX_SERIES = 6  # more series than this in one panel: a legend nobody can read; the means are drawn unjoined


def _series(configs: Sequence[ConfigAggregate], name: str) -> dict[str, list[ConfigAggregate]]:
    """Configurations that differ only in ``name`` (and the seed): a line may join their means. Keyed by the
    values of the other searched parameters (the backbone left out: it is the colour)."""
    out: dict[str, list[ConfigAggregate]] = {}
    for c in configs:
        others = sorted(k for k in c.params if k not in (name, MODEL_KEY) and not is_seed(k))
        out.setdefault(_values_text(c.params, others), []).append(c)
    return out


def _sensitivity(path: Path, data: StudyData, searched: Sequence[str], space: Mapping[str, Any],
                 completed: Sequence[ConfigAggregate] = ()) -> Path | None:
    """One panel per searched parameter (the seed left out): every trial faded, and per configuration the mean
    over its seeds with its 95 % t-interval where n >= 2, one colour per backbone. Means are joined by a line
    only within a series of configurations that share every other searched parameter (a line across points
    whose learning rate also changes would show a trend that is not λ's). On the λ_adv axis the λ_adv = 0
    control (no point on a log axis) is a horizontal line per backbone."""
    import matplotlib.pyplot as plt

    axes_names = [n for n in searched if not is_seed(n)]
    if not axes_names or not data.scored():  # nothing scored: empty panels on degenerate axes say nothing
        return None
    cols = min(3, len(axes_names))
    rows = math.ceil(len(axes_names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.8 * cols, 7.0), 3.9 * rows), squeeze=False)
    plotted = data.scored()
    failed = [t for t in data.trials if t.status in ("failed", "diverged")]
    groups = sorted({_group_of(data, t) for t in plotted} | {_group_of(data, c.trials[0]) for c in completed})
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    colour = {g: palette[k % len(palette)] for k, g in enumerate(groups)}
    markers = ["s", "D", "^", "v", "P", "*"]
    many = len(groups) > 1
    for ax, name in zip(axes.flat, axes_names):
        values = [t.params.get(name) for t in plotted if name in t.params]
        numeric = bool(values) and all(_number(v) is not None for v in values)
        log = numeric and _log_scale(name, values, space)
        categories = sorted({str(v) for v in values})
        zero_on_log = log and any(_number(v) == 0 for v in values)

        def x_of(value: Any) -> float:
            return float(value) if numeric else float(categories.index(str(value)))

        def on_axis(value: Any) -> bool:
            return not (log and _number(value) is not None and float(value) <= 0)

        for g in groups:
            done = [t for t in plotted if t.status == "completed" and name in t.params and _group_of(data, t) == g
                    and on_axis(t.params[name])]
            if done:
                ax.scatter([x_of(t.params[name]) for t in done], [100 * t.metric for t in done], marker="o", s=18,
                           alpha=0.3, color=colour[g], linewidths=0,
                           label=f"{g}: each completed trial" if many else "each completed trial")
        for status, (marker, alpha) in _STATUS_STYLE.items():
            if status == "completed":
                continue
            group = [t for t in plotted if t.status == status and name in t.params and on_axis(t.params[name])]
            if group:
                ax.scatter([x_of(t.params[name]) for t in group], [100 * t.metric for t in group], marker=marker,
                           alpha=alpha, s=28, color="tab:gray", label=f"{status} (early score)")
        for g in groups:
            mine = [c for c in completed if name in c.params and _group_of(data, c.trials[0]) == g
                    and on_axis(c.params[name])]
            zero = ([c for c in completed if _number(c.params.get(name)) == 0 and _group_of(data, c.trials[0]) == g]
                    if zero_on_log else [])
            series = _series(mine, name)
            joined = len(series) <= MAX_SERIES and any(len({x_of(c.params[name]) for c in cs}) > 1
                                                      for cs in series.values())
            prefix = f"{g}: " if many else ""
            # one backbone: each series its own colour (a marker alone did not tell lr=0.005 from lr=0.02); several
            # backbones: the colour is the backbone, the marker the series
            keys = sorted(set(series) | set(_series(zero, name)))
            tone = ({k: palette[i % len(palette)] for i, k in enumerate(keys)} if not many and joined
                    else {k: colour[g] for k in keys})
            if joined:
                for k, (others, cs) in enumerate(sorted(series.items())):
                    cs = sorted(cs, key=lambda c: x_of(c.params[name]))
                    label = f"{prefix}{others + ': ' if others else ''}{_interval_text([c.score.n for c in cs])}"
                    _means(ax, [x_of(c.params[name]) for c in cs], cs, tone[others], markers[k % len(markers)],
                           line=len(cs) > 1, label=label)
            elif mine:
                # name only the parameters that do differ, and only where a line could have been drawn at all
                others = sorted(k for k in {k for c in mine for k in c.params}
                                if k not in (name, MODEL_KEY) and not is_seed(k)
                                and len({json.dumps(c.params.get(k), default=str) for c in mine}) > 1)
                spread = len({x_of(c.params[name]) for c in mine}) > 1
                note = (f" (not joined: {', '.join(param_label(k) for k in others)} "
                        f"{'differs' if len(others) == 1 else 'differ'})"
                        if others and spread else "")
                _means(ax, [x_of(c.params[name]) for c in mine], mine, colour[g], "s", line=False,
                       label=f"{prefix}{_interval_text([c.score.n for c in mine])}{note}")
            for others, cs in sorted(_series(zero, name).items()):  # each series' control in its colour
                for c in cs:
                    ax.axhline(100 * c.score.mean, color=tone[others], ls=":", lw=1.2,
                               label=f"{prefix}{others + ': ' if others else ''}λ = 0 control (n={c.score.n})")
        if data.baseline and data.metric in data.baseline and math.isfinite(data.baseline[data.metric]):
            ax.axhline(100 * data.baseline[data.metric], color="tab:red", ls="--", lw=1, label="source only")
        if log:
            _log_ticks(ax, [float(v) for v in values if _number(v) is not None])
        if not numeric:
            ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set_xlabel(param_label(name) + (" (log)" if log else ""))
        ax.set_ylabel(f"{data.metric} (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(axes_names):]:
        ax.axis("off")
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    ncol = min(2 if cols > 1 else 1, len(seen)) if seen else 1
    if seen:  # nothing to label when every trial failed
        fig.legend(list(seen.values()), list(seen), fontsize=8, loc="lower center", ncol=ncol, frameon=False)
    legend_rows = math.ceil(len(seen) / ncol) if seen else 0
    title = f"{data.name}: {data.metric} at each trial's last report"
    if failed:
        title += f" ({len(failed)} failed/diverged, not shown)"
    fig.suptitle(title, fontsize=10)
    # The legend gets its own strip below the panels (~0.2 inch per row) instead of squeezing them.
    strip = 0.3 + 0.2 * legend_rows
    fig.set_size_inches(fig.get_size_inches()[0], 3.9 * rows + strip)
    fig.tight_layout(rect=(0, strip / (3.9 * rows + strip), 1, 1))
    return save_figure(fig, path)


def _means(ax, xs: Sequence[float], configs: Sequence[ConfigAggregate], colour: str, marker: str, *,
           line: bool, label: str) -> None:
    """Configuration means with their 95 % t-intervals (none where n = 1), a marker large enough to see over
    the faded trials, joined by a line only when ``line``."""
    ys = [100 * c.score.mean for c in configs]
    errors = [100 * c.score.ci95 if c.score.n > 1 and math.isfinite(c.score.ci95) else 0.0 for c in configs]
    ax.errorbar(xs, ys, yerr=errors if any(errors) else None, fmt=marker + ("-" if line else ""), lw=1.2,
                color=colour, capsize=3, ms=6.5 if len(configs) <= 40 else 3.5, mec="black",
                mew=0.6 if len(configs) <= 40 else 0.25, zorder=3, label=label)  # hundreds: smaller, still edged


def _iterations_per_round(trial: TrialRecord) -> float | None:
    """SGD iterations per evaluation round of a trial: the engine evaluates every ``eval.interval`` iterations
    and reports each evaluation to Ray, so its last report's iteration over its round count is that interval."""
    if trial.iteration is None or not trial.rounds:
        return None
    return trial.iteration / trial.rounds


def _learning_curves(path: Path, data: StudyData, rungs: Sequence[int],
                     dimensions: Sequence[str] | None = None) -> Path | None:
    """The study metric against SGD iterations, one line per trial labelled with its trial label; configurations
    with several seeds also get their mean with a 95 % t-interval band over the iterations all their seeds
    reached. ASHA's rungs are vertical lines, labelled on a top axis."""
    import matplotlib.pyplot as plt

    from study.report.aggregate import config_key, stats

    curves = [t for t in data.trials if t.curve]
    if not curves:
        return None
    steps = {t.name: _iterations_per_round(t) for t in curves}
    in_iterations = all(v for v in steps.values())

    def xs_of(trial: TrialRecord) -> list[float]:
        scale = steps[trial.name] if in_iterations else 1.0
        return [x * scale for x, _ in trial.curve]

    def label_of(trial: TrialRecord) -> str:
        return data.label(trial, dimensions)

    fig, ax = plt.subplots(figsize=(8, 4.8))
    cmap = plt.get_cmap("tab20")
    if len(curves) <= 16:  # one labelled line per trial
        for index, trial in enumerate(curves):
            ys = [100 * y for _, y in trial.curve]
            dashed = trial.status != "completed"
            ax.plot(xs_of(trial), ys, ls="--" if dashed else "-", lw=1.0 if dashed else 1.6, color=cmap(index % 20),
                    marker="o", ms=3.5, label=f"{label_of(trial)} ({trial.status})")
    else:  # a big study: one collection per style (1,000 separate lines took 1.8 s of a 3.3 s report)
        from matplotlib.collections import LineCollection

        for dashed in (True, False):
            group = [(i, t) for i, t in enumerate(curves) if (t.status != "completed") == dashed]
            if group:
                ax.add_collection(LineCollection(
                    [list(zip(xs_of(t), [100 * y for _, y in t.curve])) for _, t in group],
                    colors=[cmap(i % 20) for i, _ in group], linestyles="--" if dashed else "-",
                    linewidths=0.6 if dashed else 1.2, alpha=0.6))
        ax.autoscale_view()
    replicated: dict[str, list[TrialRecord]] = {}
    for t in curves:
        if t.status == "completed":
            replicated.setdefault(config_key(t.params), []).append(t)
    for k, members in enumerate(m for m in replicated.values() if len(m) > 1):
        shared = sorted(set.intersection(*[set(xs_of(t)) for t in members]))
        if len(shared) < 2:
            continue
        by_x = [{x: y for x, (_, y) in zip(xs_of(t), t.curve)} for t in members]
        spread = [stats(m[x] for m in by_x) for x in shared]
        mean = [100 * s_.mean for s_ in spread]
        half = [100 * s_.ci95 for s_ in spread]
        colour = plt.get_cmap("Dark2")(k % 8)
        ax.fill_between(shared, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)],
                        color=colour, alpha=0.18, lw=0)
        others = sorted(n for n in members[0].params if not is_seed(n))
        ax.plot(shared, mean, color=colour, lw=2.4, marker="s", ms=4.5, mec="black", mew=0.5,
                label=f"{_values_text(members[0].params, others)}: mean ± 95 % t-interval (n = {len(members)})")
    ends = [(xs_of(t)[-1], 100 * t.curve[-1][1], t.status) for t in curves
            if t.status in ("pruned", "stopped", "failed", "diverged")]
    for failed in (False, True):
        points = [(x, y) for x, y, status in ends if (status == "failed") == failed]
        if points:
            ax.scatter([x for x, _ in points], [y for _, y in points], marker="x", s=36 if len(curves) <= 16 else 12,
                       color="tab:red" if failed else "black", linewidths=1, zorder=3)
    rung_scale = {steps[t.name] for t in curves} if in_iterations else {1.0}
    rung_xs = [r * next(iter(rung_scale)) for r in rungs] if len(rung_scale) == 1 else []
    for x in rung_xs:  # rungs are in rounds: in iterations only when every trial evaluates at the same interval
        ax.axvline(x, color="0.5", ls=":", lw=1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if rung_xs:
        # Rung labels as ticks of a top axis: tight_layout makes room for them (text annotated inside the axes
        # at its top edge was clipped).
        top = ax.secondary_xaxis("top")
        top.set_xticks(rung_xs, [f"rung {k}" for k in range(len(rung_xs))], fontsize=7, color="0.4")
    ax.set_xlabel("iteration (SGD steps)" if in_iterations else f"{data.time_attr} (evaluation rounds)")
    ax.set_ylabel(f"{data.metric} (%)")
    ax.set_title(f"{data.name}: learning curves (dashed = stopped early; x = last report)", fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) <= 16 or replicated:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, ncol=2 if len(handles) > 6 else 1, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def _per_class_figure(path: Path, data: StudyData, best: ConfigAggregate | TrialRecord | None) -> Path | None:
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
    # the best configuration's bars carry the 95 % t-interval over its seeds where it has two or more
    replicated = isinstance(best, ConfigAggregate) and len(best.trials) > 1
    for k, (name, values) in enumerate(bars):
        heights = [0.0 if not math.isfinite(v) else 100 * v for v in values]
        errors = None
        if replicated and k == len(bars) - 1:
            from study.report.aggregate import stats

            keys = [f"val/IoU/{h.rstrip('*')}" if not h.startswith("mIoU") else f"val/{h}" for h in header]
            spread = [stats(t.final.get(key, math.nan) for t in best.trials) for key in keys]
            errors = [100 * s_.ci95 if s_.n > 1 and math.isfinite(s_.ci95) else 0.0 for s_ in spread]
            name = f"{name}: ± 95 % t-interval"
        ax.bar(positions + (k - (len(bars) - 1) / 2) * width, heights, width, label=name, color=colors[k],
               yerr=errors, capsize=2 if errors else 0, error_kw={"lw": 0.8})
    ax.set_xticks(positions, header, rotation=45, ha="right")
    ax.set_ylabel("IoU on target val (%)")
    ax.set_title(f"{data.name}: per-class IoU (* = not in mIoU13)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _importance_figure(path: Path, data: StudyData, importances: Mapping[str, float]) -> Path | None:
    import matplotlib.pyplot as plt

    if not importances:
        return None
    ordered = sorted(importances.items(), key=lambda kv: (kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(ordered) + 1.6))
    ax.barh([k for k, _ in ordered], [v for _, v in ordered], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA over configuration means, seed left out)")
    ax.set_title(f"{data.name}: hyperparameter importance for {data.metric}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _draw_all(figure_dir: Path, data: StudyData, *, best: ConfigAggregate | TrialRecord | None,
              searched: Sequence[str], importances: Mapping[str, float], rungs: Sequence[int],
              completed: Sequence[ConfigAggregate] = (), space_dir: Path | None = None,
              workers: int = 1) -> dict[str, Path]:
    """Draw the report's figures into ``figure_dir``; ``workers`` > 1 draws them in forked processes at once
    (see :func:`_fork_safe`)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    space = _space_dimensions(space_dir if space_dir is not None else figure_dir.parent)
    jobs: list[tuple[str, Any]] = [  # in this order two workers share the work about evenly
        ("sensitivity", lambda p: _sensitivity(p, data, searched, space, completed)),
        ("learning_curves", lambda p: _learning_curves(p, data, rungs, list(space) or None)),
        ("importance", lambda p: _importance_figure(p, data, importances)),
        ("per_class_iou", lambda p: _per_class_figure(p, data, best)),
    ]
    if data.scheduler in PBT_KINDS:
        jobs.append(("pbt_schedules", lambda p: _schedules(p, data, space_dir or figure_dir.parent)))
    with plt.style.context("default"), matplotlib.rc_context({"svg.hashsalt": "dastudy", "path.simplify": True}):
        drawn = _run_jobs(jobs, figure_dir, workers=workers if _fork_safe() else 1)
    shown = ("pbt_schedules", "sensitivity", "learning_curves", "per_class_iou", "importance")  # the report's order
    return {key: figure_dir / f"{key}.png" for key in shown if drawn.get(key)}


def _schedules(path: Path, data: StudyData, study_dir: Path) -> Path | None:
    """PBT/PB2: the members' learned schedules (study/report/schedules.py)."""
    fig = schedule_figure(study_dir, data)
    return None if fig is None else save_figure(fig, path)


def _fork_safe() -> bool:
    """Forking is safe here only in a process with one Python thread and without Ray's (gRPC) threads, i.e. the
    ``dastudy study report`` command; anything else draws in its own process."""
    import sys
    import threading

    return threading.active_count() == 1 and not any(m in sys.modules for m in ("ray", "grpc", "torch"))


def _run_jobs(jobs: Sequence[tuple[str, Any]], figure_dir: Path, *, workers: int) -> dict[str, bool]:
    """Run ``draw(path)`` of each job; job *i* goes to worker *i* mod ``workers``, worker 0 being this process.
    A forked worker tells which of its figures it drew through a pipe; a figure it did not report (it crashed) is
    drawn here afterwards, so an error surfaces as it would without workers. Figures are identical either way:
    a worker is a fork of this process, with the same data and matplotlib settings."""
    import os
    import sys

    def draw(key: str, job: Any) -> bool:
        return job(figure_dir / f"{key}.png") is not None

    workers = max(1, min(int(workers), len(jobs)))
    children: list[tuple[int, int, list[tuple[str, Any]]]] = []
    if workers > 1:
        sys.stdout.flush()
        sys.stderr.flush()
    for w in range(1, workers):
        mine = [job for i, job in enumerate(jobs) if i % workers == w]
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # no process to spare (a ulimit): draw these here like the rest
            os.close(read_fd)
            os.close(write_fd)
            children.append((-1, -1, mine))
            continue
        if pid == 0:  # the worker: draw, report, leave without running the parent's exit handlers
            code = 0
            try:
                os.close(read_fd)
                lines = [f"{key}\t{int(draw(key, job))}\n" for key, job in mine]
                os.write(write_fd, "".join(lines).encode())
            except BaseException:  # noqa: BLE001 - anything: the parent draws it again and shows the error
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        children.append((pid, read_fd, mine))
    try:
        drawn = {key: draw(key, job) for i, (key, job) in enumerate(jobs) if i % workers == 0}
    except BaseException:
        for pid, read_fd, _ in children:  # reap the workers before the error goes up
            if pid > 0:
                os.close(read_fd)
                os.waitpid(pid, 0)
        raise
    for pid, read_fd, mine in children:
        told: dict[str, str] = {}
        if pid > 0:
            with os.fdopen(read_fd, "rb") as pipe:
                told = dict(line.split("\t") for line in pipe.read().decode().splitlines() if "\t" in line)
            os.waitpid(pid, 0)
        for key, job in mine:
            drawn[key] = told[key] == "1" if key in told else draw(key, job)
    return drawn
