"""``dastudy study compare A B``: two finished studies side by side.

What a researcher asks of two studies (a rerun on other hardware, a code change, another data split): do the same
configurations score the same? Both studies are read from their directories alone (as ``study report`` does), on
their completed trials (a trial stopped early was scored at a smaller budget, :mod:`study.report.aggregate`).

- each study's configurations: mean of the study metric over seeds with its 95 % Student-t interval
  (``scipy.stats.t``), best first;
- configurations present in both (same searched values, seed left out): B − A per seed on the seeds both ran
  (same seed = same initialisation and data order, so the difference removes the seed-to-seed variation both
  share), mean with its 95 % t-interval and a two-sided paired t-test (``scipy.stats.ttest_rel``);
- what matches nothing is said in one line, with the searched parameters of each side.

Numbers in percent, as the report shows them; ``--json`` gives fractions, as ``study report --json`` does.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Interval", "Side", "Matched", "Comparison", "compare_studies", "register_compare", "t_interval"]


@dataclass(frozen=True)
class Interval:
    """Mean, sample sd, n and the 95 % Student-t interval half-width (NaN where n < 2)."""

    mean: float
    sd: float
    n: int
    half: float

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"mean": num(self.mean), "sd": num(self.sd), "n": self.n, "ci95": num(self.half)}


def t_interval(values: Sequence[float]) -> Interval:
    from scipy import stats

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Interval(mean, sd, n, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n))


@dataclass(frozen=True)
class Side:
    """One study's completed configurations: (label, params, seed → score, interval), best first."""

    name: str
    metric: str
    searched: tuple[str, ...]
    configs: tuple[tuple[str, Mapping[str, Any], Mapping[Any, float], Interval], ...]


@dataclass(frozen=True)
class Matched:
    label: str
    a: Interval
    b: Interval
    seeds: tuple[Any, ...]  # the seeds both ran
    difference: Interval  # B − A over those seeds
    p_value: float  # two-sided paired t-test; NaN with fewer than 2 pairs


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    matched: tuple[Matched, ...]
    only_a: int
    only_b: int

    def to_json(self) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            return {"study": s.name, "metric": s.metric, "searched": list(s.searched),
                    "configurations": [{"label": label, "params": dict(params), **iv.to_json()}
                                       for label, params, _, iv in s.configs]}

        return {"a": side(self.a), "b": side(self.b), "only_a": self.only_a, "only_b": self.only_b,
                "matched": [{"label": m.label, "a": m.a.to_json(), "b": m.b.to_json(), "seeds": list(m.seeds),
                             "difference_b_minus_a": m.difference.to_json(),
                             "p_value": m.p_value if math.isfinite(m.p_value) else None} for m in self.matched]}


def _side(study_dir: Path) -> Side:
    from study.config.labels import trial_label
    from study.report import load_study
    from study.report.aggregate import completed_and_stopped, is_seed, seed_of

    data = load_study(study_dir)
    completed, _stopped = completed_and_stopped(data)
    names = {n for t in data.trials for n in t.params if not is_seed(n)}
    try:  # the space's order, as the labels everywhere else
        declared = list(json.loads((study_dir / "space.json").read_text()).get("dimensions", {}))
    except (OSError, ValueError, AttributeError):
        declared = []
    searched = tuple([n for n in declared if n in names] + sorted(names - set(declared)))
    configs = []
    for c in completed:
        scores = {seed_of(t): t.metric for t in c.trials}
        label = trial_label(None, c.params, searched) or "(no searched parameter)"
        configs.append((label, dict(c.params), scores, t_interval(list(scores.values()))))
    sign = -1.0 if data.mode == "max" else 1.0
    configs.sort(key=lambda row: (sign * row[3].mean, -row[3].n, row[0]))
    return Side(name=data.name, metric=data.metric, searched=searched, configs=tuple(configs))


def compare_studies(a_dir: str | Path, b_dir: str | Path) -> Comparison:
    """Both studies' completed configurations and, where a configuration is in both, B − A paired by seed."""
    from scipy import stats

    from study.errors import UserError
    from study.report.aggregate import config_key

    a, b = _side(Path(a_dir)), _side(Path(b_dir))
    if a.metric != b.metric:
        raise UserError(f"study {a.name!r} is scored on {a.metric} and study {b.name!r} on {b.metric}: compare "
                        "studies with the same metric")
    b_by_key = {config_key(params): (label, params, scores, iv) for label, params, scores, iv in b.configs}
    matched = []
    for label, params, scores_a, iv_a in a.configs:
        other = b_by_key.get(config_key(params))
        if other is None:
            continue
        scores_b = other[2]
        seeds = tuple(s for s in scores_a if s in scores_b)
        diffs = [scores_b[s] - scores_a[s] for s in seeds]
        p = math.nan  # fewer than two pairs, or differences without spread (t undefined): no test
        if len(seeds) >= 2 and len(set(diffs)) > 1:
            p = float(stats.ttest_rel([scores_b[s] for s in seeds], [scores_a[s] for s in seeds]).pvalue)
        matched.append(Matched(label=label, a=iv_a, b=other[3], seeds=seeds, difference=t_interval(diffs),
                               p_value=p))
    return Comparison(a=a, b=b, matched=tuple(matched), only_a=len(a.configs) - len(matched),
                      only_b=len(b.configs) - len(matched))


def _pct(iv: Interval, *, signed: bool = False) -> str:
    if iv.n == 0:
        return "n/a"
    mean = f"{100 * iv.mean:+.2f}" if signed else f"{100 * iv.mean:.2f}"
    if iv.n < 2:
        return f"{mean} (n=1, no interval)"
    return f"{mean} [{100 * (iv.mean - iv.half):.2f}, {100 * (iv.mean + iv.half):.2f}] (n={iv.n})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *rows)]


def format_comparison(c: Comparison, *, top: int = 10) -> str:
    from study.config.labels import percent_name
    from study.config.spaces import param_label

    metric = percent_name(c.a.metric)
    lines = [f"{c.a.name} (A) vs {c.b.name} (B): {metric}, completed trials, mean [95 % t-interval] (n seeds)"]
    for tag, side in (("A", c.a), ("B", c.b)):
        lines += ["", f"{tag} {side.name}: {len(side.configs)} completed configuration(s)"
                      + (f", best {top} shown" if len(side.configs) > top else "")]
        if side.configs:
            lines += ["  " + ln for ln in _table(["configuration", metric],
                                                  [[label, _pct(iv)] for label, _, _, iv in side.configs[:top]])]
    lines.append("")
    if not c.matched:
        names = (", ".join(param_label(n) for n in c.a.searched) or "nothing",
                 ", ".join(param_label(n) for n in c.b.searched) or "nothing")
        lines.append(f"no configuration of A matches one of B: nothing to pair (A searches {names[0]}; B searches "
                     f"{names[1]}; configurations match when every searched value is equal, as on a shared grid)")
        return "\n".join(lines)
    lines.append(f"in both: {len(c.matched)} configuration(s) (only in A: {c.only_a}, only in B: {c.only_b}); "
                 "B − A paired by seed, in points")
    rows = [[m.label, _pct(m.a), _pct(m.b), ", ".join(map(str, m.seeds)) or "none", _pct(m.difference, signed=True),
             f"{m.p_value:.2g}" if math.isfinite(m.p_value) else "n/a"] for m in c.matched]
    lines += ["  " + ln for ln in _table(["configuration", "A", "B", "paired seeds", "B − A", "p (paired t)"], rows)]
    if any(not m.seeds for m in c.matched):
        lines.append("  (a configuration without a shared seed has no paired difference)")
    return "\n".join(lines)


def register_compare(sub: Any, add_storage: Callable[[argparse.ArgumentParser], None],
                     study_home: Callable[[str, str | None], Path]) -> None:
    """Add ``compare`` to the ``dastudy study`` actions (``study_home`` finds a study by name or path)."""
    compare = sub.add_parser(
        "compare", help="two studies side by side (configuration means, paired differences)",
        description="Compare two finished studies: each one's configurations (mean of the study metric over seeds "
                    "with a 95 % Student-t interval), and for the configurations both ran, B − A paired by seed "
                    "with its interval and a paired t-test. Reads only the two study directories.")
    compare.add_argument("a", metavar="A", help="a study name in the storage, or its directory")
    compare.add_argument("b", metavar="B", help="the study compared with A")
    compare.add_argument("--top", type=int, default=10, help="configurations listed per study (default 10)")
    compare.add_argument("--json", action="store_true", help="the comparison as JSON (fractions, not percent)")
    add_storage(compare)

    def run(args: argparse.Namespace) -> int:
        from study.errors import UserError
        from study.report import ReportError

        if args.top < 1:
            raise UserError(f"--top = {args.top} is not valid; allowed: an integer >= 1")
        try:
            result = compare_studies(study_home(args.a, args.storage), study_home(args.b, args.storage))
        except ReportError as err:
            raise UserError(str(err)) from None
        print(json.dumps(result.to_json(), indent=2, sort_keys=True) if args.json
              else format_comparison(result, top=args.top))
        return 0

    compare.set_defaults(func=run)
