"""Validator agreement: do the label-free validators (``uda/…``, :mod:`trainables.validators`) rank models like target
labels would?

Read from a study directory (``trial_*/run/metrics.jsonl`` with ``uda/<validator>`` and, where labels exist, the
target metric at each evaluation; the layout of ``dastudy study run`` and of ``benchmarks/validator_study.py``):

- **across trials**: Spearman ρ and Kendall τ-b between each validator and target mIoU over the trials, both read
  at each trial's last evaluation; the **trial regret**: target mIoU of the trial the validator ranks first minus
  the best trial's (0 = as good as oracle selection, negative = worse);
- **across checkpoints**: the same correlations over the evaluations of each trial, averaged over trials (trials with
  fewer than 3 evaluations or a constant score are left out); the **checkpoint regret**: within each trial, target
  mIoU of the checkpoint the validator picks minus the trial's best checkpoint, averaged; the **overall regret**:
  the (trial, checkpoint) pair the validator ranks first over the whole study minus the best pair.

How validators are judged follows Musgrave et al. 2022, "Three New Validators and a Large-Scale Benchmark Ranking for
Unsupervised Domain Adaptation" (https://arxiv.org/abs/2208.07360; unweighted correlations here) and Saito et al.,
ICCV 2021 (https://arxiv.org/abs/2108.10860). Without target labels the section says which trial and checkpoint each
validator would choose. Rank correlations are implemented here (numpy) so that the report needs no scipy.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["rankdata", "spearman", "kendall_tau", "TrialCurve", "load_curves", "ValidatorAgreement", "agreement",
           "agreement_section", "agreement_figure"]

PREFIX = "uda/"
DEFAULT_TARGET = "val/mIoU16"


def rankdata(values) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y) -> float:
    """Spearman's ρ: the Pearson correlation of the (tie-averaged) ranks; NaN below 2 points or for a constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else math.nan


def kendall_tau(x, y) -> float:
    """Kendall's τ-b: (concordant − discordant) / √((n0 − ties_x)(n0 − ties_y)) over all pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denominator = math.sqrt(float((n0 - (sx == 0).sum()) * (n0 - (sy == 0).sum())))
    return float((sx * sy).sum() / denominator) if denominator > 0 else math.nan


@dataclass
class TrialCurve:
    """One trial's evaluations: iterations and the metrics reported at each."""

    name: str
    params: dict[str, Any]
    iterations: list[int] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)

    def series(self, key: str) -> np.ndarray:
        return np.asarray([m.get(key, math.nan) for m in self.metrics], dtype=np.float64)


def _params(trial: Path) -> dict[str, Any]:
    try:
        params = json.loads((trial / "params.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str))} if isinstance(params, dict) else {}


def any_validator_reported(study_dir: str | Path) -> bool:
    """Whether any trial reported a ``uda/…`` score, read from each run's ``last_eval.json`` (one small file per
    trial, every metric of its last evaluation) and only for runs without one from their training log: the whole
    logs of a 1,000-trial study took 0.5 s to parse for a report with no validator section (issue 12)."""
    for trial in sorted(Path(study_dir).glob("trial_*")):
        run = trial / "run"
        try:
            record = json.loads((run / "last_eval.json").read_text())  # trainables.tune.LAST_EVAL_FILE
            if isinstance(record, dict) and any(str(k).startswith(PREFIX) for k in record):
                return True
            continue
        except (OSError, ValueError):
            pass
        if not (run / "metrics.jsonl").is_file():
            continue
        for line in (run / "metrics.jsonl").read_text().splitlines():
            if f'"{PREFIX}' in line:
                return True
    return False


def load_curves(study_dir: str | Path) -> list[TrialCurve]:
    """Every ``trial_*/run/metrics.jsonl`` of the study with at least one evaluation, sorted by trial name."""
    curves = []
    for trial in sorted(Path(study_dir).glob("trial_*")):
        path = trial / "run" / "metrics.jsonl"
        if not path.is_file():
            continue
        curve = TrialCurve(trial.name, _params(trial))
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed run
            if record.get("kind") != "eval":
                continue
            curve.iterations.append(int(record.get("iteration", 0)))
            curve.metrics.append({k: float(v) for k, v in record.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool) and "/" in k})
        if curve.metrics:
            curves.append(curve)
    return curves


@dataclass(frozen=True)
class ValidatorAgreement:
    """Agreement of one validator with the target metric (correlations in [-1, 1], regrets in metric units ≤ 0)."""

    validator: str
    trials: int
    spearman_trials: float
    kendall_trials: float
    spearman_checkpoints: float
    kendall_checkpoints: float
    regret_trial: float
    regret_checkpoint: float
    regret_overall: float
    picked_trial: str
    picked_iteration: int


def _argmax(values: np.ndarray) -> int | None:
    finite = np.isfinite(values)
    if not finite.any():
        return None
    return int(np.flatnonzero(finite)[np.argmax(values[finite])])


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def agreement(curves: list[TrialCurve], validator: str, target: str = DEFAULT_TARGET) -> ValidatorAgreement:
    """Correlations and regrets of ``validator`` (a full key, ``uda/snd``) against ``target`` over ``curves``."""
    final_v = np.asarray([c.series(validator)[-1] for c in curves])
    final_t = np.asarray([c.series(target)[-1] for c in curves])
    x, y = _finite_pairs(final_v, final_t)
    rho_ckpt, tau_ckpt, regret_ckpt = [], [], []
    pairs: list[tuple[float, float, int, int]] = []
    for index, curve in enumerate(curves):
        v, t = curve.series(validator), curve.series(target)
        pairs += [(v[k], t[k], index, k) for k in range(len(v))]
        cv, ct = _finite_pairs(v, t)
        if len(cv) >= 3:
            rho_ckpt.append(spearman(cv, ct))
            tau_ckpt.append(kendall_tau(cv, ct))
        pick = _argmax(v)
        if pick is not None and np.isfinite(t).any() and math.isfinite(t[pick]):
            regret_ckpt.append(float(t[pick] - np.nanmax(t)))
    picked = _argmax(final_v)
    regret_trial = (float(final_t[picked] - np.nanmax(final_t))
                    if picked is not None and np.isfinite(final_t).any() else math.nan)
    all_v = np.asarray([p[0] for p in pairs])
    all_t = np.asarray([p[1] for p in pairs])
    overall = _argmax(all_v)
    regret_overall = (float(all_t[overall] - np.nanmax(all_t))
                      if overall is not None and np.isfinite(all_t).any() else math.nan)
    best_curve, best_k = (pairs[overall][2], pairs[overall][3]) if overall is not None else (None, None)
    return ValidatorAgreement(
        validator=validator, trials=len(x), spearman_trials=spearman(x, y), kendall_trials=kendall_tau(x, y),
        spearman_checkpoints=_nanmean(rho_ckpt), kendall_checkpoints=_nanmean(tau_ckpt),
        regret_trial=regret_trial, regret_checkpoint=_nanmean(regret_ckpt), regret_overall=regret_overall,
        picked_trial=curves[best_curve].name if best_curve is not None else "",
        picked_iteration=curves[best_curve].iterations[best_k] if best_curve is not None else -1)


def validators_in(curves: list[TrialCurve]) -> list[str]:
    from trainables.config import VALIDATOR_NAMES as VALIDATORS  # not trainables.validators: it imports torch

    found = {k for c in curves for m in c.metrics for k in m if k.startswith(PREFIX)}
    order = {f"{PREFIX}{name}": i for i, name in enumerate(VALIDATORS)}
    return sorted(found, key=lambda k: (order.get(k, len(order)), k))


def _fmt(value: float, scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(value) else f"{value * scale:+.{digits}f}"


def agreement_figure(curves: list[TrialCurve], validators: list[str], target: str, path: Path) -> Path:
    """One panel per validator: its score (x) against target mIoU (y) at every evaluation (grey) and at each trial's
    last evaluation (blue)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = min(3, len(validators))
    rows = math.ceil(len(validators) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, validator in zip(axes.flat, validators):
        for curve in curves:
            v, t = curve.series(validator), curve.series(target)
            ax.scatter(v, 100 * t, s=8, color="0.7")
            ax.scatter(v[-1:], 100 * t[-1:], s=14, color="tab:blue")
        ax.set_xlabel(validator)
        ax.set_ylabel(f"{target} (%)")
    for ax in list(axes.flat)[len(validators):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def agreement_section(study_dir: str | Path, figures_dir: str | Path, *, target: str = DEFAULT_TARGET,
                      relative_to: str | Path | None = None) -> str:
    """The report's markdown section on label-free validators ("" when no trial reported any ``uda/…`` score).

    With target labels (``target`` reported): the agreement table and ``figures_dir/validator_agreement.png``
    (linked relative to ``relative_to``, the folder of the markdown file; default ``study_dir``); without: which
    trial and checkpoint each validator would choose.
    """
    study_dir, figures_dir = Path(study_dir), Path(figures_dir)
    relative_to = Path(relative_to) if relative_to is not None else study_dir
    if not any_validator_reported(study_dir):
        return ""
    curves = load_curves(study_dir)
    validators = validators_in(curves)
    if not validators:
        return ""
    has_target = any(math.isfinite(v) for c in curves for v in c.series(target))
    lines = ["## Label-free validators", ""]
    if not has_target:
        lines += [f"No trial reports `{target}`: the choices below cannot be checked against labels.", "",
                  "| validator | would choose trial | at iteration | score |", "|---|---|---:|---:|"]
        for validator in validators:
            scores = [(m.get(validator, math.nan), c.name, it) for c in curves
                      for it, m in zip(c.iterations, c.metrics)]
            finite = [s for s in scores if math.isfinite(s[0])]
            if finite:
                score, name, it = max(finite, key=lambda s: s[0])
                lines.append(f"| `{validator}` | {name} {_params_text(curves, name)} | {it} | {score:.4g} |")
        return "\n".join(lines) + "\n"
    results = [agreement(curves, v, target) for v in validators]
    finals = np.asarray([c.series(target)[-1] for c in curves])
    random_regret = float(np.nanmean(finals) - np.nanmax(finals))
    last_regret = _nanmean([float(c.series(target)[-1] - np.nanmax(c.series(target))) for c in curves
                            if np.isfinite(c.series(target)).any()])
    lines += [f"{len(curves)} trials; target metric `{target}` (labels used only here, to judge the validators). "
              "ρ = Spearman, τ = Kendall τ-b; *trials*: over the trials' last evaluations; *ckpts*: over the "
              "evaluations of each trial, mean over trials. Regret = target mIoU of the pick − the oracle's, in "
              "mIoU points (0 = oracle, negative = worse): *trial* picks a trial by its last evaluation, *ckpt* a "
              "checkpoint within each trial (mean), *overall* one (trial, checkpoint) of the whole study.", "",
              "| validator | ρ trials | τ trials | ρ ckpts | τ ckpts | regret trial | regret ckpt | regret overall "
              "| overall pick |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| `{r.validator}` | {_fmt(r.spearman_trials)} | {_fmt(r.kendall_trials)} | "
                     f"{_fmt(r.spearman_checkpoints)} | {_fmt(r.kendall_checkpoints)} | "
                     f"{_fmt(r.regret_trial, 100)} | {_fmt(r.regret_checkpoint, 100)} | "
                     f"{_fmt(r.regret_overall, 100)} | {r.picked_trial} @ {r.picked_iteration} |")
    lines += ["", f"References: a trial picked at random has an expected regret of {_fmt(random_regret, 100)}; "
              f"always keeping the last checkpoint, {_fmt(last_regret, 100)} (ckpt)."]
    figure = agreement_figure(curves, validators, target, figures_dir / "validator_agreement.png")
    lines += ["", f"![validators vs {target}]({os.path.relpath(figure, relative_to)})"]
    return "\n".join(lines) + "\n"


def _params_text(curves: list[TrialCurve], name: str) -> str:
    params = next((c.params for c in curves if c.name == name), {})
    return "(" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) + ")" \
        if params else ""
