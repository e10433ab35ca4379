"""Replicates through search (ReplicateSearch) and early stopping (ReplicateASHA), driven without Ray.

Scenarios of issue 18: every configuration gets every seed, Optuna learns one value (the replicate mean) per
configuration, the state survives a save/restore in the middle of a group, a configuration's seeds are promoted or
stopped together at a rung whatever order they arrive in, and the study file declares the seeds once."""
from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.run.replicates import ReplicateASHA, ReplicateSearch, group_key, rung_milestones
from study.run.search import StudySearch
from study.config.spaces import get_space, make_define_by_run, resolve_params

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC = "val/mIoU16"
LAMBDA = "adapt.lambda_adv_main"
SEED = "runtime.seed"
STOP, GO = TrialScheduler.STOP, TrialScheduler.CONTINUE


def _storage(tmp_path):
    return JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))


def _replicates(tmp_path, *, seeds=(1, 2, 3), num_samples=4, grid=None, max_t=4) -> ReplicateSearch:
    space = get_space("lambda_adv")
    params = resolve_params(space, {"lambda_grid": grid} if grid else {})
    sampler = (optuna.samplers.GridSampler({LAMBDA: grid}, seed=0) if grid
               else optuna.samplers.RandomSampler(seed=0))
    inner = StudySearch(make_define_by_run(space, params, grid=bool(grid)), metric=METRIC, mode="max",
                        max_t=max_t, num_samples=num_samples, study_dir=tmp_path, sampler=sampler,
                        study_name="unit", storage=_storage(tmp_path))
    return ReplicateSearch(inner, seeds=list(seeds))


def _run(searcher, trial_id: str, values: list[float], *, finished: bool = False) -> None:
    """Like Ray: every result but the last to on_trial_result, the last one to on_trial_complete."""
    for step, value in enumerate(values[:-1], start=1):
        searcher.on_trial_result(trial_id, {METRIC: value, "training_iteration": step})
    last = {METRIC: values[-1], "training_iteration": len(values), **({"finished": 1.0} if finished else {})}
    searcher.on_trial_complete(trial_id, result=last)


def _optuna_trials(tmp_path):
    return optuna.load_study(study_name="unit", storage=_storage(tmp_path)).trials


def test_every_configuration_runs_on_every_seed_and_optuna_is_told_the_mean_once(tmp_path):
    searcher = _replicates(tmp_path, num_samples=2)
    configs = {tid: searcher.suggest(tid) for tid in ("a", "b", "c", "d", "e", "f")}
    # the first configuration's three seeds, then the second's: Optuna asked once per configuration
    assert [configs[t][SEED] for t in "abcdef"] == [1, 2, 3, 1, 2, 3]
    assert configs["a"][LAMBDA] == configs["b"][LAMBDA] == configs["c"][LAMBDA] != configs["d"][LAMBDA]
    assert configs["d"][LAMBDA] == configs["e"][LAMBDA] == configs["f"][LAMBDA]
    assert len(_optuna_trials(tmp_path)) == 2
    assert searcher.suggest("g") == Searcher.FINISHED  # num_samples counts configurations

    # seeds end in any order; Optuna hears nothing until the last replicate of a configuration has ended
    _run(searcher, "c", [0.1, 0.2, 0.3, 0.30], finished=True)
    _run(searcher, "a", [0.1, 0.2, 0.3, 0.10], finished=True)
    assert [t.state.name for t in _optuna_trials(tmp_path)] == ["RUNNING", "RUNNING"]
    _run(searcher, "b", [0.1, 0.2, 0.4, 0.20], finished=True)
    first, second = _optuna_trials(tmp_path)
    assert first.state.name == "COMPLETE" and first.value == pytest.approx(0.2)  # mean of 0.1, 0.2, 0.3
    assert first.intermediate_values[3] == pytest.approx((0.3 + 0.3 + 0.4) / 3)
    assert first.user_attrs["seed_values"] == {"1": 0.10, "2": 0.20, "3": 0.30}
    assert first.user_attrs["replicate_trials"] == {"1": "trial_a", "2": "trial_b", "3": "trial_c"}
    assert first.user_attrs["seeds"] == [1, 2, 3] and first.user_attrs["trial_dir"] == "trial_a"
    assert second.state.name == "RUNNING"
    saved = searcher.state_dict()["groups"]
    assert saved["a"]["told"] and saved["a"]["curves"] == {}  # told: its curves are not kept in the saved state


def test_replicates_stopped_early_are_told_pruned_at_the_evaluation_all_of_them_reached(tmp_path):
    searcher = _replicates(tmp_path, seeds=(1, 2), num_samples=1)
    searcher.suggest("a"), searcher.suggest("b")
    _run(searcher, "a", [0.2, 0.4, 0.6])  # went on to evaluation 3 while waiting for its sibling
    _run(searcher, "b", [0.4, 0.2])  # the group was stopped at evaluation 2
    (trial,) = _optuna_trials(tmp_path)
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at"] == 2
    assert trial.value == pytest.approx(0.3)  # (0.4 + 0.2) / 2 at evaluation 2, not a's later 0.6
    assert trial.intermediate_values[1] == pytest.approx(0.3)


def test_a_failed_replicate_fails_its_configuration_with_that_replicates_reason(tmp_path):
    searcher = _replicates(tmp_path, seeds=(1, 2), num_samples=1)
    searcher.suggest("a"), searcher.suggest("b")
    (tmp_path / "trial_b").mkdir()
    (tmp_path / "trial_b" / "failure.json").write_text(json.dumps({"reason": "diverged at iteration 3"}))
    _run(searcher, "a", [0.2, 0.4, 0.6, 0.8], finished=True)
    searcher.on_trial_complete("b", error=True)
    (trial,) = _optuna_trials(tmp_path)
    assert trial.state.name == "FAIL" and trial.user_attrs["fail_reason"] == "diverged at iteration 3"


def test_a_non_finite_replicate_fails_its_configuration(tmp_path):
    searcher = _replicates(tmp_path, seeds=(1, 2), num_samples=1)
    searcher.suggest("a"), searcher.suggest("b")
    _run(searcher, "a", [0.2, 0.4, 0.6, 0.8], finished=True)
    _run(searcher, "b", [0.2, 0.4, 0.6, math.nan], finished=True)
    (trial,) = _optuna_trials(tmp_path)
    assert trial.state.name == "FAIL" and "no finite" in trial.user_attrs["fail_reason"]


def test_state_survives_save_and_restore_in_the_middle_of_a_group(tmp_path):
    before = _replicates(tmp_path, num_samples=2)
    sampled = before.suggest("a")
    before.suggest("b")
    _run(before, "a", [0.1, 0.2, 0.3, 0.5], finished=True)
    before.on_trial_result("b", {METRIC: 0.3, "training_iteration": 1})
    before.save(str(tmp_path / "searcher-state.json"))

    # a new driver: the searcher comes back unbound from Ray's pickle, is bound, then restored from the file
    import pickle

    after = pickle.loads(pickle.dumps(before))
    after.bind(study_dir=tmp_path, storage=_storage(tmp_path))
    after.restore(str(tmp_path / "searcher-state.json"))
    third = after.suggest("c")
    assert third == {**sampled, SEED: 3}  # the same configuration's last seed, not a new configuration
    assert len(_optuna_trials(tmp_path)) == 1
    _run(after, "b", [0.3, 0.3, 0.3, 0.3], finished=True)
    _run(after, "c", [0.1, 0.1, 0.1, 0.1], finished=True)
    (trial,) = _optuna_trials(tmp_path)
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx((0.5 + 0.3 + 0.1) / 3)
    assert after.suggest("d")[SEED] == 1 and len(_optuna_trials(tmp_path)) == 2


def test_restore_refuses_other_seeds(tmp_path):
    before = _replicates(tmp_path, seeds=(1, 2))
    before.suggest("a")
    before.save(str(tmp_path / "state.json"))
    other = _replicates(tmp_path, seeds=(1, 2, 3))
    with pytest.raises(ValueError, match=r"search.seeds cannot change"):
        other.restore(str(tmp_path / "state.json"))


def test_every_grid_point_runs_on_every_seed(tmp_path):
    searcher = _replicates(tmp_path, seeds=(7, 8), num_samples=2, grid=[0.001, 0.002])
    pairs = sorted((searcher.suggest(t)[LAMBDA], searcher._groups[searcher._trial_group[t]]["trials"][t])
                   for t in ("a", "b", "c", "d"))
    assert pairs == [(0.001, 7), (0.001, 8), (0.002, 7), (0.002, 8)]
    assert searcher.suggest("e") == Searcher.FINISHED
    for t in "abcd":
        _run(searcher, t, [0.5], finished=True)
    assert [t.state.name for t in _optuna_trials(tmp_path)] == ["COMPLETE", "COMPLETE"]


# ---------------------------------------------------------------------------------------------------------
# ReplicateASHA


def _trial(trial_id: str, config: str, seed: int):
    return SimpleNamespace(trial_id=trial_id, config={LAMBDA: config, SEED: seed}, last_result={})


def _scheduler(tmp_path=None, *, replicates=2, mode="max", reduction_factor=2):
    return ReplicateASHA(replicates=replicates, study_dir=tmp_path, max_t=4, grace_period=1,
                         reduction_factor=reduction_factor, metric="m", mode=mode)


def _feed(scheduler, events):
    """events: (trial, evaluation, value) in arrival order; returns each decision."""
    out = []
    for trial, step, value in events:
        if trial.trial_id not in scheduler._group:
            scheduler.on_trial_add(None, trial)
        out.append(scheduler.on_trial_result(None, trial, {"training_iteration": step, "m": value}))
    return out


def test_rungs_follow_rays_asha():
    assert rung_milestones(grace_period=1, max_t=4, reduction_factor=3) == [1, 3]
    assert rung_milestones(grace_period=1, max_t=9, reduction_factor=3) == [1, 3]
    assert rung_milestones(grace_period=1, max_t=4, reduction_factor=2) == [1, 2]


def test_a_configuration_is_stopped_on_its_mean_not_on_one_seed():
    """B's seeds score 0.9 and 0.1 at rung 1 (mean 0.5); A's 0.5 and 0.7 (mean 0.6) came first. Plain ASHA keeps
    B's lucky seed and stops the other; replicate-aware ASHA stops both, since B's mean is below A's."""
    a1, a2, b1, b2 = _trial("a1", "A", 1), _trial("a2", "A", 2), _trial("b1", "B", 1), _trial("b2", "B", 2)
    scheduler = _scheduler()
    decisions = _feed(scheduler, [(a1, 1, 0.5), (a2, 1, 0.7), (b1, 1, 0.9), (b2, 1, 0.1)])
    assert decisions == [GO, GO, GO, STOP]  # b1 waits for b2; the group is decided when b2 arrives
    assert _feed(scheduler, [(b1, 2, 0.9)]) == [STOP]  # the sibling that went ahead stops at its next report
    assert _feed(scheduler, [(a1, 2, 0.5)]) == [GO]

    plain = ASHAScheduler(metric="m", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    for trial in (a1, a2, b1, b2):
        plain.on_trial_add(None, trial)
    got = [plain.on_trial_result(None, t, {"training_iteration": 1, "m": v})
           for t, v in ((a1, 0.5), (a2, 0.7), (b1, 0.9), (b2, 0.1))]
    assert got[2:] == [GO, STOP]  # B's seeds split by survival


def test_a_replicate_that_arrives_first_waits_for_its_siblings_and_all_go_on_together():
    a1, a2, b1, b2 = _trial("a1", "A", 1), _trial("a2", "A", 2), _trial("b1", "B", 1), _trial("b2", "B", 2)
    scheduler = _scheduler()
    _feed(scheduler, [(a1, 1, 0.2), (a2, 1, 0.2)])  # A decided at rung 1 with mean 0.2
    # b1 is at rung 1 and rung 2 before b2 reports anything: it keeps going, undecided
    assert _feed(scheduler, [(b1, 1, 0.1), (b1, 2, 0.1)]) == [GO, GO]
    assert "B" not in json.dumps(scheduler._rungs)
    # b2 lifts B's mean at rung 1 above A's: promoted; both replicates go on
    assert _feed(scheduler, [(b2, 1, 0.9)]) == [GO]
    assert _feed(scheduler, [(b1, 3, 0.1), (b2, 2, 0.9)]) == [GO, GO]
    assert scheduler._rungs["2"][group_key(b1.config)] == pytest.approx(0.5)
    assert _feed(scheduler, [(b1, 4, 0.1)]) == [STOP]  # max_t


def test_decisions_do_not_depend_on_the_order_seeds_arrive_in():
    values = {("A", 1): 0.5, ("A", 2): 0.7, ("A", 3): 0.6, ("B", 1): 0.9, ("B", 2): 0.1, ("B", 3): 0.2,
              ("C", 1): 0.8, ("C", 2): 0.7, ("C", 3): 0.75}
    outcomes = set()
    for order in itertools.permutations([1, 2, 3]):
        scheduler = _scheduler(replicates=3)
        for config in "ABC":  # configurations in the same order, their seeds in `order`
            _feed(scheduler, [(_trial(f"{config}{s}", config, s), 1, values[(config, s)]) for s in order])
        outcomes.add((tuple(sorted(scheduler._stopped)), json.dumps(scheduler._rungs, sort_keys=True)))
    assert len(outcomes) == 1
    ((stopped, _),) = outcomes
    assert stopped == (group_key({LAMBDA: "B"}),)  # B's mean 0.4 is below A's 0.6


def test_minimising_stops_the_larger_mean():
    scheduler = _scheduler(mode="min")
    a1, a2, b1, b2 = _trial("a1", "A", 1), _trial("a2", "A", 2), _trial("b1", "B", 1), _trial("b2", "B", 2)
    assert _feed(scheduler, [(a1, 1, 0.1), (a2, 1, 0.2), (b1, 1, 0.0), (b2, 1, 0.9)]) == [GO, GO, GO, STOP]


def test_a_replicate_that_ended_before_a_rung_does_not_hold_its_group():
    a1, a2, b1, b2 = _trial("a1", "A", 1), _trial("a2", "A", 2), _trial("b1", "B", 1), _trial("b2", "B", 2)
    scheduler = _scheduler()
    _feed(scheduler, [(a1, 1, 0.6), (a2, 1, 0.6), (b1, 1, 0.9)])
    scheduler.on_trial_add(None, b2)
    scheduler.on_trial_error(None, b2)  # b2 failed before its first evaluation: B is decided on b1 alone
    assert scheduler._rungs["1"][group_key(b1.config)] == pytest.approx(0.9)
    assert _feed(scheduler, [(b1, 2, 0.9)]) == [GO]


def test_rungs_and_stops_survive_a_restore(tmp_path):
    a1, a2, b1, b2 = _trial("a1", "A", 1), _trial("a2", "A", 2), _trial("b1", "B", 1), _trial("b2", "B", 2)
    first = _scheduler(tmp_path)
    _feed(first, [(a1, 1, 0.5), (a2, 1, 0.7), (b1, 1, 0.9), (b2, 1, 0.1)])
    assert (tmp_path / ReplicateASHA.STATE_FILE).is_file()

    import pickle

    restored = pickle.loads(pickle.dumps(first))  # Ray's tuner.pkl: no location, rung state from the file
    assert restored._study_dir is None
    restored = _scheduler(None)
    restored.bind(study_dir=tmp_path)
    restored.on_trial_add(None, b1)
    assert _feed(restored, [(b1, 2, 0.9)]) == [STOP]  # stopped before the restart: the decision stands
    c1, c2 = _trial("c1", "C", 1), _trial("c2", "C", 2)
    # rung 1 came back ({A: 0.6, B: 0.5}; cutoff 0.55): C's mean 0.52 is stopped
    assert _feed(restored, [(c1, 1, 0.52), (c2, 1, 0.52)]) == [GO, STOP]


# ---------------------------------------------------------------------------------------------------------
# search.seeds in the study file


def _demo(*overrides: str):
    from study.config.study_config import load_study_config

    return load_study_config("demo", list(overrides))


def test_search_seeds_are_declared_once_and_count_trials():
    cfg = _demo("search.seeds=[1, 2, 3]", "num_samples=4")
    assert cfg.search.seeds == (1, 2, 3) and cfg.replicates == 3
    assert cfg.num_samples == 4 and cfg.num_trials == 12  # num_samples counts configurations
    plain = _demo()
    assert plain.search.seeds is None and plain.num_trials == plain.num_samples
    from study.config.study_config import study_from_dict, study_to_dict

    again = study_from_dict(study_to_dict(cfg), source="study.toml")  # the resolved study.toml keeps them
    assert again.search.seeds == (1, 2, 3)


@pytest.mark.parametrize("value, allowed", [
    ("[]", "a non-empty list of integers >= 0"),
    ("[1, 2, 1]", "distinct seeds (1 repeated"),
    ("[-1, 2]", "a non-empty list of integers >= 0"),
    ("['a']", "an integer"),
    ("3", "search.seeds"),
])
def test_bad_search_seeds_are_refused_with_key_value_and_what_is_allowed(value, allowed):
    from trainables.config import ConfigError

    with pytest.raises(ConfigError) as err:
        _demo(f"search.seeds={value}")
    assert "search.seeds" in str(err.value) and allowed in str(err.value)


def test_seeds_both_declared_and_searched_are_refused_naming_both():
    from trainables.config import ConfigError

    from study.config.files import load_toml
    from study.config.study_config import study_from_dict

    data = load_toml("demo", "presets")
    data["search"] = {**data["search"], "space": "lambda_seeds", "params": {}}
    study_from_dict(data, source="demo")  # searching the seed alone stays allowed
    data["search"]["seeds"] = [1, 2]
    with pytest.raises(ConfigError) as err:
        study_from_dict(data, source="demo")
    text = str(err.value)
    assert "search.seeds" in text and "'lambda_seeds'" in text and "runtime.seed" in text


def test_a_mean_equal_to_the_cutoff_goes_on_as_in_rays_asha():
    a1, a2, b1, b2 = _trial("a1", "A", 1), _trial("a2", "A", 2), _trial("b1", "B", 1), _trial("b2", "B", 2)
    # A's mean 0.625 is the cutoff; B's seeds differ (0.25, 1.0) but their mean equals it: not below, promoted
    assert _feed(_scheduler(), [(a1, 1, 0.5), (a2, 1, 0.75), (b1, 1, 0.25), (b2, 1, 1.0)]) == [GO, GO, GO, GO]


def test_a_failed_configuration_rerun_to_its_end_on_resume_is_recorded_from_all_replicates(tmp_path):
    searcher = _replicates(tmp_path, seeds=(1, 2), num_samples=1)
    searcher.suggest("a"), searcher.suggest("b")
    _run(searcher, "a", [0.2, 0.4, 0.6, 0.8], finished=True)
    searcher.on_trial_complete("b", error=True)
    assert _optuna_trials(tmp_path)[0].state.name == "FAIL"
    # `study resume` re-ran b from its checkpoint to the end; Ray's results of the resumed fit
    results = [SimpleNamespace(error=None, metrics={"trial_id": "a", METRIC: 0.8, "training_iteration": 4,
                                                    "finished": 1.0}),
               SimpleNamespace(error=None, metrics={"trial_id": "b", METRIC: 0.4, "training_iteration": 4,
                                                    "finished": 1.0})]
    assert searcher.record_reruns(results) == 1
    failed, rerun = _optuna_trials(tmp_path)
    assert failed.state.name == "FAIL" and rerun.state.name == "COMPLETE"
    assert rerun.value == pytest.approx(0.6) and rerun.user_attrs["rerun_of"] == failed.number
    assert searcher.record_reruns(results) == 0  # told once


def test_replicate_ends_rays_restored_limiter_dropped_are_recorded_after_the_resume(tmp_path):
    """A configuration's last replicate ended in the resumed fit without reaching on_trial_complete (Ray's
    restored ConcurrencyLimiter did not know it): record_reruns records it, and the configuration is told once."""
    from types import SimpleNamespace

    searcher = _replicates(tmp_path, seeds=(1, 2), num_samples=1)
    searcher.suggest("a"), searcher.suggest("b")
    _run(searcher, "a", [0.2, 0.4, 0.6, 0.8], finished=True)
    for step, value in enumerate([0.1, 0.2, 0.3], start=1):
        searcher.on_trial_result("b", {METRIC: value, "training_iteration": step})
    assert [t.state.name for t in _optuna_trials(tmp_path)] == ["RUNNING"]
    results = [SimpleNamespace(error=None, metrics={"trial_id": "a", METRIC: 0.8, "training_iteration": 4,
                                                    "finished": 1.0}),
               SimpleNamespace(error=None, metrics={"trial_id": "b", METRIC: 0.4, "training_iteration": 4,
                                                    "finished": 1.0})]
    assert searcher.record_reruns(results) == 1
    (trial,) = _optuna_trials(tmp_path)
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(0.6)  # the mean of 0.8 and 0.4
    assert searcher.record_reruns(results) == 0  # told once

