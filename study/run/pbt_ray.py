"""The Ray classes behind ``scheduler.kind = "pbt" | "pb2"`` (study/run/pbt.py builds them; Ray pickles them into the
experiment state, so they live at module level here rather than inside functions).

- :class:`StudyPBT` / :class:`StudyPB2`: Ray's PopulationBasedTraining / PB2 that do not perturb at the end of a
  run: a member at ``max_t`` evaluations has nothing left to train, and an exploit there would only restart it to
  report its donor's final score as its own.
- :class:`PopulationGenerator`: Ray's BasicVariantGenerator running exactly the drawn initial population.
- :func:`register_each_checkpoint_once`: every member's checkpoint manager keeps one entry per checkpoint directory
  (see there: Ray 2.60's PBT registers a member's latest checkpoint twice, and the second entry deleted the first's
  directory, which a clone was about to restore from).
- :func:`unstick_synch`: with ``synch = true`` a resumed population is never run again by Ray's PBT (see there).
"""
from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.experiment.trial import _CheckpointManager  # private: see register_each_checkpoint_once
from ray.tune.experiment import _convert_to_experiment_list
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import BasicVariantGenerator

__all__ = ["StudyPBT", "StudyPB2", "PopulationGenerator", "OnceCheckpointManager", "register_each_checkpoint_once",
           "unstick_synch"]


class OnceCheckpointManager(_CheckpointManager):
    """Ray's per-trial checkpoint manager (``num_to_keep``, ordered by the study metric) that registers a checkpoint
    directory once: registering one it already holds makes that entry the latest and deletes nothing."""

    def register_checkpoint(self, checkpoint_result) -> None:
        path = getattr(getattr(checkpoint_result, "checkpoint", None), "path", None)
        for held in [self._latest_checkpoint_result, *self._checkpoint_results]:
            if path is not None and getattr(getattr(held, "checkpoint", None), "path", None) == path:
                self._latest_checkpoint_result = held
                return
        super().register_checkpoint(checkpoint_result)


def register_each_checkpoint_once(trial: Any) -> bool:
    """Give ``trial`` an :class:`OnceCheckpointManager`; True when it has one.

    PBT asks a top member to save at each perturbation (``PopulationBasedTraining._checkpoint_or_exploit``); for a
    function trainable the save returns the checkpoint the member has just reported, and Ray registers it a second
    time as a separate entry (ray-project/ray#38736 moved PBT to persistent checkpoints; the duplicate-registration
    guard of ray#9517 did not survive the storage refactor). The two entries share a directory: they take two of
    ``num_to_keep`` places, and when the older entry is evicted Ray deletes the directory the newer one, the
    member's latest, still names. A clone handed that checkpoint then failed (``FileNotFoundError``/
    ``CheckpointError``: seen after ``study resume`` in tests/study/test_pbt_ray.py). The manager's class is Ray 2.60's
    private ``_CheckpointManager``, swapped in place so that its state stays as Ray built or restored it;
    ``tests/study/test_pbt.py::test_a_member_registers_each_checkpoint_once`` fails if an upgrade changes the class
    or fixes the duplicate (then this can go)."""
    metadata = getattr(trial, "run_metadata", None)
    manager = getattr(metadata, "checkpoint_manager", None)
    if type(manager) is _CheckpointManager:
        manager.__class__ = OnceCheckpointManager
    return isinstance(manager, OnceCheckpointManager)


def unstick_synch(scheduler: PopulationBasedTraining, trials: list) -> bool:
    """With ``synch = true`` keep the next synchronisation time ahead of a population that has just synchronised;
    True when it had to be moved.

    Ray 2.60's synchronous PBT sets the next time to ``max(previous + interval, latest train time of any member)``
    after each synchronisation and runs only members whose train time is below it
    (``PopulationBasedTraining.choose_trial_to_run``). ``Tuner.restore`` gives back the scheduler as it was
    pickled at the start (Ray keeps no scheduler state: ray-project/ray#30838), so after ``study resume`` the
    previous time is the first interval while the members are already further on: the first synchronisation sets
    the next time equal to where every member now stands, no member is below it, and nothing ever runs again
    (the hang of docs/pbt.md). Reads and sets Ray's private ``_synch``, ``_trial_state``,
    ``_next_perturbation_sync`` and ``_perturbation_interval``;
    ``tests/study/test_pbt.py::test_a_resumed_synchronous_population_is_run_again`` fails if an upgrade changes
    them, and shows Ray's own ``choose_trial_to_run`` stuck without this."""
    if not getattr(scheduler, "_synch", False) or any(t.status == "RUNNING" for t in trials):
        return False  # a running member will report, and Ray synchronises then
    waiting = [t for t in trials if t.status in ("PENDING", "PAUSED") and t in scheduler._trial_state]
    if not waiting:
        return False
    times = [scheduler._trial_state[t].last_train_time for t in waiting]
    if min(times) < scheduler._next_perturbation_sync:
        return False  # some member is still below the next time: Ray runs it
    scheduler._next_perturbation_sync = min(times) + scheduler._perturbation_interval
    return True


class _AtMaxT:
    _max_t: int

    def on_trial_add(self, tune_controller, trial) -> None:
        register_each_checkpoint_once(trial)
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if result.get("training_iteration", 0) >= self._max_t:
            return TrialScheduler.CONTINUE  # the member's last evaluation: it ends by itself
        return super().on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller):
        unstick_synch(self, tune_controller.get_trials())
        return super().choose_trial_to_run(tune_controller)


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
