"""The schedules a population-based-training study learned (``scheduler.kind = "pbt" | "pb2"``), for the report.

PBT (Jaderberg et al. 2017, https://arxiv.org/abs/1711.09846) gives each member a *schedule*: the values it trained
with, segment by segment, including the segments of the donors whose state it cloned. Each member writes that
history to ``<trial>/run/lineage.jsonl`` (:mod:`trainables.lineage`); :func:`member_schedules` reads it back as one
trajectory per final member, and :func:`schedule_figure` draws one panel per mutated hyperparameter: a step line per
member over the engine's SGD iterations, coloured by the member's final score, clones marked where they happened.
:func:`schedule_rows` gives the same data as a table (``tables/pbt_schedules.csv``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from study.config.pbt_settings import PBT_KINDS
from study.report.collect import StudyData
from trainables.lineage import member_history, read_lineage, schedule_segments

__all__ = ["MemberSchedule", "member_schedules", "schedule_figure", "schedule_rows"]

_LOG_KEYS = ("lambda", "lr")  # λ_adv and learning rates are searched log-uniform: drawn on a log axis


@dataclass(frozen=True)
class MemberSchedule:
    name: str
    score: float | None  # the member's study metric at its last evaluation
    segments: tuple[tuple[int, dict[str, Any]], ...]  # (from SGD iteration, values), as trainables.lineage gives them
    end: int  # the last evaluated iteration
    clones: tuple[tuple[int, str], ...]  # (iteration, donor) of each clone of this member itself


def member_schedules(study_dir: str | Path, data: StudyData) -> list[MemberSchedule]:
    """One :class:`MemberSchedule` per trial with a lineage, best final score first (members without a score
    last, by name)."""
    study_dir = Path(study_dir)
    run_dirs = {t.name: study_dir / t.run_dir for t in data.trials if t.run_dir}
    scores = {t.name: t.metric for t in data.trials}

    def run_dir_of(name: str) -> Path:
        return run_dirs.get(name, study_dir / name / "run")

    out = []
    for name in sorted(run_dirs):
        history = member_history(name, run_dir_of)
        if not history:
            continue
        clones = tuple((int(r.get("iteration", 0)), str(r.get("donor"))) for r in read_lineage(run_dirs[name])
                       if r.get("event") == "clone")
        out.append(MemberSchedule(name=name, score=scores.get(name), segments=tuple(schedule_segments(history)),
                                  end=int(history[-1]["iteration"]), clones=clones))
    sign = -1.0 if data.mode == "max" else 1.0
    return sorted(out, key=lambda m: (m.score is None or not math.isfinite(m.score),
                                      sign * m.score if m.score is not None and math.isfinite(m.score) else 0.0,
                                      m.name))


def schedule_rows(members: Sequence[MemberSchedule]) -> tuple[list[str], list[list[Any]]]:
    """``member, score, from_iteration, to_iteration, <key>...``: one row per segment."""
    keys = sorted({k for m in members for _, values in m.segments for k in values})
    rows = []
    for m in members:
        bounds = [start for start, _ in m.segments[1:]] + [m.end]
        for (start, values), stop in zip(m.segments, bounds):
            rows.append([m.name, m.score, start, stop, *[values.get(k) for k in keys]])
    return ["member", "score", "from_iteration", "to_iteration", *keys], rows


def schedule_figure(study_dir: str | Path, data: StudyData):
    """One panel per mutated hyperparameter: each member's values against SGD iterations (a step line, the donors'
    segments included), coloured by its final score; a clone of the member itself is a dot where it happened.
    Returns the matplotlib figure (study/report/figures.py saves it), or None when the study is not PBT/PB2 or
    no member wrote a lineage."""
    if data.scheduler not in PBT_KINDS:
        return None
    members = member_schedules(study_dir, data)
    if not members:
        return None
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    from study.report.tables import param_label

    keys = sorted({k for m in members for _, values in m.segments for k in values})
    scale = 100.0 if "mIoU" in data.metric or "acc" in data.metric else 1.0  # mIoU in percent, validators as they are
    finite = [scale * m.score for m in members if m.score is not None and math.isfinite(m.score)]
    norm = colors.Normalize(vmin=min(finite, default=0.0), vmax=max(finite, default=1.0))
    cmap = plt.get_cmap("viridis" if data.mode == "max" else "viridis_r")
    fig, axes = plt.subplots(len(keys), 1, figsize=(6.4, 1.2 + 2.2 * len(keys)), sharex=True, squeeze=False,
                             layout="constrained")
    for ax, key in zip(axes[:, 0], keys):
        for m in reversed(members):  # the best drawn last, on top
            xs, ys = [], []
            for (start, values), stop in zip(m.segments, [s for s, _ in m.segments[1:]] + [m.end]):
                if key in values:
                    xs += [start, stop]
                    ys += [float(values[key])] * 2
            if not xs:
                continue
            colour = cmap(norm(scale * m.score)) if m.score is not None and math.isfinite(m.score) else "0.6"
            ax.plot(xs, ys, color=colour, linewidth=1.6 if m is members[0] else 1.0)
            for iteration, _ in m.clones:
                y = next((float(v[key]) for s, v in reversed(m.segments) if s <= iteration and key in v), None)
                if y is not None:
                    ax.plot([iteration], [y], "o", color=colour, markersize=3)
        if any(part in key for part in _LOG_KEYS):
            ax.set_yscale("log")
        ax.set_ylabel(param_label(key))
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("SGD iteration")
    axes[0, 0].set_title(f"{data.scheduler.upper()} schedules of {len(members)} members (dots: clones)")
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[:, 0].tolist(), fraction=0.05)
    bar.set_label(f"final {data.metric}" + (" (%)" if scale == 100.0 else ""))
    return fig
