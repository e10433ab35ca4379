"""Seed replicates and budget-fair comparison: the statistics every ranking of the report is built on.

A *configuration* is a trial's searched parameters minus the run seed (``runtime.seed``): trials that differ
only in the seed are replicates of one configuration, and every ranking, the best configuration, the sensitivity
means and the importances work on per-configuration aggregates (mean, sample sd, n, 95 % Student-t interval),
never on one lucky seed.

Budget fairness: a trial the scheduler stopped early was scored after fewer evaluations than a completed one, so
completed and stopped trials are never ranked together. The report ranks completed configurations at their
final evaluation, lists the stopped ones as a separate group, and ranks every configuration once more at the
largest evaluation round that all scored trials reached (their shared budget).

Controls: where the study holds a λ_adv = 0 configuration with the same other parameters, each adversarial
configuration is compared with it by per-seed *paired* differences (same seed, same data order and init), which
removes the seed-to-seed variation both share.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from study.report.collect import StudyData, TrialRecord

__all__ = ["Stats", "ConfigAggregate", "stats", "t_quantile_975", "is_seed", "config_key", "aggregate",
           "shared_budget", "at_round", "rank_configs", "paired_vs_control", "completed_and_stopped", "equal_budget",
           "PairedDifference", "seed_of", "LAMBDA_KEY", "MODEL_KEY", "MIN_CONFIGS_FOR_IMPORTANCE"]

LAMBDA_KEY = "adapt.lambda_adv_main"
MODEL_KEY = "model.name"
# PED-ANOVA (and any importance) compares the top quantile of configurations with the rest: with fewer than five
# configurations that quantile is one or two points and the numbers are noise.
MIN_CONFIGS_FOR_IMPORTANCE = 5

# Two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30 (standard table values).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, the Cornish-Fisher expansion beyond (error < 1e-3)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


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
    mean = sum(xs) / n
    if n == 1:
        return Stats(mean, math.nan, 1, math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Stats(mean, sd, n, t_quantile_975(n - 1) * sd / math.sqrt(n))


def is_seed(name: str) -> bool:
    """``runtime.seed`` (also ``runtime.seed@qualifier``): a replicate index, not a hyperparameter."""
    return name.split("@", 1)[0].rsplit(".", 1)[-1] == "seed"


def config_key(params: Mapping[str, Any]) -> str:
    """The configuration a trial replicates: its searched parameters without the seed, as a stable string."""
    return json.dumps({k: v for k, v in sorted(params.items()) if not is_seed(k)}, sort_keys=True, default=str)


@dataclass(frozen=True)
class ConfigAggregate:
    """The replicates of one configuration within one group (completed or stopped early)."""

    params: Mapping[str, Any]  # searched parameters without the seed
    trials: tuple[TrialRecord, ...]  # sorted by seed, then name
    score: Stats  # the study metric at each trial's last report
    group: str  # "completed" | "stopped early"

    @property
    def seeds(self) -> tuple[Any, ...]:
        return tuple(seed_of(t) for t in self.trials)

    @property
    def order(self) -> float:
        orders = [t.order for t in self.trials if t.order is not None]
        return min(orders) if orders else math.inf

    def final(self, key: str) -> Stats:
        """A final (target val) metric over the replicates."""
        return stats(t.final.get(key, math.nan) for t in self.trials)

    def representative(self, mode: str) -> TrialRecord:
        """The replicate whose run config stands for the configuration (``best_config.toml``): the median one,
        so that the file does not follow the luckiest seed (lower median on ties, then start order)."""
        sign = -1.0 if mode == "max" else 1.0
        ranked = sorted(self.trials, key=lambda t: (sign * (t.metric if t.metric is not None else -math.inf),
                                                    t.order if t.order is not None else math.inf, t.name))
        return ranked[len(ranked) // 2]


def seed_of(trial: TrialRecord) -> Any:
    seeds = [v for k, v in trial.params.items() if is_seed(k)]
    return seeds[0] if seeds else None


def _scored(trial: TrialRecord) -> bool:
    return (trial.metric is not None and math.isfinite(trial.metric)
            and trial.status not in ("failed", "diverged", "running"))


def aggregate(trials: Iterable[TrialRecord], *, group: str) -> list[ConfigAggregate]:
    """Group scored trials by configuration (insertion order of first appearance)."""
    groups: dict[str, list[TrialRecord]] = {}
    for t in trials:
        if _scored(t):
            groups.setdefault(config_key(t.params), []).append(t)
    out = []
    for members in groups.values():
        members.sort(key=lambda t: (str(seed_of(t)), t.name))
        params = {k: v for k, v in sorted(members[0].params.items()) if not is_seed(k)}
        out.append(ConfigAggregate(params=params, trials=tuple(members), score=stats(t.metric for t in members),
                                   group=group))
    return out


def rank_configs(configs: Sequence[ConfigAggregate], mode: str) -> list[ConfigAggregate]:
    """Best mean first; ties: more replicates, then start order."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(configs, key=lambda c: (sign * c.score.mean, -c.score.n, c.order))


def completed_and_stopped(data: StudyData) -> tuple[list[ConfigAggregate], list[ConfigAggregate]]:
    """Completed configurations ranked at their final evaluation; stopped-early ones ranked among themselves."""
    completed = aggregate((t for t in data.trials if t.status == "completed"), group="completed")
    stopped = aggregate((t for t in data.trials if t.status in ("pruned", "stopped")), group="stopped early")
    return rank_configs(completed, data.mode), rank_configs(stopped, data.mode)


def shared_budget(trials: Iterable[TrialRecord]) -> int | None:
    """The largest evaluation round every scored trial reported at (their shared budget)."""
    rounds = [max(x for x, _ in t.curve) for t in trials if _scored(t) and t.curve]
    return min(rounds) if rounds else None


def at_round(trial: TrialRecord, round_: int) -> float | None:
    """The study metric a trial reported at evaluation round ``round_`` (None if it did not report then)."""
    for x, y in trial.curve:
        if x == round_:
            return y
    return None


def equal_budget(data: StudyData) -> tuple[int | None, list[ConfigAggregate]]:
    """Every scored configuration ranked by its metric at the shared budget (completed and stopped together: at
    that round they have all trained equally long)."""
    scored = [t for t in data.trials if _scored(t)]
    budget = shared_budget(scored)
    if budget is None:
        return None, []
    groups: dict[str, list[TrialRecord]] = {}
    for t in scored:
        groups.setdefault(config_key(t.params), []).append(t)
    out = []
    for members in groups.values():
        members.sort(key=lambda t: (str(seed_of(t)), t.name))
        params = {k: v for k, v in sorted(members[0].params.items()) if not is_seed(k)}
        out.append(ConfigAggregate(params=params, trials=tuple(members),
                                   score=stats(at_round(t, budget) for t in members), group=f"round {budget}"))
    return budget, rank_configs(out, data.mode)


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed paired difference of a configuration against its λ_adv = 0 control (same other parameters)."""

    config: ConfigAggregate
    control: ConfigAggregate
    seeds: tuple[Any, ...]  # the seeds both have
    difference: Stats


def paired_vs_control(configs: Sequence[ConfigAggregate], *, key: str | None = None) -> list[PairedDifference]:
    """Each configuration with λ_adv != 0 against the λ_adv = 0 configuration that matches it on every other
    parameter, paired by seed. ``key``: a final metric (``val/mIoU16``) instead of the study metric."""
    def rest(c: ConfigAggregate) -> str:
        return json.dumps({k: v for k, v in c.params.items() if k != LAMBDA_KEY}, sort_keys=True, default=str)

    controls = {rest(c): c for c in configs if _is_zero(c.params.get(LAMBDA_KEY))}
    out = []
    for c in configs:
        if LAMBDA_KEY not in c.params or _is_zero(c.params[LAMBDA_KEY]) or rest(c) not in controls:
            continue
        control = controls[rest(c)]

        def value(t: TrialRecord) -> float | None:
            return t.metric if key is None else t.final.get(key)

        mine = {seed_of(t): value(t) for t in c.trials}
        theirs = {seed_of(t): value(t) for t in control.trials}
        seeds = tuple(s for s in mine if s in theirs and mine[s] is not None and theirs[s] is not None)
        out.append(PairedDifference(config=c, control=control, seeds=seeds,
                                    difference=stats(mine[s] - theirs[s] for s in seeds)))
    return out


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
