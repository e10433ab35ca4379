"""The seed's Table 3 as an output: λ_adv × backbone, mean ± sd (n) over seeds, with deltas.

One row per *configuration* among the *completed* trials (full budget): backbone, λ_adv and every other searched
parameter that varies in the study as its own column, so nothing is pooled. The columns are the final target-val
means (mIoU16 and mIoU13, plus mIoU19 in a 19-class study) as mean ± sd (n), the difference against the λ_adv = 0
control that matches the row on *every* other searched parameter, paired seed by seed (n = seeds both have), with
its 95 % t-interval, the paired t-test's p-value and Holm's adjustment over the arms of the table (per metric),
and the difference against the source-only baseline (the checkpoint the trials start from; only for the backbone
it was trained with). Per-class deltas against the baseline follow in a second table, like the difference row of
the seed's Table 2.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from study.report.aggregate import LAMBDA_KEY, MODEL_KEY, Stats, holm, is_seed, paired_test, seed_of, stats
from study.report.collect import StudyData, TrialRecord

__all__ = ["PaperRow", "paper_rows", "paper_markdown", "paper_csv", "per_class_delta_rows", "mean_keys",
           "holm_family"]


def mean_keys(data: StudyData) -> list[str]:
    keys = ["val/mIoU16", "val/mIoU13"]
    return (["val/mIoU19"] + keys) if data.num_classes == 19 else keys


@dataclass(frozen=True)
class PaperRow:
    backbone: str
    lam: float | None
    trials: tuple[TrialRecord, ...]
    means: Mapping[str, Stats]  # val/mIoU16 → Stats over the replicates
    vs_control: Mapping[str, Stats]  # paired per-seed difference against λ_adv = 0 (same other parameters)
    vs_baseline: Mapping[str, float]  # mean minus the baseline's value (NaN when the baseline is another model)
    per_class_vs_baseline: Mapping[str, float]
    oracle: Stats | None = None  # best evaluation of the study metric (val/ only: chosen on the scored images)
    others: Mapping[str, Any] = field(default_factory=dict)  # the other searched parameters of this configuration
    p_value: Mapping[str, float] = field(default_factory=dict)  # paired t-test against the control, per metric
    p_holm: Mapping[str, float] = field(default_factory=dict)  # Holm-adjusted over the table's arms, per metric

    @property
    def seeds(self) -> tuple[Any, ...]:
        return tuple(seed_of(t) for t in self.trials)


def _backbone(data: StudyData, trial: TrialRecord) -> str:
    return str(trial.params.get(MODEL_KEY, data.model or "?"))


def _lambda(data: StudyData, trial: TrialRecord) -> float | None:
    value = trial.params.get(LAMBDA_KEY, data.base_lambda)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _sort_value(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, json.dumps(value, sort_keys=True, default=str))


def paper_rows(data: StudyData) -> list[PaperRow]:
    """One row per completed configuration (backbone, λ_adv, the other searched parameters: never pooled)."""
    from data.labels import class_names

    others = pooled_parameters(data)
    completed = [t for t in data.trials if t.status == "completed" and t.metric is not None]
    groups: dict[tuple[str, float | None, str], list[TrialRecord]] = {}
    for t in completed:
        rest = json.dumps({n: t.params.get(n) for n in others}, sort_keys=True, default=str)
        groups.setdefault((_backbone(data, t), _lambda(data, t), rest), []).append(t)
    keys = mean_keys(data)
    classes = [f"val/IoU/{n}" for n in class_names(16 if data.num_classes != 19 else 19)]
    order = sorted(groups, key=lambda k: (k[0], [_sort_value(groups[k][0].params.get(n)) for n in others],
                                          k[1] if k[1] is not None else 0.0))
    rows = []
    tests: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    for backbone, lam, rest in order:
        members = sorted(groups[(backbone, lam, rest)], key=lambda t: (str(seed_of(t)), t.name))
        control = groups.get((backbone, 0.0, rest))
        vs_control: dict[str, Stats] = {}
        p_values: dict[str, float] = {}
        if control is not None and lam:
            for key in keys:
                mine, theirs = _paired(members, control, key)
                vs_control[key], p_values[key] = paired_test(mine, theirs)
                tests[key].append((len(rows), p_values[key]))
        means = {k: stats(t.final.get(k, math.nan) for t in members) for k in keys}
        same_model = data.baseline is not None and (data.baseline_model is None or data.baseline_model == backbone)
        vs_baseline = {k: (means[k].mean - data.baseline.get(k, math.nan)) if same_model else math.nan for k in keys}
        per_class = {k: (stats(t.final.get(k, math.nan) for t in members).mean - data.baseline.get(k, math.nan))
                     if same_model else math.nan for k in classes}
        oracle = (stats(t.best_report(data.mode) for t in members) if data.metric.startswith("val/") else None)
        rows.append(PaperRow(backbone=backbone, lam=lam, trials=tuple(members), means=means, vs_control=vs_control,
                             vs_baseline=vs_baseline, per_class_vs_baseline=per_class, oracle=oracle,
                             others={n: members[0].params.get(n) for n in others}, p_value=p_values))
    adjusted: dict[int, dict[str, float]] = {}
    for key, family in tests.items():
        for (index, _), p_adj in zip(family, holm([p for _, p in family])):
            adjusted.setdefault(index, {})[key] = p_adj
    return [replace(r, p_holm=adjusted.get(i, {})) for i, r in enumerate(rows)]


def _paired(members: Sequence[TrialRecord], control: Sequence[TrialRecord], key: str
            ) -> tuple[list[float], list[float]]:
    """The two arms' values on the seeds both have, seed by seed (never by position)."""
    def finite(v: Any) -> bool:
        return v is not None and math.isfinite(v)

    theirs = {seed_of(t): t.final.get(key) for t in control if seed_of(t) is not None}
    mine_out, theirs_out = [], []
    for t in members:
        mine, other = t.final.get(key), theirs.get(seed_of(t))
        if seed_of(t) is not None and finite(mine) and finite(other):
            mine_out.append(mine)
            theirs_out.append(other)
    return mine_out, theirs_out


SINGLE = "†"  # marks a mean over one run: no sd, no interval, never ranked best
SINGLE_NOTE = f"{SINGLE} one replicate: no sd and no interval, never ranked as the best configuration"


def fmt_stats(s: Stats, *, signed: bool = False) -> str:
    """``38.30 ± 0.41 (3)`` in percent; a single run shows ``(1)†`` without an sd."""
    if s.n == 0 or not math.isfinite(s.mean):
        return "n/a"
    mean = f"{100 * s.mean:+.2f}" if signed else f"{100 * s.mean:.2f}"
    if s.n == 1 or not math.isfinite(s.sd):
        return f"{mean} ({s.n}){SINGLE}"
    return f"{mean} ± {100 * s.sd:.2f} ({s.n})"


def fmt_ci(s: Stats) -> str:
    if s.n < 2 or not math.isfinite(s.ci95):
        return "n/a"
    return f"[{100 * s.low:.2f}, {100 * s.high:.2f}]"


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _lam_text(lam: float | None) -> str:
    return "n/a" if lam is None else f"{lam:g}"


def _other_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def paper_markdown(data: StudyData, rows: Sequence[PaperRow]) -> tuple[list[str], list[list[str]]]:
    from study.config.spaces import param_label

    keys = mean_keys(data)
    short = [k.split("/", 1)[1] for k in keys]
    others = list(rows[0].others) if rows else []
    header = ["backbone", "λ_adv", *[param_label(n) for n in others], "seeds",
              *[f"{s} mean ± sd (n)" for s in short]]
    has_control = any(r.vs_control for r in rows)
    if has_control:
        header += [f"Δ{s} vs λ=0, paired (95 % CI)" for s in short]
        header += [f"p {s} (Holm)" for s in short]
    if data.baseline:
        header += [f"Δ{s} vs source only" for s in short]
    oracle = any(r.oracle is not None for r in rows)
    if oracle:
        header.append(f"oracle best-on-val {data.metric.split('/', 1)[1]} (n)")
    body = []
    for r in rows:
        line = [r.backbone, _lam_text(r.lam), *[_other_text(r.others.get(n)) for n in others],
                ", ".join(str(s) for s in r.seeds), *[fmt_stats(r.means[k]) for k in keys]]
        if has_control:
            line += [f"{fmt_stats(r.vs_control[k], signed=True)} {fmt_ci(r.vs_control[k])}" if k in r.vs_control
                     else ("control" if r.lam == 0 else "no control") for k in keys]
            line += [f"{fmt_p(r.p_value[k])} ({fmt_p(r.p_holm.get(k, math.nan))})" if k in r.p_value else "" for k in keys]
        if data.baseline:
            line += [_signed_pct(r.vs_baseline[k]) for k in keys]
        if oracle:
            line.append(fmt_stats(r.oracle) if r.oracle is not None else "n/a")
        body.append(line)
    return header, body


def holm_family(tested: Mapping[str, int]) -> str:
    """Holm's m as a note under a table says it: per metric, the arms that have a test (an arm of one paired seed has
    a difference but no p-value, and is not one of the m tests)."""
    counts = set(tested.values())
    if not any(counts):
        return "no arm of this table (none has 2 paired seeds)"
    if len(counts) == 1:
        return f"the {counts.pop()} arm(s) of this table with a test" + (" (per metric)" if len(tested) > 1 else "")
    return "the arms of this table with a test, per metric (" + ", ".join(f"{k}: {n}" for k, n in tested.items()) + ")"


def control_note(rows: Sequence[PaperRow]) -> str:
    """What the Δ-vs-control and p columns are, under the table."""
    tested = {key.split("/", 1)[1]: sum(math.isfinite(r.p_value.get(key, math.nan)) for r in rows)
              for key in dict.fromkeys(k for r in rows for k in r.p_value)}
    return (f"Δ vs λ=0: each row minus the λ_adv = 0 configuration with the same backbone and the same other searched "
            f"parameters, seed by seed (n = seeds both have), mean ± sd (n) and 95 % t-interval. p: two-sided paired "
            f"t-test (`scipy.stats.ttest_rel`), raw, and in brackets Holm-adjusted over {holm_family(tested)}; n/a = "
            f"fewer than 2 pairs, no test. {SINGLE_NOTE}.")


def per_class_delta_rows(data: StudyData, rows: Sequence[PaperRow]) -> tuple[list[str], list[list[str]]]:
    """Per-class IoU difference (mean over seeds − source only), percentage points; ``*`` = not in mIoU13."""
    from data.labels import CLASSES_13_IN_16, class_names

    names = list(class_names(16 if data.num_classes != 19 else 19))
    marks = [n + ("*" if data.num_classes != 19 and i not in CLASSES_13_IN_16 else "") for i, n in enumerate(names)]
    from study.config.spaces import param_label

    others = list(rows[0].others) if rows else []
    header = ["backbone", "λ_adv", *[param_label(n) for n in others], "n", *marks]
    body = [[r.backbone, _lam_text(r.lam), *[_other_text(r.others.get(n)) for n in others], str(len(r.trials)),
             *[_signed_pct(r.per_class_vs_baseline.get(f"val/IoU/{n}", math.nan)) for n in names]] for r in rows]
    return header, body


def paper_csv(data: StudyData, rows: Sequence[PaperRow]) -> str:
    """``tables/lambda_backbone.csv``: one row per configuration (backbone, λ_adv, the other searched parameters),
    values in percent (4 decimals), p-values as they are."""
    from data.labels import class_names

    keys = mean_keys(data)
    short = [k.split("/", 1)[1] for k in keys]
    names = list(class_names(16 if data.num_classes != 19 else 19))
    others = list(rows[0].others) if rows else []
    header = ["backbone", "lambda_adv", *others, "n", "seeds"]
    for s in short:
        header += [f"{s}_mean", f"{s}_sd", f"{s}_ci95_low", f"{s}_ci95_high"]
    for s in short:
        header += [f"d_{s}_vs_lambda0_mean", f"d_{s}_vs_lambda0_sd", f"d_{s}_vs_lambda0_n",
                   f"d_{s}_vs_lambda0_ci95_low", f"d_{s}_vs_lambda0_ci95_high", f"d_{s}_vs_lambda0_p",
                   f"d_{s}_vs_lambda0_p_holm"]
    header += [f"d_{s}_vs_source_only" for s in short] + [f"d_IoU_{n}_vs_source_only" for n in names]
    metric = data.metric.split("/", 1)[1]
    header += [f"oracle_best_on_val_{metric}_mean", f"oracle_best_on_val_{metric}_sd"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line: list[Any] = [r.backbone, "" if r.lam is None else f"{r.lam:g}",
                           *["" if r.others.get(n) is None else r.others.get(n) for n in others], len(r.trials),
                           " ".join(str(s) for s in r.seeds)]
        for k in keys:
            s = r.means[k]
            line += [_num(s.mean), _num(s.sd), _num(s.low), _num(s.high)]
        for k in keys:
            d = r.vs_control.get(k)
            line += ([_num(d.mean), _num(d.sd), d.n, _num(d.low), _num(d.high), _p(r.p_value.get(k)),
                      _p(r.p_holm.get(k))] if d is not None else [""] * 7)
        line += [_num(r.vs_baseline[k]) for k in keys]
        line += [_num(r.per_class_vs_baseline.get(f"val/IoU/{n}", math.nan)) for n in names]
        line += [_num(r.oracle.mean), _num(r.oracle.sd)] if r.oracle is not None else ["", ""]
        writer.writerow(line)
    return out.getvalue()


def _num(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{100 * value:.4f}"


def _p(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _signed_pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.2f}"


def pooled_parameters(data: StudyData) -> list[str]:
    """Searched parameters other than backbone, λ_adv and the seed that take more than one value: each is a column
    of the table (a configuration's row holds its value), so the table never pools over them."""
    names = sorted({n for t in data.trials for n in t.params})
    varied = [n for n in names if len({repr(t.params.get(n)) for t in data.trials}) > 1]
    return [n for n in varied if n not in (LAMBDA_KEY, MODEL_KEY) and not is_seed(n)]
