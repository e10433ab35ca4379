"""Statistics of validator agreement (:mod:`study.report.agreement`): rank correlations from ``scipy.stats``, a two-stage
(configuration, then seed) bootstrap with percentile intervals, the configuration/seed variance split, and ties.

Trials that differ only in the seed are replicates of one configuration, not independent models: resampling the
trials as if they were independent understates the uncertainty whenever the seed moves the metric. The bootstrap
here resamples configurations with replacement and then the seeds within each drawn configuration (the two-stage
cluster bootstrap: Davison & Hinkley 1997, "Bootstrap Methods and their Application", Sec. 3.8; Field & Welsh
2007, "Bootstrapping clustered data", JRSS B 69:369). Only numpy and scipy: ``study report`` never loads torch.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = ["rank_correlations", "cluster_resamples", "bootstrap_correlations", "Interval", "percentile_interval",
           "VarianceSplit", "variance_split", "tied_best", "resampled", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED"]

BOOTSTRAP_RESAMPLES = 2000  # percentile-interval ends move by about ±0.01 between generators at this count
BOOTSTRAP_SEED = 0


def tied_best(values: np.ndarray) -> np.ndarray:
    """Indices of every finite maximum of ``values`` (empty where none is finite)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(0, dtype=int)
    return np.flatnonzero(finite & (values == values[finite].max()))


def rank_correlations(x, y) -> tuple[float, float]:
    """Spearman ρ and Kendall τ-b (``scipy.stats``) over the pairs where both are finite; NaN below 2 pairs or for
    a constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan, math.nan
    return float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)


def cluster_resamples(groups: Sequence[str], *, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Two-stage bootstrap resamples of items grouped by ``groups`` (one label per item): draw as many groups as
    there are, with replacement; within each drawn group draw as many of its items as it holds, with replacement.
    Returns a (resamples, m) matrix of item indices, rows padded with −1 (their lengths differ when groups do)."""
    return _cluster_resamples(tuple(groups), resamples, seed).copy()


@functools.lru_cache(maxsize=16)  # the validators of one study share their trials, hence their resamples
def _cluster_resamples(groups: tuple[str, ...], resamples: int, seed: int) -> np.ndarray:
    labels = sorted(set(groups))
    code = np.asarray([labels.index(g) for g in groups], dtype=np.int64)
    members = np.argsort(code, kind="stable")  # item indices, group by group
    sizes = np.bincount(code, minlength=len(labels))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(labels), (resamples, len(labels)))  # stage 1: configurations
    lengths = sizes[drawn].sum(axis=1)
    out = np.full((resamples, int(lengths.max()) if resamples else 0), -1, dtype=np.int64)
    uniform = rng.random(out.shape)
    for b in range(resamples):
        group = np.repeat(drawn[b], sizes[drawn[b]])
        # stage 2: as many seeds as the configuration holds, drawn from its own, with replacement
        pick = (uniform[b, :len(group)] * sizes[group]).astype(np.int64)
        out[b, :len(group)] = members[starts[group] + pick]
    return out


def resampled(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values`` at the resamples' indices (a matrix like ``index``), NaN at the −1 padding."""
    return np.where(index >= 0, values[np.maximum(index, 0)], np.nan)


def bootstrap_correlations(x, y, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman ρ and Kendall τ-b of every resample (rows of ``index``, −1 = padding), all resamples at once.

    The same statistics as :func:`rank_correlations` (tested equal on each resample): ρ is the Pearson correlation
    of the tie-averaged ranks of ``scipy.stats.rankdata``; τ-b = Σ sign(Δx)·sign(Δy) / √(untied-x pairs ·
    untied-y pairs). One scipy call per resample cost 5–10 ms on the loaded 2-core machine, 10–20 s per report."""
    x, y = resampled(np.asarray(x, dtype=np.float64), index), resampled(np.asarray(y, dtype=np.float64), index)
    rx = stats.rankdata(x, axis=1, nan_policy="omit")
    ry = stats.rankdata(y, axis=1, nan_policy="omit")
    with np.errstate(invalid="ignore", divide="ignore"):
        rx, ry = rx - np.nanmean(rx, axis=1, keepdims=True), ry - np.nanmean(ry, axis=1, keepdims=True)
        rho = np.nansum(rx * ry, axis=1) / np.sqrt(np.nansum(rx * rx, axis=1) * np.nansum(ry * ry, axis=1))
        tau = np.full(len(index), np.nan)  # (np.empty: a resample the loop missed would hold old memory)
        step = max(1, 4_000_000 // max(1, index.shape[1] ** 2))  # bounds the pair matrices' memory
        for start in range(0, len(index), step):
            sx = np.nan_to_num(np.sign(x[start:start + step, :, None] - x[start:start + step, None, :]))
            sy = np.nan_to_num(np.sign(y[start:start + step, :, None] - y[start:start + step, None, :]))
            tau[start:start + step] = ((sx * sy).sum(axis=(1, 2))
                                       / np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2))))
    return rho, tau


@dataclass(frozen=True)
class Interval:
    """A statistic and its 95 % bootstrap percentile interval (NaN ends where fewer than half of the resamples
    define the statistic, e.g. one configuration)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    def text(self, scale: float = 1.0) -> str:
        if not math.isfinite(self.value):
            return "n/a"
        ends = f" [{self.low * scale:+.2f}, {self.high * scale:+.2f}]" if math.isfinite(self.low) else ""
        return f"{self.value * scale:+.2f}{ends}"


def percentile_interval(value: float, draws: np.ndarray) -> Interval:
    """The 2.5 and 97.5 percentiles of the finite bootstrap ``draws`` around ``value`` (no ends where fewer than half
    of the draws are finite)."""
    finite = draws[np.isfinite(draws)]
    if not math.isfinite(value) or len(finite) < len(draws) / 2:
        return Interval(value)
    low, high = np.percentile(finite, [2.5, 97.5])
    return Interval(value, float(low), float(high))


@dataclass(frozen=True)
class VarianceSplit:
    """Shares of the sum of squares of a metric around its mean: between configuration means and within
    configurations (seed). With n seeds per configuration the between part also holds 1/n of the seed variance."""

    configuration: float
    seed: float
    trials: int
    configurations: int


def variance_split(values, groups: Sequence[str]) -> VarianceSplit:
    """:class:`VarianceSplit` of the finite ``values`` grouped by configuration label (NaN shares below 2 values
    or for a constant)."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    values, labels = values[keep], [g for g, k in zip(groups, keep) if k]
    distinct = sorted(set(labels))
    total = float(((values - values.mean()) ** 2).sum()) if len(values) else 0.0
    if len(values) < 2 or total == 0.0:
        return VarianceSplit(math.nan, math.nan, len(values), len(distinct))
    within = sum(float(((v - v.mean()) ** 2).sum()) for v in
                 (values[[lab == g for lab in labels]] for g in distinct))
    return VarianceSplit((total - within) / total, within / total, len(values), len(distinct))
