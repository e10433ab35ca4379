"""PBT/PB2 settings and the rules a population-based study must meet (``scheduler.kind = "pbt" | "pb2"``): the
``[scheduler.pbt]`` table, the keys a member may mutate and their bounds from the study's space. Pure config, no
Ray: ``study.config.study_config`` checks a study with :func:`check_pbt` when it loads it; ``study.run.pbt``
builds Ray's schedulers from the same settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from trainables.config import ConfigError, from_dict

if TYPE_CHECKING:
    from study.config.study_config import StudyConfig

__all__ = ["PBT_KINDS", "MUTABLE_KEYS", "PBTSettings", "Bounds", "pbt_settings", "check_pbt", "mutation_bounds",
           "POPULATION_FILE", "pb2_available", "PB2_AVAILABLE_HINT"]

PBT_KINDS = ("pbt", "pb2")
# What a PBT member may change while it trains: the adversarial weights and both learning rates. Everything else
# (backbone, batch size, loss) defines the network or the data, so a clone could not continue the donor's state.
MUTABLE_KEYS = ("adapt.lambda_adv_main", "adapt.lambda_adv_aux", "optim.lr", "adapt.lr_d")
POPULATION_FILE = "pbt_population.json"
PB2_AVAILABLE_HINT = "install scikit-learn for PB2's Gaussian process"


@dataclass(frozen=True)
class PBTSettings:
    """The ``[scheduler.pbt]`` table. Intervals count evaluations (Ray's ``training_iteration``)."""

    perturbation_interval: int = 1
    burn_in: int = 0  # evaluations before the first exploit (Ray's burn_in_period)
    quantile_fraction: float = 0.25  # bottom fraction that clones the top fraction (Ray: at most 0.5)
    resample_probability: float = 0.25  # PBT explore: resample from the bounds, else multiply by a factor
    perturbation_factors: tuple[float, ...] = (1.2, 0.8)
    synch: bool = False  # wait for the whole population at each interval
    mutate: tuple[str, ...] = ()  # config keys to mutate; empty: every one of MUTABLE_KEYS the space searches


@dataclass(frozen=True)
class Bounds:
    """A mutated dimension: the space's name (the trial config key), the run-config key and its range."""

    name: str
    key: str
    low: float
    high: float
    log: bool = True


def _check(ok: bool, source: str, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(source, key, value, allowed)


def pb2_available() -> bool:
    """PB2's Gaussian process is scikit-learn's (``ray/tune/schedulers/pb2.py`` in Ray 2.60 imports sklearn)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def pbt_settings(study: StudyConfig, source: str = "<study>") -> PBTSettings:
    table = study.scheduler.pbt
    _check(isinstance(table, Mapping), source, "scheduler.pbt", table, "a table of PBT settings")
    return from_dict(PBTSettings, table, source=source, prefix="scheduler.pbt")


def mutation_bounds(study: StudyConfig, settings: PBTSettings | None = None,
                    source: str = "<study>") -> list[Bounds]:
    """The dimensions PBT mutates, with the bounds the study's space gives them (``[search.params]``)."""
    settings = settings or pbt_settings(study, source)
    dims = study.describe_space()["dimensions"]
    bounds: dict[str, Bounds] = {}
    for name, variants in dims.items():
        key = variants[0]["applies_to"]
        if key not in MUTABLE_KEYS or (settings.mutate and key not in settings.mutate):
            continue
        _check(len(variants) == 1 and not variants[0]["when"], source, "search.space", study.search.space,
               f"a space where {name} has one range: PBT cannot mutate a dimension whose range depends on another "
               f"choice ({[v['when'] for v in variants]})")
        v = variants[0]
        _check(v.get("type") == "float", source, "search.space", study.search.space,
               f"a continuous range for {name} (PBT perturbs by factors; got {v.get('type')})")
        bounds[key] = Bounds(name, key, float(v["low"]), float(v["high"]), bool(v.get("log", False)))
    for key in settings.mutate:
        _check(key in MUTABLE_KEYS, source, "scheduler.pbt.mutate", key, f"one of {', '.join(MUTABLE_KEYS)}")
        _check(key in bounds, source, "scheduler.pbt.mutate", key,
               f"a key the space {study.search.space!r} searches ({', '.join(b for b in bounds) or 'none'}): "
               "its bounds come from the space")
    _check(bool(bounds), source, "search.space", study.search.space,
           f"a space searching at least one of {', '.join(MUTABLE_KEYS)} (e.g. 'lambda_lr', 'lambda_adv_levels')")
    return list(bounds.values())


def check_pbt(study: StudyConfig, source: str) -> None:
    """Every rule a PBT/PB2 study must meet, with errors naming the key, the value and what is allowed."""
    kind = study.scheduler.kind
    _check(kind in PBT_KINDS, source, "scheduler.pbt", study.scheduler.pbt,
           f"only with scheduler.kind = 'pbt' or 'pb2' (kind is {kind!r})")
    _check(study.train.adapt.mode == "adversarial", source, "train.adapt.mode", study.train.adapt.mode,
           f"'adversarial' with scheduler.kind = {kind!r} (PBT schedules λ_adv and the learning rates of G and D)")
    _check(not study.search.seeds, source, "search.seeds", study.search.seeds,
           f"unset with scheduler.kind = {kind!r} (a member's seed is part of the state it clones; run several "
           "studies with different search.seed for population seeds)")
    _check(study.search.sampler != "grid", source, "search.sampler", study.search.sampler,
           f"'tpe' or 'random' with scheduler.kind = {kind!r}: PBT mutates within continuous bounds")
    _check(study.num_samples >= 2, source, "num_samples", study.num_samples,
           ">= 2: the population size (a member can only clone another)")
    settings = pbt_settings(study, source)
    max_t = study.max_t
    _check(1 <= settings.perturbation_interval < max_t, source, "scheduler.pbt.perturbation_interval",
           settings.perturbation_interval, f"1..{max_t - 1} evaluations (max_t = {max_t}: a perturbation at the "
           "end changes nothing)")
    _check(settings.perturbation_interval % study.checkpoint_every == 0, source,
           "scheduler.pbt.perturbation_interval", settings.perturbation_interval,
           f"a multiple of checkpoint_every ({study.checkpoint_every}): an exploit clones the donor's latest checkpoint")
    _check(0 <= settings.burn_in < max_t, source, "scheduler.pbt.burn_in", settings.burn_in, f"0..{max_t - 1}")
    _check(0 < settings.quantile_fraction <= 0.5, source, "scheduler.pbt.quantile_fraction",
           settings.quantile_fraction, "in (0, 0.5] (Ray's PopulationBasedTraining)")
    _check(0 <= settings.resample_probability <= 1, source, "scheduler.pbt.resample_probability",
           settings.resample_probability, "in [0, 1]")
    _check(len(settings.perturbation_factors) >= 1 and all(f > 0 for f in settings.perturbation_factors), source,
           "scheduler.pbt.perturbation_factors", list(settings.perturbation_factors), "positive factors, e.g. [1.2, 0.8]")
    _check(study.checkpoints_to_keep >= 3, source, "checkpoints_to_keep", study.checkpoints_to_keep,
           f">= 3 with scheduler.kind = {kind!r}: a donor's checkpoint must outlive the clone's restart (Ray warns "
           "that num_to_keep <= 2 loses them)")
    mutation_bounds(study, settings, source)
    if kind == "pb2":
        _check(settings.burn_in == 0, source, "scheduler.pbt.burn_in", settings.burn_in,
               "0 with scheduler.kind = 'pb2' (Ray 2.60's PB2 has no burn-in period)")
        _check(pb2_available(), source, "scheduler.kind", kind,
               f"'pbt', or {PB2_AVAILABLE_HINT} (Ray 2.60's PB2 imports sklearn.gaussian_process): "
               "pip install 'dastudy[pb2]' (scikit-learn)")
