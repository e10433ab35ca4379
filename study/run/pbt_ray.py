"""The Ray classes behind ``scheduler.kind = "pbt" | "pb2"`` (study/run/pbt.py builds them; Ray pickles them into the
experiment state, so they live at module level here rather than inside functions).

- :class:`StudyPBT` / :class:`StudyPB2`: Ray's PopulationBasedTraining / PB2 that do not perturb at the end of a
  run: a member at ``max_t`` evaluations has nothing left to train, and an exploit there would only restart it to
  report its donor's final score as its own.
- :class:`PopulationGenerator`: Ray's BasicVariantGenerator running exactly the drawn initial population.
"""
from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.experiment import _convert_to_experiment_list
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import BasicVariantGenerator

__all__ = ["StudyPBT", "StudyPB2", "PopulationGenerator"]


class _AtMaxT:
    _max_t: int

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if result.get("training_iteration", 0) >= self._max_t:
            return TrialScheduler.CONTINUE  # the member's last evaluation: it ends by itself
        return super().on_trial_result(tune_controller, trial, result)


class StudyPBT(_AtMaxT, PopulationBasedTraining):
    def __init__(self, *, max_t: int, **kwargs: Any):
        super().__init__(**kwargs)
        self._max_t = max_t


class StudyPB2(_AtMaxT, PB2):
    def __init__(self, *, max_t: int, **kwargs: Any):
        super().__init__(**kwargs)
        self._max_t = max_t


class PopulationGenerator(BasicVariantGenerator):
    """One trial per member of ``population``, in order.

    Ray applies ``points_to_evaluate`` onto the param space and refuses a key the space lacks; a study has no
    param space (its searcher defines the space), so each key gets a categorical over the members' values here."""

    def __init__(self, population: list[dict[str, Any]]):
        self._population = [dict(p) for p in population]
        super().__init__(points_to_evaluate=[dict(p) for p in population], max_concurrent=len(population))

    def bind(self, **_: Any) -> None:
        """``study resume`` binds a restored searcher to the study's home and Optuna storage: nothing to bind here
        (the population is in the pickled generator; members never reach Optuna)."""

    def add_configurations(self, experiments):
        listed = _convert_to_experiment_list(experiments)
        for experiment in listed:
            config = experiment.spec.setdefault("config", {})
            for key in dict.fromkeys(k for member in self._population for k in member):
                values = list(dict.fromkeys(m[key] for m in self._population if key in m))
                config.setdefault(key, tune.choice(values))
        super().add_configurations(listed)
