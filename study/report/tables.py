"""Tables of the report (trials, per-class IoU) and the summary returned to the caller."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from study.report.aggregate import ConfigAggregate, stats
from study.report.collect import StudyData, TrialRecord

def _pct(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.{digits}f}"


def param_label(name: str) -> str:
    """A parameter's display name, the same as in status, progress lines and TensorBoard (study.config.spaces)."""
    from study.config.spaces import param_label as label

    return label(name)


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def per_class_rows(data: StudyData, best: TrialRecord | ConfigAggregate | None
                   ) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """The seed's Table-2 layout: header (classes, mIoU16, mIoU13) and rows of fractions (NaN = missing).
    ``best``: a configuration (its row is the mean over its seeds) or a single trial."""
    from data.labels import CLASSES_13_IN_16, class_names

    names = list(class_names(16))
    header = [n + ("*" if i not in CLASSES_13_IN_16 else "") for i, n in enumerate(names)] + ["mIoU16", "mIoU13"]
    keys = [f"val/IoU/{n}" for n in names] + ["val/mIoU16", "val/mIoU13"]

    def row(metrics: Mapping[str, float]) -> list[float]:
        return [float(metrics.get(k, math.nan)) for k in keys]

    rows = []
    if data.baseline:
        rows.append(("source only (baseline)", row(data.baseline)))
    if isinstance(best, ConfigAggregate):
        per_seed = [row(t.final) for t in best.trials]
        mean = [stats(col).mean for col in zip(*per_seed)]
        rows.append((f"best configuration (mean of {len(per_seed)} seed{'s' if len(per_seed) > 1 else ''})", mean))
    elif best is not None:
        rows.append((f"best trial ({data.label(best)})", row(best.final)))
    if data.baseline and best is not None:
        rows.append(("difference", [b - a for a, b in zip(rows[0][1], rows[1][1])]))
    return header, rows


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _summary_header(data: StudyData, searched: Sequence[str]) -> list[str]:
    """``trial``: the trial's label (:meth:`StudyData.label`, as in TensorBoard, ``study status`` and the progress
    lines); ``dir``: its directory in the study (Ray's ``trial_<id>``), last."""
    final_keys = _final_keys(data)
    return (["rank", "trial", "status", *[param_label(n) for n in searched], "rounds", "iteration",
             f"{data.metric} (selection)",
             f"best report{' (oracle)' if data.selection == 'val' else ''}"]
            + [f"{k} (final)" for k in final_keys] + ["time s", "dir"])


def _final_keys(data: StudyData) -> list[str]:
    means = ["val/mIoU16", "val/mIoU13"] if data.num_classes == 16 else ["val/mIoU19", "val/mIoU16", "val/mIoU13"]
    return [k for k in means if k != data.metric]


def _summary_rows(data: StudyData, searched: Sequence[str]) -> list[list[str]]:
    """Per-trial rows in budget-fair groups: completed trials ranked 1, 2, ...; trials the scheduler stopped
    early ranked among themselves (s1, s2, ...: scored after fewer rounds); failed/diverged/running unranked."""
    scored = data.scored()
    completed = [t for t in scored if t.status == "completed"]
    stopped = [t for t in scored if t.status in ("pruned", "stopped")]
    ranked_ids = {id(t) for t in (*completed, *stopped)}  # by identity: comparing records field by field was O(n²)
    unranked = sorted((t for t in data.trials if id(t) not in ranked_ids), key=lambda t: t.name)
    ranked = ([(str(k), t) for k, t in enumerate(completed, start=1)]
              + [(f"s{k}", t) for k, t in enumerate(stopped, start=1)] + [("-", t) for t in unranked])
    rows = []
    for rank, trial in ranked:
        rows.append([rank, data.label(trial), trial.status,
                     *[_param_text(trial.params.get(n, "")) for n in searched], str(trial.rounds),
                     str(trial.iteration) if trial.iteration is not None else "n/a", _pct(trial.metric),
                     _pct(trial.best_report(data.mode)),
                     *[_pct(trial.final.get(k)) for k in _final_keys(data)],
                     f"{trial.time_s:.0f}" if trial.time_s is not None else "n/a", trial.name])
    return rows


def config_rows(data: StudyData, configs: Sequence[ConfigAggregate], *, names: Sequence[str],
                finals: bool = True, rank_prefix: str = "") -> tuple[list[str], list[list[str]]]:
    """A seed-aggregated table: one row per configuration, mean ± sd (n) and the 95 % t-interval."""
    from study.report.paper import fmt_ci, fmt_stats

    header = ["rank", *[param_label(n) for n in names], "seeds", f"{data.metric} mean ± sd (n)", "95 % CI"]
    keys = _final_keys(data) if finals else []
    header += [f"{k} mean ± sd (n)" for k in keys]
    survivors = any(c.stopped for c in configs)
    if survivors:
        header.append("replicates stopped early")
    body = []
    rank = 0
    for c in configs:  # ranked ones first (aggregate.rank_configs): one replicate gets no rank
        rank += c.ranked
        body.append([f"{rank_prefix}{rank}" if c.ranked else "–", *[_param_text(c.params.get(n, "")) for n in names],
                     ", ".join("-" if s is None else str(s) for s in c.seeds), fmt_stats(c.score), fmt_ci(c.score),
                     *[fmt_stats(c.final(key)) for key in keys], *([str(c.stopped)] if survivors else [])])
    return header, body


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
    # the best configuration (seeds aggregated): best_trial is its median replicate, best_params its parameters
    best_seeds: tuple[Any, ...] = ()
    best_score: Any = None  # aggregate.Stats of the study metric over best_seeds
    tables: tuple[Path, ...] = ()
    importance_configurations: int = 0
    best_note: str | None = None  # why there is no best configuration (or the budget it was ranked at)
    best_label: str | None = None  # best_trial's label (as in the trials table, TensorBoard and `study status`)

    def to_json(self) -> dict[str, Any]:
        """The summary as plain JSON types (``dastudy study report --json``); fractions, not percent."""
        def num(v: Any) -> Any:
            return v if isinstance(v, (int, float)) and math.isfinite(v) else None

        score = self.best_score
        return {
            "study": self.study, "metric": self.metric, "mode": self.mode, "selection": self.selection,
            "counts": dict(self.counts),
            "best": None if self.best_trial is None else {
                "params": dict(self.best_params), "seeds": list(self.best_seeds), "trial": self.best_trial,
                "label": self.best_label,
                "mean": num(score.mean) if score else num(self.best_metric), "sd": num(score.sd) if score else None,
                "n": score.n if score else 1, "ci95": num(score.ci95) if score else None,
                "final": {k: num(v) for k, v in self.best_final.items()}},
            "importances": dict(self.importances), "importance_configurations": self.importance_configurations,
            "report": str(self.report), "figures": [str(p) for p in self.figures],
            "tables": [str(p) for p in self.tables],
            "best_config": str(self.best_config) if self.best_config else None,
            "notes": list(self.notes),
        }

    def table(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(self.header, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in self.rows]
        return "\n".join(lines)

    def _best_name(self) -> str:
        """The best trial's label, then its directory: ``#6 λ=0.0291 lr=0.0429 seed=1 (trial_ab12)``."""
        if self.best_label and self.best_label != self.best_trial:
            return f"{self.best_label} ({self.best_trial})"
        return str(self.best_trial)

    def __str__(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        head = f"study {self.study}: {counts}; metric {self.metric} ({self.mode}, selection split: {self.selection})"
        if self.best_trial and self.best_score is not None:
            from study.report.paper import fmt_stats

            params = ", ".join(f"{param_label(k)}={_param_text(v)}" for k, v in sorted(self.best_params.items()))
            from study.report.aggregate import seeds_text

            best = (f"best configuration: {params or '(no searched parameter)'}: {self.metric} = "
                    f"{fmt_stats(self.best_score)} over {seeds_text(self.best_seeds)} "
                    f"(median replicate {self._best_name()})")
        elif self.best_trial:
            best = f"best: {self._best_name()} {self.metric} = {_pct(self.best_metric)}"
        else:
            best = "best: none" + (f" ({self.best_note})" if self.best_note else "")
        return "\n".join([head, self.table(), best, f"report: {self.report}"])



def _signed(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.{digits}f}"

