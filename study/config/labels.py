"""One name per trial and one unit per metric, for every view of a study.

A trial is shown the same way in the CLI, the report (tables, figure legends), TensorBoard's run list and
optuna-dashboard (the Optuna user attribute ``label``): its Optuna trial number, which orders trials by when they
started, followed by its searched values with short symbols, e.g. ``#6 λ=0.0291 lr=0.0429 seed=1``. The number
makes the label unique (two trials may sample the same values); the values say what the trial is without a lookup.
Ray's ``trial_<id>`` stays the name of the trial's directory only (shown beside the label where a user needs a
path: ``study status``'s ``dir`` column, the report's ``dir`` column, an ``error.txt`` path).

Replicates (``search.seeds``): Optuna has one trial per *configuration*, run once per seed by as many Ray trials.
optuna-dashboard's label is the configuration's, ``#6 λ=0.0291 lr=0.0429``; each replicate is that label with its
seed, ``#6 λ=0.0291 lr=0.0429 seed=2`` (the number is the configuration's, shared by its seeds; the seed tells them
apart). ``study status`` lists configurations (the dashboard's rows); the report, TensorBoard and the progress lines
list replicates.

mIoU and IoU are shown in percent everywhere, with the unit in the name (``val/mIoU16 %``); the study metric
itself stays a fraction in ``result.json``, the Optuna journal and ``--json`` output (what programs read).

This module imports nothing from the rest of ``study`` except the parameter display names
(:func:`trainables.tensorboard.param_label`), so the report, TensorBoard and the searcher can all import it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from trainables.tensorboard import param_label, percent_tag

__all__ = ["SYMBOLS", "SEED_KEY", "symbol", "format_value", "trial_label", "percent_name", "pct"]

# Display name (trainables.tensorboard.PARAM_LABELS) → the short symbol a label uses. λ_adv is the paper's λ_adv
# (AdaptSegNet, https://arxiv.org/abs/1802.10349, eq. 3); the backbone is shown by its value alone.
SYMBOLS: dict[str, str] = {
    "lambda_adv": "λ",
    "lambda_adv_aux": "λ_aux",
    "lambda_target": "λ_t",
    "lr_d": "lr_D",
    "lr": "lr",
    "seed": "seed",
    "backbone": "",
}

SEED_KEY = "runtime.seed"  # a replicate's run seed (study.run.replicates.SEED_KEY)


def symbol(name: str) -> str:
    """``adapt.lambda_adv_main`` / ``lambda_adv`` → ``λ``; ``optim.lr@deeplabv2_tiny`` → ``lr``; a parameter
    without a symbol keeps its display name."""
    label = param_label(name)
    return SYMBOLS.get(label, label)


def format_value(value: Any) -> str:
    """Three significant digits for floats (``0.0291``, ``2.5e-04`` stays ``0.00025``), the rest as text."""
    if isinstance(value, float) and not isinstance(value, bool):
        if value == 0 or not math.isfinite(value):
            return f"{value:g}"
        return f"{value:.3g}"
    return str(value)


def trial_label(number: int | None, params: Mapping[str, Any], dimensions: Sequence[str] | None = None,
                *, fallback: str = "", seed: Any = None) -> str:
    """``#6 λ=0.0291 lr=0.0429 seed=1``: the Optuna trial number and the searched values, in ``dimensions``' order
    (default: the order of ``params``). ``number`` None (a trial Optuna never numbered): ``fallback`` (e.g. the Ray
    trial id) takes its place. ``seed``: a replicate's seed (``search.seeds``, not a searched dimension), shown
    last as ``seed=S`` unless a searched seed is already shown."""
    names = [n for n in (dimensions if dimensions is not None else params) if n in params]
    parts = []
    for name in names:
        sym = symbol(name)
        value = format_value(params[name])
        parts.append(value if not sym else f"{sym}={value}")
    if seed is not None and not any(symbol(n) == symbol(SEED_KEY) for n in names):
        parts.append(f"{symbol(SEED_KEY)}={format_value(seed)}")
    head = f"#{number}" if number is not None else fallback
    return " ".join(p for p in (head, *parts) if p)


def percent_name(metric: str) -> str:
    """The name a metric is shown under: ``val/mIoU16`` → ``val/mIoU16 %`` (IoU metrics are shown in percent);
    any other metric keeps its name."""
    return percent_tag(metric) or metric


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction in percent (``0.15086`` → ``15.09``); ``n/a`` when missing."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.{digits}f}"
