"""Population-based training of the adversarial weights and learning rates (``scheduler.kind = "pbt" | "pb2"``).

PBT (Jaderberg et al. 2017, https://arxiv.org/abs/1711.09846) trains a population at once; every
``perturbation_interval`` evaluations the bottom ``quantile_fraction`` of the members restart from the latest
full-state checkpoint of a top member (exploit) with its hyperparameters resampled or multiplied by a factor
(explore), so each member follows a *schedule* of λ_adv and learning rates. PB2 (Parker-Holder et al. 2020,
https://arxiv.org/abs/2002.02518) replaces the random explore with a GP bandit over the same bounds. Both are Ray
Tune's own schedulers (``ray.tune.schedulers.PopulationBasedTraining`` / ``PB2``); this module builds them from a
study, and the trainable (``trainables/tune.py``) restarts a cloned member through the engine's resume path.

How Optuna fits: Ray 2.60 refuses any search algorithm beside PBT (``PopulationBasedTraining.on_trial_add``), and
a PBT member does not run with one configuration, so no Optuna trial is created or told. The *initial* population
is drawn by the study's own sampler (seeded) over its own space, in an in-memory Optuna study, and written to
``<study>/pbt_population.json``; the study's Optuna storage holds an empty study whose user attribute
``scheduler`` says "pbt" and where the schedules are. The schedules themselves are in each trial's
``run/lineage.jsonl`` (:mod:`trainables.lineage`) and in Ray's ``pbt_policy_*.txt``.

Time unit: ``training_iteration``, one evaluation (every ``train.eval.interval`` engine iterations), the same unit
as ASHA's ``max_t``; so a perturbation always lands on an evaluation, where the member reports a checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.config import ConfigError
from study.config.pbt_settings import (MUTABLE_KEYS, PB2_AVAILABLE_HINT, PBT_KINDS, POPULATION_FILE,  # noqa: F401
                                       Bounds, PBTSettings, check_pbt, mutation_bounds, pb2_available,
                                       pbt_settings)

if TYPE_CHECKING:
    from study.config.study_config import StudyConfig

__all__ = ["BoundedExplore", "build_pbt_scheduler", "initial_population", "pbt_parts", "PBTParts", "pbt_context"]


@dataclass(frozen=True)
class BoundedExplore:
    """Ray's ``custom_explore_fn``: after PBT's explore (resample, or a factor such as 1.2 that can leave the
    range), clip every mutated value into the space's bounds. A picklable object: Ray pickles the scheduler."""

    bounds: tuple[Bounds, ...]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for b in self.bounds:
            if b.name in config:
                config[b.name] = min(b.high, max(b.low, float(config[b.name])))
        return config


def build_pbt_scheduler(study: StudyConfig):
    """Ray's PopulationBasedTraining (or PB2) for ``study``; metric and mode come from the TuneConfig."""
    from ray import tune

    settings = pbt_settings(study)
    bounds = mutation_bounds(study, settings)
    common = dict(time_attr="training_iteration", perturbation_interval=settings.perturbation_interval,
                  quantile_fraction=settings.quantile_fraction,
                  log_config=True, synch=settings.synch, custom_explore_fn=BoundedExplore(tuple(bounds)))
    if study.scheduler.kind == "pb2":
        if not pb2_available():
            raise ConfigError(getattr(study, "source", "<study>"), "scheduler.kind", "pb2",
                              f"'pbt', or {PB2_AVAILABLE_HINT}: pip install 'dastudy[pb2]' (scikit-learn)")
        from study.run.pbt_ray import StudyPB2

        return StudyPB2(max_t=study.max_t, hyperparam_bounds={b.name: [b.low, b.high] for b in bounds}, **common)
    from study.run.pbt_ray import StudyPBT

    mutations = {b.name: (tune.loguniform if b.log else tune.uniform)(b.low, b.high) for b in bounds}
    return StudyPBT(max_t=study.max_t, hyperparam_mutations=mutations, burn_in_period=settings.burn_in,
                    resample_probability=settings.resample_probability,
                    perturbation_factors=tuple(settings.perturbation_factors), **common)


def pbt_context(study: StudyConfig, context):
    """The trial context (``trainables.tune.TrialContext``) of a PBT study carries the mutated config keys: a member
    restarted from a donor's checkpoint may differ from it in exactly these (unchanged for other studies)."""
    if study.scheduler.kind not in PBT_KINDS:
        return context
    import dataclasses

    from trainables.lineage import PBT_MUTABLE_KEY

    keys = tuple(b.key for b in mutation_bounds(study))
    return dataclasses.replace(context, extra={**context.extra, PBT_MUTABLE_KEY: keys})


def initial_population(study: StudyConfig, define, sampler) -> list[dict[str, Any]]:
    """``num_samples`` configurations drawn by the study's sampler over its space (an in-memory Optuna study: the
    members are never told back, since none runs with a constant configuration)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        draw = optuna.create_study(direction="maximize" if study.mode == "max" else "minimize", sampler=sampler)
    population = []
    for _ in range(study.num_samples):
        trial = draw.ask()
        constants = define(trial) or {}
        population.append({**trial.params, **constants})
    return population


@dataclass
class PBTParts:
    """What :func:`study.run.tuner.build_tuner` needs for a PBT study."""

    searcher: Any
    scheduler: Any
    mutable_keys: tuple[str, ...]
    population: list[dict[str, Any]] = field(default_factory=list)


def pbt_parts(study: StudyConfig, *, define, sampler, home: Path | None, ot_study=None) -> PBTParts:
    """The searcher (Ray's BasicVariantGenerator over the drawn initial population: Ray refuses any other beside
    PBT), the scheduler and the mutated config keys; writes ``pbt_population.json`` into ``home``."""
    population = initial_population(study, define, sampler)
    bounds = mutation_bounds(study)
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        (home / POPULATION_FILE).write_text(json.dumps({
            "scheduler": study.scheduler.kind, "sampler": study.search.sampler, "sampler_seed": study.search.seed,
            "mutations": [{"name": b.name, "key": b.key, "low": b.low, "high": b.high, "log": b.log} for b in bounds],
            "population": population}, indent=1))
    if ot_study is not None:  # optuna-dashboard / `study status` must not read constant configurations into it
        ot_study.set_user_attr("scheduler", study.scheduler.kind)
        ot_study.set_user_attr("schedules", "members' hyperparameters are schedules: see <trial>/run/lineage.jsonl "
                               f"and {POPULATION_FILE}; no Optuna trial is created for a PBT member")
    from study.run.pbt_ray import PopulationGenerator

    return PBTParts(PopulationGenerator(population), build_pbt_scheduler(study), tuple(b.key for b in bounds),
                    population)
