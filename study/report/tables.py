"""Tables of the report (trials, per-class IoU) and the summary returned to the caller."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from study.report.collect import StudyData, TrialRecord

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



def _signed(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.{digits}f}"

