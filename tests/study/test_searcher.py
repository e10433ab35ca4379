"""The searcher tells Optuna what really happened (PRUNED / COMPLETE / FAIL with reason); ASHA rungs persist."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.search import PersistentASHA, StudySearch
from study.spaces import get_space, make_define_by_run, resolve_params

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC = "val/mIoU16"


def _searcher(tmp_path, *, max_t: int = 4) -> StudySearch:
    space = get_space("lambda_adv")
    return StudySearch(make_define_by_run(space, resolve_params(space, {})), metric=METRIC, mode="max",
                       max_t=max_t, study_dir=tmp_path, sampler=optuna.samplers.RandomSampler(seed=0),
                       study_name="unit", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))


def _report(searcher: StudySearch, trial_id: str, values: list[float], *, finished: bool = False) -> dict:
    """Like Ray: every result but the last goes to on_trial_result; the last one (after which the trial ends,
    by itself or stopped by the scheduler) is returned for on_trial_complete."""
    for step, value in enumerate(values[:-1], start=1):
        searcher.on_trial_result(trial_id, {METRIC: value, "training_iteration": step})
    result = {METRIC: values[-1], "training_iteration": len(values)}
    if finished:
        result["finished"] = 1.0
    return result


def test_trial_states_told_to_optuna(tmp_path):
    searcher = _searcher(tmp_path)
    for trial_id in "abcde":
        config = searcher.suggest(trial_id)
        assert 1e-4 <= config["adapt.lambda_adv_main"] <= 1e-2
    # a: stopped by ASHA after 2 of 4 evaluations -> PRUNED, scored at its last intermediate value.
    searcher.on_trial_complete("a", result=_report(searcher, "a", [0.10, 0.20]))
    # b: trained all its iterations (finished flag) -> COMPLETE with its final value.
    searcher.on_trial_complete("b", result=_report(searcher, "b", [0.1, 0.2, 0.3, 0.4], finished=True))
    # c: raised (diverged) -> FAIL with the reason the trainable wrote.
    (tmp_path / "trial_c").mkdir()
    (tmp_path / "trial_c" / "failure.json").write_text(json.dumps({"kind": "diverged",
                                                                   "reason": "diverged at iteration 4"}))
    _report(searcher, "c", [0.1])
    searcher.on_trial_complete("c", error=True)
    # d: a NaN final value is never told as a value (Optuna would refuse it and leave the trial RUNNING).
    searcher.on_trial_complete("d", result={METRIC: math.nan, "training_iteration": 1})
    # e: stopped by the scheduler at max_t without the flag (its last rung) -> COMPLETE.
    searcher.on_trial_complete("e", result=_report(searcher, "e", [0.1, 0.2, 0.3, 0.5]))

    study = optuna.load_study(study_name="unit", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert {k: v.state.name for k, v in by_ray.items()} == {
        "a": "PRUNED", "b": "COMPLETE", "c": "FAIL", "d": "FAIL", "e": "COMPLETE"}
    assert by_ray["a"].value == pytest.approx(0.20) and by_ray["a"].user_attrs["pruned_at"] == 2
    assert by_ray["a"].intermediate_values == {1: 0.10, 2: 0.20}
    assert by_ray["b"].value == pytest.approx(0.4) and by_ray["e"].value == pytest.approx(0.5)
    assert by_ray["c"].user_attrs["fail_reason"] == "diverged at iteration 4"
    assert "no finite val/mIoU16" in by_ray["d"].user_attrs["fail_reason"]
    assert by_ray["c"].user_attrs["trial_dir"] == "trial_c"
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


def test_grid_exhaustion_does_not_lose_the_last_trial(tmp_path):
    space = get_space("lambda_adv")
    params = resolve_params(space, {"lambda_grid": [0.001, 0.002]})
    grid = {"adapt.lambda_adv_main": [0.001, 0.002]}
    searcher = StudySearch(make_define_by_run(space, params, grid=True), metric=METRIC, mode="max", max_t=1,
                           study_dir=tmp_path, sampler=optuna.samplers.GridSampler(grid, seed=0), study_name="g",
                           storage=optuna.storages.InMemoryStorage())
    picked = sorted(searcher.suggest(t)["adapt.lambda_adv_main"] for t in ("x", "y"))
    assert picked == [0.001, 0.002]
    for trial_id in ("x", "y"):
        searcher.on_trial_complete(trial_id, result={METRIC: 0.5, "training_iteration": 1, "finished": 1.0})
    assert [t.state.name for t in searcher._ot_study.trials] == ["COMPLETE", "COMPLETE"]


def test_a_trial_asked_before_a_driver_crash_is_adopted_not_left_running(tmp_path):
    before = _searcher(tmp_path)
    sampled = before.suggest("lost")  # asked, then the driver died before Ray's snapshot recorded the trial
    after = _searcher(tmp_path)  # the restored searcher does not know it
    assert after.suggest("new") == sampled  # the same Optuna trial, its sampled values replayed
    after.on_trial_complete("new", result={METRIC: 0.3, "training_iteration": 4, "finished": 1.0})
    trials = after._ot_study.trials
    assert len(trials) == 1 and trials[0].state.name == "COMPLETE"
    assert trials[0].user_attrs["ray_trial_id"] == "new" and trials[0].user_attrs["adopted_from"] == "lost"


def _asha(cls, tmp_path, **kwargs):
    return cls(time_attr="training_iteration", metric="m", mode="max", max_t=4, grace_period=1,
               reduction_factor=2, **kwargs)


def test_asha_rungs_survive_a_restore(tmp_path):
    state = tmp_path / "asha_rungs.json"
    trial = lambda name: SimpleNamespace(trial_id=name)  # noqa: E731 - all ASHA reads from a trial
    first = _asha(PersistentASHA, tmp_path, state_path=state)
    for name, value, expected in (("t1", 0.9, TrialScheduler.CONTINUE), ("t2", 0.8, TrialScheduler.STOP)):
        first.on_trial_add(None, trial(name))
        # rung 1 after t1 holds {0.9}: the median cutoff 0.9 stops t2 (0.8 < 0.9)
        assert first.on_trial_result(None, trial(name), {"training_iteration": 1, "m": value}) == expected
    saved = json.loads(state.read_text())
    assert saved["brackets"][0][-1] == [1, {"t1": 0.9, "t2": 0.8}]  # rungs are stored last-milestone first

    # After a restore the new scheduler reads the rungs: cutoff = median(0.9, 0.8) = 0.85 stops t3 at 0.5 ...
    restored = _asha(PersistentASHA, tmp_path, state_path=state)
    restored.on_trial_add(None, trial("t3"))
    assert restored.on_trial_result(None, trial("t3"), {"training_iteration": 1, "m": 0.5}) == TrialScheduler.STOP
    # ... while Ray's plain ASHA starts with empty rungs and lets it continue (ray#30838).
    plain = _asha(ASHAScheduler, tmp_path)
    plain.on_trial_add(None, trial("t3"))
    assert plain.on_trial_result(None, trial("t3"), {"training_iteration": 1, "m": 0.5}) == TrialScheduler.CONTINUE


def test_a_trial_ray_reruns_after_optuna_recorded_it_keeps_its_outcome(tmp_path):
    """Driver killed after Optuna's tell but before Ray's state snapshot: `study resume` re-runs the trial, whose
    reports must neither crash the driver (Optuna refuses updates to finished trials) nor change the record."""
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    _report(searcher, "a", [0.1, 0.2, 0.3, 0.4])
    # The killed driver (another process: another storage object on the same journal) told Optuna COMPLETE.
    killed = optuna.load_study(study_name="unit",
                               storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    killed.tell(killed.trials[0].number, 0.4)
    searcher.on_trial_result("a", {METRIC: 0.25, "training_iteration": 4})  # a step Optuna has not seen
    searcher.on_trial_complete("a", result={METRIC: 0.1, "training_iteration": 2})  # would be PRUNED if told
    study = optuna.load_study(study_name="unit", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(0.4)
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
