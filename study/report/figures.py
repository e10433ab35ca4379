"""Figures of the report (matplotlib, Agg; PNG metadata without the version stamp so that a regenerated figure is
identical)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from study.report.collect import StudyData, TrialRecord, _number
from study.report.tables import per_class_rows

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


