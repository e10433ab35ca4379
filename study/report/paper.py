"""The seed's Table 3 as an output: λ_adv × backbone, mean ± sd (n) over seeds, with deltas.

Rows are (backbone, λ_adv) over the *completed* trials (full budget); the columns are the final target-val means
(mIoU16 and mIoU13, plus mIoU19 in a 19-class study) as mean ± sd (n), the per-seed paired difference against
the λ_adv = 0 control of the same backbone where the study has one, and the difference against the source-only
baseline (one run; only for the backbone it was trained with). Per-class deltas against the baseline follow in a
second table, like the difference row of the seed's Table 2.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from study.report.aggregate import LAMBDA_KEY, MODEL_KEY, Stats, seed_of, stats
from study.report.collect import StudyData, TrialRecord

__all__ = ["PaperRow", "paper_rows", "paper_markdown", "paper_csv", "per_class_delta_rows", "mean_keys"]


def mean_keys(data: StudyData) -> list[str]:
    keys = ["val/mIoU16", "val/mIoU13"]
    return (["val/mIoU19"] + keys) if data.num_classes == 19 else keys


@dataclass(frozen=True)
class PaperRow:
    backbone: str
    lam: float | None
    trials: tuple[TrialRecord, ...]
    means: Mapping[str, Stats]  # val/mIoU16 → Stats over the replicates
    vs_control: Mapping[str, Stats]  # paired per-seed difference against λ_adv = 0 (same backbone)
    vs_baseline: Mapping[str, float]  # mean minus the baseline's value (NaN when the baseline is another model)
    per_class_vs_baseline: Mapping[str, float]
    oracle: Stats | None = None  # best evaluation of the study metric (val/ only: chosen on the scored images)

    @property
    def seeds(self) -> tuple[Any, ...]:
        return tuple(seed_of(t) for t in self.trials)


def _backbone(data: StudyData, trial: TrialRecord) -> str:
    return str(trial.params.get(MODEL_KEY, data.model or "?"))


def _lambda(data: StudyData, trial: TrialRecord) -> float | None:
    value = trial.params.get(LAMBDA_KEY, data.base_lambda)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def paper_rows(data: StudyData) -> list[PaperRow]:
    """One row per (backbone, λ_adv) among completed trials; other searched parameters are pooled, so the table
    is only exact for a study that searches λ_adv, backbone and seeds (the writer says so otherwise)."""
    from data.labels import class_names

    completed = [t for t in data.trials if t.status == "completed" and t.metric is not None]
    groups: dict[tuple[str, float | None], list[TrialRecord]] = {}
    for t in completed:
        groups.setdefault((_backbone(data, t), _lambda(data, t)), []).append(t)
    keys = mean_keys(data)
    classes = [f"val/IoU/{n}" for n in class_names(16 if data.num_classes != 19 else 19)]
    rows = []
    for (backbone, lam), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        members.sort(key=lambda t: (str(seed_of(t)), t.name))
        control = groups.get((backbone, 0.0))
        vs_control: dict[str, Stats] = {}
        if control is not None and lam:
            for key in keys:
                pairs = _paired(members, control, key)
                vs_control[key] = stats(pairs)
        means = {k: stats(t.final.get(k, math.nan) for t in members) for k in keys}
        same_model = data.baseline is not None and (data.baseline_model is None or data.baseline_model == backbone)
        vs_baseline = {k: (means[k].mean - data.baseline.get(k, math.nan)) if same_model else math.nan for k in keys}
        per_class = {k: (stats(t.final.get(k, math.nan) for t in members).mean - data.baseline.get(k, math.nan))
                     if same_model else math.nan for k in classes}
        oracle = (stats(t.best_report(data.mode) for t in members) if data.metric.startswith("val/") else None)
        rows.append(PaperRow(backbone=backbone, lam=lam, trials=tuple(members), means=means, vs_control=vs_control,
                             vs_baseline=vs_baseline, per_class_vs_baseline=per_class, oracle=oracle))
    return rows


def _paired(members: Sequence[TrialRecord], control: Sequence[TrialRecord], key: str) -> list[float]:
    theirs = {seed_of(t): t.final.get(key) for t in control}
    out = []
    for t in members:
        mine, other = t.final.get(key), theirs.get(seed_of(t))
        if mine is not None and other is not None and math.isfinite(mine) and math.isfinite(other):
            out.append(mine - other)
    return out


def fmt_stats(s: Stats, *, signed: bool = False) -> str:
    """``38.30 ± 0.41 (3)`` in percent; a single run shows ``(1)`` without an sd."""
    if s.n == 0 or not math.isfinite(s.mean):
        return "n/a"
    mean = f"{100 * s.mean:+.2f}" if signed else f"{100 * s.mean:.2f}"
    if s.n == 1 or not math.isfinite(s.sd):
        return f"{mean} (1)"
    return f"{mean} ± {100 * s.sd:.2f} ({s.n})"


def fmt_ci(s: Stats) -> str:
    if s.n < 2 or not math.isfinite(s.ci95):
        return "n/a"
    return f"[{100 * s.low:.2f}, {100 * s.high:.2f}]"


def _lam_text(lam: float | None) -> str:
    return "n/a" if lam is None else f"{lam:g}"


def paper_markdown(data: StudyData, rows: Sequence[PaperRow]) -> tuple[list[str], list[list[str]]]:
    keys = mean_keys(data)
    short = [k.split("/", 1)[1] for k in keys]
    header = ["backbone", "λ_adv", "seeds", *[f"{s} mean ± sd (n)" for s in short]]
    has_control = any(r.vs_control for r in rows)
    if has_control:
        header += [f"Δ{s} vs λ=0, paired (95 % CI)" for s in short]
    if data.baseline:
        header += [f"Δ{s} vs source only" for s in short]
    oracle = any(r.oracle is not None for r in rows)
    if oracle:
        header.append(f"oracle best-on-val {data.metric.split('/', 1)[1]} (n)")
    body = []
    for r in rows:
        line = [r.backbone, _lam_text(r.lam), ", ".join(str(s) for s in r.seeds),
                *[fmt_stats(r.means[k]) for k in keys]]
        if has_control:
            line += [f"{fmt_stats(r.vs_control[k], signed=True)} {fmt_ci(r.vs_control[k])}" if k in r.vs_control
                     else ("control" if r.lam == 0 else "n/a") for k in keys]
        if data.baseline:
            line += [_signed_pct(r.vs_baseline[k]) for k in keys]
        if oracle:
            line.append(fmt_stats(r.oracle) if r.oracle is not None else "n/a")
        body.append(line)
    return header, body


def per_class_delta_rows(data: StudyData, rows: Sequence[PaperRow]) -> tuple[list[str], list[list[str]]]:
    """Per-class IoU difference (mean over seeds − source only), percentage points; ``*`` = not in mIoU13."""
    from data.labels import CLASSES_13_IN_16, class_names

    names = list(class_names(16 if data.num_classes != 19 else 19))
    marks = [n + ("*" if data.num_classes != 19 and i not in CLASSES_13_IN_16 else "") for i, n in enumerate(names)]
    header = ["backbone", "λ_adv", "n", *marks]
    body = [[r.backbone, _lam_text(r.lam), str(len(r.trials)),
             *[_signed_pct(r.per_class_vs_baseline.get(f"val/IoU/{n}", math.nan)) for n in names]] for r in rows]
    return header, body


def paper_csv(data: StudyData, rows: Sequence[PaperRow]) -> str:
    """``tables/lambda_backbone.csv``: one row per (backbone, λ_adv), values in percent (4 decimals)."""
    from data.labels import class_names

    keys = mean_keys(data)
    short = [k.split("/", 1)[1] for k in keys]
    names = list(class_names(16 if data.num_classes != 19 else 19))
    header = ["backbone", "lambda_adv", "n", "seeds"]
    for s in short:
        header += [f"{s}_mean", f"{s}_sd", f"{s}_ci95_low", f"{s}_ci95_high"]
    for s in short:
        header += [f"d_{s}_vs_lambda0_mean", f"d_{s}_vs_lambda0_sd", f"d_{s}_vs_lambda0_n"]
    header += [f"d_{s}_vs_source_only" for s in short] + [f"d_IoU_{n}_vs_source_only" for n in names]
    metric = data.metric.split("/", 1)[1]
    header += [f"oracle_best_on_val_{metric}_mean", f"oracle_best_on_val_{metric}_sd"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line: list[Any] = [r.backbone, "" if r.lam is None else f"{r.lam:g}", len(r.trials),
                           " ".join(str(s) for s in r.seeds)]
        for k in keys:
            s = r.means[k]
            line += [_num(s.mean), _num(s.sd), _num(s.low), _num(s.high)]
        for k in keys:
            d = r.vs_control.get(k)
            line += [_num(d.mean), _num(d.sd), d.n] if d is not None else ["", "", ""]
        line += [_num(r.vs_baseline[k]) for k in keys]
        line += [_num(r.per_class_vs_baseline.get(f"val/IoU/{n}", math.nan)) for n in names]
        line += [_num(r.oracle.mean), _num(r.oracle.sd)] if r.oracle is not None else ["", ""]
        writer.writerow(line)
    return out.getvalue()


def _num(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{100 * value:.4f}"


def _signed_pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.2f}"


def pooled_parameters(data: StudyData) -> list[str]:
    """Searched parameters other than backbone, λ_adv and the seed: the table pools over them."""
    from study.report.aggregate import is_seed

    names = sorted({n for t in data.trials for n in t.params})
    varied = [n for n in names if len({repr(t.params.get(n)) for t in data.trials}) > 1]
    return [n for n in varied if n not in (LAMBDA_KEY, MODEL_KEY) and not is_seed(n)]
