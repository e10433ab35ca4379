"""Seed replicates and budget-fair comparison: the statistics every ranking of the report is built on.

A *configuration* is a trial's searched parameters minus the run seed (``runtime.seed``): trials that differ
only in the seed are replicates of one configuration, and every ranking, the best configuration, the sensitivity
means and the importances work on per-configuration aggregates (mean, sample sd, n, 95 % Student-t interval from
``scipy.stats.t``), never on one lucky seed.

Budget fairness: a trial the scheduler stopped early was scored after fewer evaluations than a completed one, so
completed and stopped trials are never ranked together. The report ranks completed configurations at their
final evaluation, lists the stopped ones as a separate group, and ranks every configuration once more at the
largest evaluation round that all scored trials reached (their shared budget). Trials still running never enter a
ranking (their score is from an unfinished run).

No headline from one seed (:func:`choose_best`): a configuration is ranked as best only with at least
``MIN_REPLICATES`` replicates *at the budget it is ranked at* (completed replicates at the full budget; at the
shared budget every replicate that reached it, early-stopped ones included). Under ASHA the one seed of a
configuration that survived its rungs is a selected, lucky sample, not an estimate of the configuration.

Controls: each adversarial configuration is compared with the λ_adv = 0 configuration that matches it on every
other searched parameter, by per-seed *paired* differences (same seed, same data order and init; n counts the
seeds both have), with a paired t-test (``scipy.stats.ttest_rel``) and Holm's step-down correction over the arms
compared with a control (Holm 1979, https://www.jstor.org/stable/4615733): many arms share one control, and
the smallest of k raw p-values is small by chance alone.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # annotations only: collect reads the Optuna journal through importance, which uses this module
    from study.report.collect import StudyData, TrialRecord

__all__ = ["Stats", "ConfigAggregate", "stats", "t_quantile_975", "is_seed", "config_key", "aggregate",
           "shared_budget", "at_round", "rank_configs", "paired_vs_control", "completed_and_stopped", "equal_budget",
           "PairedDifference", "seed_of", "LAMBDA_KEY", "MODEL_KEY", "MIN_CONFIGS_FOR_IMPORTANCE", "MIN_REPLICATES",
           "BestChoice", "choose_best", "holm", "paired_test", "seeds_text", "TIE_RULE"]

LAMBDA_KEY = "adapt.lambda_adv_main"
MODEL_KEY = "model.name"
# PED-ANOVA (and any importance) compares the top quantile of configurations with the rest: with fewer than five
# configurations that quantile is one or two points and the numbers are noise.
MIN_CONFIGS_FOR_IMPORTANCE = 5
# A mean of one run has no spread: it can be ranked, never chosen as the best configuration.
MIN_REPLICATES = 2
TIE_RULE = ("configurations with at least 2 replicates first; then the higher mean (lower when minimising); on "
            "equal means the one with more replicates, then the one started first (Optuna trial number)")


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}, the two-sided 95 % Student-t quantile (``scipy.stats.t.ppf``); NaN for df < 1."""
    if df < 1:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation, n and the 95 % t-interval half-width (NaN where n is too small)."""

    mean: float
    sd: float
    n: int
    ci95: float

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


def stats(values: Iterable[float]) -> Stats:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Stats(math.nan, math.nan, 0, math.nan)
    mean = math.fsum(xs) / n
    if n == 1:
        return Stats(mean, math.nan, 1, math.nan)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Stats(mean, sd, n, t_quantile_975(n - 1) * sd / math.sqrt(n))


def seeds_text(seeds: Sequence[Any]) -> str:
    """``seeds 1, 2, 3``; a study without a searched seed has no seed to name: ``2 runs (no seed searched)``."""
    if not seeds or all(s is None for s in seeds):
        return f"{len(seeds)} run{'s' if len(seeds) != 1 else ''} (no seed searched)"
    return "seeds " + ", ".join(str(s) for s in seeds)


def is_seed(name: str) -> bool:
    """``runtime.seed`` (also ``runtime.seed@qualifier``): a replicate index, not a hyperparameter."""
    return name.split("@", 1)[0].rsplit(".", 1)[-1] == "seed"


def config_key(params: Mapping[str, Any]) -> str:
    """The configuration a trial replicates: its searched parameters without the seed, as a stable string."""
    return json.dumps({k: v for k, v in sorted(params.items()) if not is_seed(k)}, sort_keys=True, default=str)


@dataclass(frozen=True)
class ConfigAggregate:
    """The replicates of one configuration within one group (completed, stopped early, or at one round)."""

    params: Mapping[str, Any]  # searched parameters without the seed
    trials: tuple[TrialRecord, ...]  # sorted by seed, then name
    score: Stats  # the study metric over ``values``
    group: str  # "completed" | "stopped early" | "round N"
    values: tuple[float, ...] = ()  # each trial's study metric at this group's budget (parallel to ``trials``)
    stopped: int = 0  # replicates of this configuration stopped early (not in a "completed" group's mean)

    @property
    def seeds(self) -> tuple[Any, ...]:
        return tuple(seed_of(t) for t in self.trials)

    @property
    def ranked(self) -> bool:
        """At least ``MIN_REPLICATES`` replicates at this budget: it may be chosen as the best."""
        return self.score.n >= MIN_REPLICATES

    @property
    def order(self) -> float:
        orders = [t.order for t in self.trials if t.order is not None]
        return min(orders) if orders else math.inf

    def value_of(self, index: int) -> float | None:
        return self.values[index] if self.values else self.trials[index].metric

    def final(self, key: str) -> Stats:
        """A final (target val) metric over the replicates."""
        return stats(t.final.get(key, math.nan) for t in self.trials)

    def representative(self, mode: str) -> TrialRecord:
        """The replicate whose run config stands for the configuration (``best_config.toml``): the median one at
        this group's budget, so that the file does not follow the luckiest seed. With an even n the *less* good
        of the two middle replicates (the lower median when maximising), then start order, then name."""
        sign = -1.0 if mode == "max" else 1.0

        def key(index: int) -> tuple[float, float, str]:
            value = self.value_of(index)
            t = self.trials[index]
            return (sign * value if value is not None and math.isfinite(value) else math.inf,
                    t.order if t.order is not None else math.inf, t.name)

        ranked = sorted(range(len(self.trials)), key=key)
        return self.trials[ranked[len(ranked) // 2]]


def seed_of(trial: TrialRecord) -> Any:
    seeds = [v for k, v in trial.params.items() if is_seed(k)]
    return seeds[0] if seeds else None


def _scored(trial: TrialRecord) -> bool:
    return (trial.metric is not None and math.isfinite(trial.metric)
            and trial.status not in ("failed", "diverged", "running"))


def _group(trials: Iterable[tuple[TrialRecord, float | None]], group: str) -> list[ConfigAggregate]:
    """(trial, value) pairs grouped by configuration, in order of first appearance; members by seed, then name."""
    groups: dict[str, list[tuple[TrialRecord, float]]] = {}
    for t, value in trials:
        if value is not None and math.isfinite(value):
            groups.setdefault(config_key(t.params), []).append((t, value))
    out = []
    for members in groups.values():
        members.sort(key=lambda tv: (str(seed_of(tv[0])), tv[0].name))
        params = {k: v for k, v in sorted(members[0][0].params.items()) if not is_seed(k)}
        out.append(ConfigAggregate(params=params, trials=tuple(t for t, _ in members),
                                   score=stats(v for _, v in members), group=group,
                                   values=tuple(v for _, v in members)))
    return out


def aggregate(trials: Iterable[TrialRecord], *, group: str) -> list[ConfigAggregate]:
    """Group scored trials by configuration (their study metric at the last report)."""
    return _group(((t, t.metric) for t in trials if _scored(t)), group)


def rank_configs(configs: Sequence[ConfigAggregate], mode: str) -> list[ConfigAggregate]:
    """Ranked as :data:`TIE_RULE` says: replicated configurations first, best mean, more replicates, start order."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(configs, key=lambda c: (not c.ranked, sign * c.score.mean, -c.score.n, c.order,
                                          config_key(c.params)))


def completed_and_stopped(data: StudyData) -> tuple[list[ConfigAggregate], list[ConfigAggregate]]:
    """Completed configurations ranked at their final evaluation; stopped-early ones ranked among themselves.
    A completed configuration records how many of its replicates were stopped (its mean is over survivors)."""
    stopped_trials = [t for t in data.trials if t.status in ("pruned", "stopped") and _scored(t)]
    stopped_of: dict[str, int] = {}
    for t in stopped_trials:
        stopped_of[config_key(t.params)] = stopped_of.get(config_key(t.params), 0) + 1
    completed = [replace(c, stopped=stopped_of.get(config_key(c.params), 0))
                 for c in aggregate((t for t in data.trials if t.status == "completed"), group="completed")]
    stopped = aggregate(stopped_trials, group="stopped early")
    return rank_configs(completed, data.mode), rank_configs(stopped, data.mode)


def shared_budget(trials: Iterable[TrialRecord]) -> int | None:
    """The largest evaluation round every scored trial reported at (their shared budget); running trials are
    not scored and do not lower it."""
    rounds = [max(x for x, _ in t.curve) for t in trials if _scored(t) and t.curve]
    return min(rounds) if rounds else None


def at_round(trial: TrialRecord, round_: int) -> float | None:
    """The study metric a trial reported at evaluation round ``round_`` (None if it did not report then)."""
    for x, y in trial.curve:
        if x == round_:
            return y
    return None


def equal_budget_of(trials: Sequence[TrialRecord], mode: str) -> tuple[int | None, list[ConfigAggregate]]:
    """Every scored configuration ranked by its metric at the shared budget: completed and early-stopped
    replicates together (at that round they have all trained equally long); running trials left out."""
    scored = [t for t in trials if _scored(t)]
    budget = shared_budget(scored)
    if budget is None:
        return None, []
    return budget, rank_configs(_group(((t, at_round(t, budget)) for t in scored), f"round {budget}"), mode)


def equal_budget(data: StudyData) -> tuple[int | None, list[ConfigAggregate]]:
    return equal_budget_of(data.trials, data.mode)


@dataclass(frozen=True)
class BestChoice:
    """The best configuration and the budget it was ranked at, or why there is none."""

    config: ConfigAggregate | None
    budget: str | None  # "completed" (full budget) | "round N" (the shared budget)
    note: str | None = None


def choose_best(trials: Sequence[TrialRecord], mode: str) -> BestChoice:
    """The one rule for the best configuration (``study report``, ``best_config.toml``, ``study status``).

    1. Among completed configurations with at least ``MIN_REPLICATES`` completed replicates, ranked at their
       final evaluation (:data:`TIE_RULE`).
    2. Else among configurations with at least ``MIN_REPLICATES`` replicates at the shared budget (the last
       round all scored trials reached), early-stopped replicates included.
    3. Else none: every candidate rests on one run."""
    completed = rank_configs(aggregate((t for t in trials if t.status == "completed"), group="completed"), mode)
    if completed and completed[0].ranked:
        return BestChoice(completed[0], "completed")
    budget, at_budget = equal_budget_of(trials, mode)
    if at_budget and at_budget[0].ranked:
        return BestChoice(at_budget[0], f"round {budget}",
                          note=f"no configuration completed with at least {MIN_REPLICATES} replicates: the best "
                               f"configuration is ranked at round {budget}, the budget all scored trials reached")
    if completed or at_budget:
        return BestChoice(None, None, note=f"no configuration has {MIN_REPLICATES} or more replicates at one "
                                           "budget: no best configuration and no best_config.toml (a single run "
                                           "is no estimate; declare seeds for replicates)")
    return BestChoice(None, None, note="no trial has a score: no best configuration")


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed paired difference of a configuration against its λ_adv = 0 control (same other parameters)."""

    config: ConfigAggregate
    control: ConfigAggregate
    seeds: tuple[Any, ...]  # the seeds both have
    difference: Stats  # of (configuration − control), seed by seed
    p_value: float = math.nan  # two-sided paired t-test (NaN with fewer than 2 pairs or no spread)
    p_holm: float = math.nan  # Holm-adjusted over the arms of one comparison table


def paired_test(mine: Sequence[float], theirs: Sequence[float]) -> tuple[Stats, float]:
    """Mean ± sd (n) and 95 % t-interval of the paired differences, and the two-sided p-value of
    ``scipy.stats.ttest_rel`` (NaN with n < 2 or when every difference is the same)."""
    diffs = [a - b for a, b in zip(mine, theirs)]
    summary = stats(diffs)
    if summary.n < 2 or not summary.sd > 0:
        return summary, math.nan
    from scipy.stats import ttest_rel

    return summary, float(ttest_rel(list(mine), list(theirs)).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error): the i-th smallest of m p-values times (m − i + 1),
    made monotone and capped at 1. NaN p-values (no test) are left out of the family and stay NaN."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if p is not None and math.isfinite(p))
    m = len(finite)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _rest(params: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in params.items() if k != LAMBDA_KEY and not is_seed(k)}, sort_keys=True,
                      default=str)


def paired_vs_control(configs: Sequence[ConfigAggregate], *, key: str | None = None) -> list[PairedDifference]:
    """Each configuration with λ_adv != 0 against the λ_adv = 0 configuration that matches it on every other
    searched parameter, paired seed by seed (never by position); Holm-adjusted over the returned arms.
    ``key``: a final metric (``val/mIoU16``) instead of the study metric at the group's budget."""
    controls = {_rest(c.params): c for c in configs if _is_zero(c.params.get(LAMBDA_KEY))}
    out = []
    for c in configs:
        if LAMBDA_KEY not in c.params or _is_zero(c.params[LAMBDA_KEY]) or _rest(c.params) not in controls:
            continue
        control = controls[_rest(c.params)]

        def values(agg: ConfigAggregate) -> dict[Any, float]:
            pairs = ((seed_of(t), agg.value_of(i) if key is None else t.final.get(key))
                     for i, t in enumerate(agg.trials))
            return {s: v for s, v in pairs if v is not None and math.isfinite(v)}

        mine, theirs = values(c), values(control)
        seeds = tuple(s for s in mine if s in theirs and s is not None)
        difference, p = paired_test([mine[s] for s in seeds], [theirs[s] for s in seeds])
        out.append(PairedDifference(config=c, control=control, seeds=seeds, difference=difference, p_value=p))
    adjusted = holm([d.p_value for d in out])
    return [replace(d, p_holm=a) for d, a in zip(out, adjusted)]


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
