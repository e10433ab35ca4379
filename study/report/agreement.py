"""Validator agreement: do the label-free validators (``uda/…``, :mod:`trainables.validators`) rank models like target
labels would?

Read from a study directory (``trial_*/run/metrics.jsonl`` with ``uda/<validator>`` and, where labels exist, the
target metric at each evaluation; ``trial_*/params.json`` for the configuration; the layout of ``dastudy study run``
and of ``benchmarks/validator_study.py``).

**Equal budgets.** A correlation between models trained for different numbers of iterations measures training
length as much as the validator: under ASHA the trials stopped early have both a low score and a low target, and
mixing them in turned ρ = −0.64 (completed trials only) into ρ = +0.64 (issue 18). So every number here is taken at
one *budget* B, the largest evaluation iteration that at least :data:`MIN_TRIALS` trials reached (with a scheduler,
normally the full budget, i.e. the completed trials; without one, every trial), and only the trials that reached B
enter, each with its evaluations up to B:

- **across trials**: Spearman ρ and Kendall τ-b (``scipy.stats``) between each validator and target mIoU at
  iteration B; the **trial regret**: target mIoU of the trial the validator ranks first minus the best trial's
  (0 = as good as oracle selection, negative = worse);
- **across checkpoints**: the same correlations over the evaluations (≤ B) of each trial, averaged over trials
  (trials with fewer than 3 evaluations or a constant score give none); the **checkpoint regret**: within each trial,
  target mIoU of the checkpoint the validator picks minus the trial's best checkpoint, averaged; the **overall
  regret**: the (trial, checkpoint) pair the validator ranks first minus the best pair.

**Ties.** Where several trials (or checkpoints) share the validator's top score, the validator cannot tell them
apart: its regret is the *mean* regret of the tied ones (the expected regret of picking one of them at random), and
all of them are named. Neither the trials' order nor their names decide (the first trial by name used to win, which
with seed-major numbering favoured seed 1).

**Intervals.** Trials that differ only in the seed are replicates of one *configuration* (the searched parameters
without ``runtime.seed``); they are not independent models, so every correlation (and the mean within-trial
correlation) has a 95 % percentile interval from a two-stage bootstrap: resample the configurations with
replacement, then the seeds within each drawn configuration (Davison & Hinkley 1997, Sec. 3.8; Field & Welsh 2007,
"Bootstrapping clustered data", JRSS B 69:369). :data:`BOOTSTRAP_RESAMPLES` resamples from a fixed generator
(:data:`BOOTSTRAP_SEED`), so a report is reproducible (the statistics: :mod:`study.report.agreement_stats`). Beside the
table, the **variance split** of the target metric at B: the share of its sum of squares between configuration
means (configuration) and within configurations (seed).

How validators are judged follows Musgrave et al. 2022, "Three New Validators and a Large-Scale Benchmark Ranking for
Unsupervised Domain Adaptation" (https://arxiv.org/abs/2208.07360; unweighted correlations here) and Saito et al.,
ICCV 2021 (https://arxiv.org/abs/2108.10860). Without target labels the section says which trial and checkpoint each
validator would choose at the same budget.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from study.report.figure_files import save_figure
from study.report.agreement_stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Interval, VarianceSplit,
                                   bootstrap_correlations, cluster_resamples, percentile_interval, rank_correlations,
                                   resampled, tied_best, variance_split)

__all__ = ["TrialCurve", "load_curves", "ValidatorAgreement", "Interval", "VarianceSplit", "agreement",
           "agreement_section", "agreement_figure", "equal_budget", "budget_counts", "rank_correlations",
           "cluster_resamples", "bootstrap_correlations", "percentile_interval", "variance_split",
           "configuration_of", "tied_best", "MIN_TRIALS", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED"]

PREFIX = "uda/"
DEFAULT_TARGET = "val/mIoU16"
MIN_TRIALS = 3  # a rank correlation over fewer than 3 models is ±1 or undefined
MIN_CHECKPOINTS = 3


@dataclass
class TrialCurve:
    """One trial's evaluations: iterations and the metrics reported at each."""

    name: str
    params: dict[str, Any]
    iterations: list[int] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)

    def series(self, key: str) -> np.ndarray:
        return np.asarray([m.get(key, math.nan) for m in self.metrics], dtype=np.float64)

    def upto(self, budget: int) -> TrialCurve:
        """The evaluations at iterations ≤ ``budget``."""
        keep = [k for k, it in enumerate(self.iterations) if it <= budget]
        return TrialCurve(self.name, self.params, [self.iterations[k] for k in keep], [self.metrics[k] for k in keep])

    def at(self, budget: int, key: str) -> float:
        """``key`` at iteration ``budget`` (NaN where the trial has no evaluation there)."""
        return next((m.get(key, math.nan) for it, m in zip(self.iterations, self.metrics) if it == budget), math.nan)


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
    """Every ``trial_*/run/metrics.jsonl`` of the study with at least one evaluation, sorted by trial name; one
    evaluation per iteration (a resumed run that evaluated an iteration again: the later record)."""
    curves = []
    for trial in sorted(Path(study_dir).glob("trial_*")):
        path = trial / "run" / "metrics.jsonl"
        if not path.is_file():
            continue
        curve = TrialCurve(trial.name, _params(trial))
        evals: dict[int, dict[str, float]] = {}
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed run
            if record.get("kind") != "eval":
                continue
            evals[int(record.get("iteration", 0))] = {k: float(v) for k, v in record.items()
                                                      if isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and "/" in k}
        if evals:
            curve.iterations = sorted(evals)
            curve.metrics = [evals[it] for it in curve.iterations]
            curves.append(curve)
    return curves


def configuration_of(curve: TrialCurve) -> str:
    """The configuration a trial replicates: its parameters without the seed (``runtime.seed``, also
    ``runtime.seed@…``), as a stable string; a trial without ``params.json`` is a configuration of its own.
    (The rule of ``study.report.aggregate.config_key``, not imported: the report imports this module.)"""
    if not curve.params:
        return f"trial:{curve.name}"
    return json.dumps({k: v for k, v in sorted(curve.params.items())
                       if k.split("@", 1)[0].rsplit(".", 1)[-1] != "seed"}, sort_keys=True, default=str)


def budget_counts(curves: Sequence[TrialCurve]) -> dict[int, int]:
    """Evaluation iteration → number of trials evaluated there."""
    counts: dict[int, int] = {}
    for curve in curves:
        for it in set(curve.iterations):
            counts[it] = counts.get(it, 0) + 1
    return dict(sorted(counts.items()))


def equal_budget(curves: Sequence[TrialCurve], *, min_trials: int = MIN_TRIALS) -> int | None:
    """The largest evaluation iteration that at least ``min_trials`` trials reached (all of them, in a study of fewer
    trials; None without any evaluation)."""
    need = min(min_trials, len(curves))
    reached = [it for it, n in budget_counts(curves).items() if n >= need]
    return max(reached) if reached else None


def _regret(scores: np.ndarray, target: np.ndarray) -> float:
    """Target of the validator's pick − the best target; tied picks count with their mean (see the module)."""
    picks = tied_best(scores)
    picks = picks[np.isfinite(target[picks])]
    if not len(picks):
        return math.nan
    return float(target[picks].mean() - np.nanmax(target))


@dataclass(frozen=True)
class ValidatorAgreement:
    """Agreement of one validator with the target metric at one budget (correlations in [-1, 1] with 95 % bootstrap
    intervals, regrets in metric units ≤ 0)."""

    validator: str
    budget: int
    trials: int
    configurations: int
    spearman_trials: Interval
    kendall_trials: Interval
    spearman_checkpoints: Interval
    kendall_checkpoints: Interval
    regret_trial: float
    regret_checkpoint: float
    regret_overall: float
    picked: tuple[str, ...]  # the overall pick, "trial @ iteration", every tied one (sorted)


def _nanmean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def agreement(curves: Sequence[TrialCurve], validator: str, target: str = DEFAULT_TARGET, *,
              budget: int | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> ValidatorAgreement:
    """Correlations, intervals and regrets of ``validator`` (a full key, ``uda/snd``) against ``target`` over the
    trials of ``curves`` that reached ``budget`` (default :func:`equal_budget`) with a finite score and target there,
    each with its evaluations ≤ budget."""
    budget = equal_budget(curves) if budget is None else budget
    if budget is None:
        nan = Interval(math.nan)
        return ValidatorAgreement(validator, -1, 0, 0, nan, nan, nan, nan, math.nan, math.nan, math.nan, ())
    cut = [c.upto(budget) for c in curves if budget in c.iterations]
    at_v = np.asarray([c.at(budget, validator) for c in cut])
    at_t = np.asarray([c.at(budget, target) for c in cut])
    scored = np.isfinite(at_v) & np.isfinite(at_t)  # a NaN target or score never enters a correlation
    groups = [configuration_of(c) for c, k in zip(cut, scored) if k]
    x, y = at_v[scored], at_t[scored]
    rho, tau = rank_correlations(x, y)
    index = cluster_resamples(groups, resamples=resamples, seed=seed) if len(x) else np.zeros((0, 0), dtype=int)
    rho_draws, tau_draws = bootstrap_correlations(x, y, index) if len(x) else (np.zeros(0), np.zeros(0))

    rho_ckpt, tau_ckpt, ckpt_groups, regret_ckpt = [], [], [], []
    scores, targets, labels = [], [], []
    for curve in (c for c, k in zip(cut, scored) if k):  # the same trials as the correlation across trials
        v, t = curve.series(validator), curve.series(target)
        scores += v.tolist()
        targets += t.tolist()
        labels += [f"{curve.name} @ {it}" for it in curve.iterations]
        if (np.isfinite(v) & np.isfinite(t)).sum() >= MIN_CHECKPOINTS:
            r, k = rank_correlations(v, t)
            if math.isfinite(r):
                rho_ckpt.append(r)
                tau_ckpt.append(k)
                ckpt_groups.append(configuration_of(curve))
        if np.isfinite(t).any():
            regret_ckpt.append(_regret(v, t))
    ckpt_index = cluster_resamples(ckpt_groups, resamples=resamples, seed=seed) if ckpt_groups else None

    def mean_interval(values: list[float]) -> Interval:
        if ckpt_index is None:
            return Interval(math.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            draws = np.nanmean(resampled(np.asarray(values), ckpt_index), axis=1)
            return percentile_interval(float(np.mean(values)), draws)

    all_v, all_t = np.asarray(scores), np.asarray(targets)
    picked = tuple(sorted(labels[k] for k in tied_best(all_v)))
    return ValidatorAgreement(
        validator=validator, budget=budget, trials=len(x), configurations=len(set(groups)),
        spearman_trials=percentile_interval(rho, rho_draws), kendall_trials=percentile_interval(tau, tau_draws),
        spearman_checkpoints=mean_interval(rho_ckpt), kendall_checkpoints=mean_interval(tau_ckpt),
        regret_trial=_regret(x, y) if len(x) else math.nan, regret_checkpoint=_nanmean(regret_ckpt),
        regret_overall=_regret(all_v, all_t) if np.isfinite(all_t).any() else math.nan, picked=picked)


def validators_in(curves: list[TrialCurve]) -> list[str]:
    from trainables.config import VALIDATOR_NAMES as VALIDATORS  # not trainables.validators: it imports torch

    found = {k for c in curves for m in c.metrics for k in m if k.startswith(PREFIX)}
    order = {f"{PREFIX}{name}": i for i, name in enumerate(VALIDATORS)}
    return sorted(found, key=lambda k: (order.get(k, len(order)), k))


def _fmt(value: float, scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(value) else f"{value * scale:+.{digits}f}"


def agreement_figure(curves: Sequence[TrialCurve], validators: list[str], target: str, path: Path, *,
                     budget: int | None = None) -> Path:
    """One panel per validator: its score (x) against target mIoU (y) at every evaluation (grey) and, in blue, at the
    budget the table is computed at (or each trial's last evaluation where no budget is given)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = min(3, len(validators))
    rows = math.ceil(len(validators) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, validator in zip(axes.flat, validators):
        # one scatter call per colour and panel (one per trial took 2.4 of the 8 s a 24-trial figure cost)
        every = [(curve.series(validator), curve.series(target)) for curve in curves]
        ax.scatter(np.concatenate([v for v, _ in every]), 100 * np.concatenate([t for _, t in every]), s=8,
                   color="0.7")
        if budget is None:
            marked = [(v[-1], t[-1]) for v, t in every]
        else:
            marked = [(c.at(budget, validator), c.at(budget, target)) for c in curves if budget in c.iterations]
        ax.scatter([v for v, _ in marked], [100 * t for _, t in marked], s=14, color="tab:blue")
        ax.set_xlabel(validator)
        ax.set_ylabel(f"{target} (%)")
        ax.set_title(f"blue: iteration {budget}" if budget is not None else "blue: last evaluation", fontsize=8)
    for ax in list(axes.flat)[len(validators):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)  # PNG at 200 dpi and a PDF beside it, as every report figure


def _budget_line(curves: Sequence[TrialCurve], budget: int) -> str:
    counts = ", ".join(f"{it}: {n}" for it, n in budget_counts(curves).items())
    return (f"Trials per evaluation iteration: {counts}. Every number below is taken at iteration **{budget}**, the "
            f"largest that at least {min(MIN_TRIALS, len(curves))} trials reached (equal budgets: trials stopped "
            "earlier would compare "
            "training lengths, not validators), over the trials that reached it and their evaluations up to it.")


def _tie_line() -> str:
    return ("Ties: where several trials or checkpoints share a validator's top score, its regret is their mean (the "
            "expected regret of a random pick among them) and all are named; trial order and names never decide.")


def agreement_section(study_dir: str | Path, figures_dir: str | Path, *, target: str = DEFAULT_TARGET,
                      relative_to: str | Path | None = None) -> str:
    """The report's markdown section on label-free validators ("" when no trial reported any ``uda/…`` score).

    With target labels (``target`` reported): the agreement table at the equal budget, the variance split and
    ``figures_dir/validator_agreement.png`` (linked relative to ``relative_to``, the folder of the markdown file;
    default ``study_dir``); without: which trial and checkpoint each validator would choose at that budget.
    """
    study_dir, figures_dir = Path(study_dir), Path(figures_dir)
    relative_to = Path(relative_to) if relative_to is not None else study_dir
    if not any_validator_reported(study_dir):
        return ""
    curves = load_curves(study_dir)
    validators = validators_in(curves)
    budget = equal_budget(curves)
    if not validators or budget is None:
        return ""
    cut = [c.upto(budget) for c in curves if budget in c.iterations]
    has_target = any(math.isfinite(v) for c in cut for v in c.series(target))
    lines = ["## Label-free validators", "", _budget_line(curves, budget), ""]
    if not has_target:
        lines += [f"No trial reports `{target}`: the choices below cannot be checked against labels. {_tie_line()}",
                  "", "| validator | would choose | score |", "|---|---|---:|"]
        for validator in validators:
            scores = np.asarray([v for c in cut for v in c.series(validator)])
            where = [(c.name, it) for c in cut for it in c.iterations]
            picks = sorted(where[k] for k in tied_best(scores))
            if picks:
                chosen = "; ".join(f"{name} {_params_text(curves, name)} @ {it}" for name, it in picks)
                lines.append(f"| `{validator}` | {chosen} | {np.nanmax(scores):.4g} |")
        return "\n".join(lines) + "\n"
    results = [agreement(curves, v, target, budget=budget) for v in validators]
    finals = np.asarray([c.at(budget, target) for c in cut])
    random_regret = float(np.nanmean(finals) - np.nanmax(finals))
    last_regret = _nanmean([float(c.at(budget, target) - np.nanmax(c.series(target))) for c in cut
                            if np.isfinite(c.series(target)).any()])
    split = variance_split(finals, [configuration_of(c) for c in cut])
    lines += [f"Target metric `{target}` (labels used only here, to judge the validators). ρ = Spearman, τ = Kendall "
              "τ-b (scipy.stats), each with a 95 % interval from a two-stage bootstrap (configurations resampled, "
              f"then the seeds within each; {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}): seeds of one "
              "configuration are not independent models. *trials*: over the trials at the budget; *ckpts*: over "
              "the evaluations of each trial, mean over trials. Regret = target mIoU of the pick − the oracle's, in "
              "mIoU points (0 = oracle, negative = worse): *trial* picks a trial at the budget, *ckpt* a checkpoint "
              f"within each trial (mean), *overall* one (trial, checkpoint). {_tie_line()}", "",
              f"Variance of `{target}` at iteration {budget} over {split.trials} trials of {split.configurations} "
              f"configuration{'' if split.configurations == 1 else 's'}: configuration "
              f"{_share(split.configuration)}, seed (within configuration) "
              f"{_share(split.seed)}.", "",
              "| validator | n (configs) | ρ trials [95 % CI] | τ trials [95 % CI] | ρ ckpts [95 % CI] "
              "| τ ckpts [95 % CI] | regret trial | regret ckpt | regret overall | overall pick |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| `{r.validator}` | {r.trials} ({r.configurations}) | {r.spearman_trials.text()} | "
                     f"{r.kendall_trials.text()} | {r.spearman_checkpoints.text()} | {r.kendall_checkpoints.text()} | "
                     f"{_fmt(r.regret_trial, 100)} | {_fmt(r.regret_checkpoint, 100)} | "
                     f"{_fmt(r.regret_overall, 100)} | {_picked_text(r.picked)} |")
    lines += ["", f"References: a trial picked at random has an expected regret of {_fmt(random_regret, 100)}; "
              f"always keeping the checkpoint at the budget, {_fmt(last_regret, 100)} (ckpt)."]
    figure = agreement_figure(curves, validators, target, figures_dir / "validator_agreement.png", budget=budget)
    lines += ["", f"![validators vs {target}]({os.path.relpath(figure, relative_to)})"]
    return "\n".join(lines) + "\n"


def _share(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.0f} %"


def _picked_text(picked: tuple[str, ...]) -> str:
    if len(picked) <= 3:
        return "; ".join(picked) if picked else "n/a"
    return f"{len(picked)} tied ({'; '.join(picked[:2])}; …)"


def _params_text(curves: Sequence[TrialCurve], name: str) -> str:
    params = next((c.params for c in curves if c.name == name), {})
    return "(" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) + ")" \
        if params else ""
