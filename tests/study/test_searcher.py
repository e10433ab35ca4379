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

from study.run.search import PersistentASHA, StudySearch
from study.config.spaces import get_space, make_define_by_run, resolve_params

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


def test_trials_asked_and_ended_after_rays_snapshot_are_not_sampled_again(tmp_path):
    """A killed driver's Ray snapshot can predate trials that were asked and ended since; Ray then wants as many
    new trials. Optuna holds num_samples trials already, so the searcher says the study is complete (once the
    RUNNING orphan is adopted), instead of asking one Optuna trial too many (CI: 5 trials in a 4-seed study)."""
    from ray.tune.search import Searcher

    def searcher():
        space = get_space("lambda_adv")
        return StudySearch(make_define_by_run(space, resolve_params(space, {})), metric=METRIC, mode="max",
                           max_t=4, num_samples=3, study_dir=tmp_path, study_name="unit",
                           sampler=optuna.samplers.RandomSampler(seed=0),
                           storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))

    before = searcher()
    before.suggest("a")  # in Ray's snapshot
    before.suggest("b")  # asked and ended after it
    before.on_trial_complete("b", result={METRIC: 0.4, "training_iteration": 4, "finished": 1.0})
    lost = before.suggest("c")  # asked after it, still running at the kill
    after = searcher()
    after._ot_trials = {"a": before._ot_trials["a"]}  # what the snapshot knew
    assert after.suggest("d") == lost  # the RUNNING orphan first
    assert after.suggest("e") == Searcher.FINISHED  # b is done: no fourth trial
    assert len(after._ot_study.trials) == 3
    (tmp_path / "other").mkdir()
    unlimited = _searcher(tmp_path / "other")  # num_samples unknown (a searcher pickled by older code)
    for trial_id in "xyz":
        assert unlimited.suggest(trial_id) != Searcher.FINISHED


def test_the_folder_ray_made_for_an_adopted_trial_is_moved_whole_to_superseded(tmp_path):
    before = _searcher(tmp_path)
    before.suggest("lost")
    lost = tmp_path / "trial_lost"  # what the killed driver's Ray wrote before its snapshot
    lost.mkdir()
    (lost / "params.json").write_text('{"x": 1}')
    (lost / "result.json").write_text('{"iteration": 1}\n')
    after = _searcher(tmp_path)
    after.suggest("new")
    assert not lost.exists()
    aside = tmp_path / "superseded" / "trial_lost"
    assert (aside / "params.json").read_text() == '{"x": 1}' and (aside / "result.json").read_text() == '{"iteration": 1}\n'
    assert sorted(p.name for p in tmp_path.glob("trial_*")) == []


def test_a_failed_trial_that_a_resume_runs_to_the_end_is_recorded_and_the_failure_left_out(tmp_path):
    from study.state.journal import superseded_numbers

    searcher = _searcher(tmp_path)
    sampled = searcher.suggest("a")
    searcher.on_trial_result("a", {METRIC: 0.2, "training_iteration": 1})
    searcher.on_trial_complete("a", result=None, error=True)  # crashed for good in the first run
    study = searcher._ot_study
    assert [t.state.name for t in study.trials] == ["FAIL"]
    # `study resume` runs it again from its checkpoint (Ray's resume_errored); Optuna refuses to change a FAIL.
    restored = _searcher(tmp_path)
    restored._ot_trials, restored._completed_trials = dict(searcher._ot_trials), set(searcher._completed_trials)
    restored.on_trial_result("a", {METRIC: 0.3, "training_iteration": 2})
    restored.on_trial_complete("a", result={METRIC: 0.5, "training_iteration": 4, "finished": 1.0})
    restored.on_trial_complete("a", result={METRIC: 0.5, "training_iteration": 4, "finished": 1.0})  # told twice
    trials = restored._ot_study.trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    rerun = trials[1]
    assert rerun.value == 0.5 and rerun.params == trials[0].params and rerun.user_attrs["rerun_of"] == 0
    assert rerun.user_attrs["ray_trial_id"] == "a" and "fail_reason" not in rerun.user_attrs
    assert rerun.intermediate_values == {1: 0.2, 4: 0.5}
    assert superseded_numbers(trials) == {0}
    assert {k: rerun.params[k] for k in sampled} == sampled


def _asha(cls, tmp_path, **kwargs):
    return cls(time_attr="training_iteration", metric="m", mode="max", max_t=4, grace_period=1,
               reduction_factor=2, **kwargs)


def test_asha_rungs_survive_a_restore(tmp_path):
    state = tmp_path / "asha_rungs.json"
    trial = lambda name: SimpleNamespace(trial_id=name)  # noqa: E731 - all ASHA reads from a trial
    first = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    for name, value, expected in (("t1", 0.9, TrialScheduler.CONTINUE), ("t2", 0.8, TrialScheduler.STOP)):
        first.on_trial_add(None, trial(name))
        # rung 1 after t1 holds {0.9}: the median cutoff 0.9 stops t2 (0.8 < 0.9)
        assert first.on_trial_result(None, trial(name), {"training_iteration": 1, "m": value}) == expected
    saved = json.loads(state.read_text())
    assert saved["brackets"][0][-1] == [1, {"t1": 0.9, "t2": 0.8}]  # rungs are stored last-milestone first

    # After a restore the new scheduler reads the rungs: cutoff = median(0.9, 0.8) = 0.85 stops t3 at 0.5 ...
    restored = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
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


# --- relocation, decisions that survive a restore, tells that survive a full disk --------------------------------


def _storage(path):
    from study.state.journal import RepairingJournalBackend

    return JournalStorage(RepairingJournalBackend(path))


def _files(root) -> dict:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_pickled_searcher_and_scheduler_name_no_location(tmp_path):
    """Ray pickles both into tuner.pkl and searcher-state-*.pkl; a path in there sent a relocated study's writes
    back to its first directory (issue 12). Unpickled, they refuse to work until bound to a location."""
    import pickle

    from study.run.search import Unbound

    home = tmp_path / "where-the-study-ran"
    home.mkdir()
    searcher = _searcher(home)
    searcher.suggest("a")
    asha = _asha(PersistentASHA, tmp_path, study_dir=home)
    for obj in (searcher, asha):
        blob = pickle.dumps(obj)
        assert str(home).encode() not in blob and b"where-the-study-ran" not in blob
    searcher.save(str(tmp_path / "searcher-state.pkl"))
    assert b"where-the-study-ran" not in (tmp_path / "searcher-state.pkl").read_bytes()
    with pytest.raises(Unbound):
        pickle.loads(pickle.dumps(searcher)).suggest("b")
    restored_asha = pickle.loads(pickle.dumps(asha))
    with pytest.raises(Unbound):
        restored_asha.on_trial_add(None, SimpleNamespace(trial_id="b"))


def test_a_restored_searcher_writes_only_into_the_study_where_it_is_now(tmp_path):
    """A copy resumed while the original exists: the original stays byte-identical, the copy gets the tells."""
    import pickle
    import shutil

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    searcher = _searcher(original)
    searcher.suggest("a")
    searcher.suggest("b")
    _report(searcher, "a", [0.1, 0.2])
    state = original / "searcher-state.pkl"
    searcher.save(str(state))
    shutil.copytree(original, copy)
    before = _files(original)

    restored = pickle.loads(pickle.dumps(searcher))  # as tuner.pkl brings it back
    restored.bind(study_dir=copy, storage=_storage(copy / "j.journal"))
    restored.restore(str(copy / "searcher-state.pkl"))
    restored.on_trial_complete("a", result=_report(restored, "a", [0.1, 0.2, 0.3, 0.4], finished=True))
    restored.on_trial_complete("b", result={METRIC: 0.2, "training_iteration": 2})

    assert _files(original) == before
    study = optuna.load_study(study_name="unit", storage=_storage(copy / "j.journal"))
    assert {t.user_attrs["ray_trial_id"]: t.state.name for t in study.trials} == {"a": "COMPLETE", "b": "PRUNED"}


def test_a_trial_asha_stopped_is_stopped_again_after_a_restore(tmp_path):
    """kill -> resume: Ray re-runs a trial whose stop its state had not saved; the restored rungs already hold it,
    and plain ASHA then answers CONTINUE (a prune undone, issue 11)."""
    trial = lambda name: SimpleNamespace(trial_id=name)  # noqa: E731
    first = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    for name, value in (("t1", 0.9), ("t2", 0.8)):
        first.on_trial_add(None, trial(name))
        first.on_trial_result(None, trial(name), {"training_iteration": 1, "m": value})
    assert json.loads((tmp_path / "asha_rungs.json").read_text())["stopped"] == {"t2": 1}

    restored = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    restored.on_trial_add(None, trial("t2"))
    assert restored.on_trial_result(None, trial("t2"), {"training_iteration": 1, "m": 0.8}) == TrialScheduler.STOP
    # the trial that went on is not affected
    restored.on_trial_add(None, trial("t1"))
    assert restored.on_trial_result(None, trial("t1"), {"training_iteration": 2, "m": 0.9}) == TrialScheduler.CONTINUE


def test_asha_rungs_are_rewritten_only_when_a_record_is_added(tmp_path, monkeypatch):
    """One rewrite of asha_rungs.json per new rung record or stop, not per result (a whole-file rewrite on every
    report was quadratic over a 1,000-trial study: issue 12's scale benchmark)."""
    import study.run.search

    writes = []
    real_replace = study.run.search.os.replace
    monkeypatch.setattr(study.run.search.os, "replace", lambda a, b: (writes.append(str(b)), real_replace(a, b)))
    trial = lambda name: SimpleNamespace(trial_id=name)  # noqa: E731
    asha = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    asha.on_trial_add(None, trial("t1"))
    asha.on_trial_result(None, trial("t1"), {"training_iteration": 1, "m": 0.9})  # rung 1 record: written
    assert len(writes) == 1
    for _ in range(3):  # between milestones nothing is recorded: nothing is rewritten
        asha.on_trial_result(None, trial("t1"), {"training_iteration": 1, "m": 0.9})
    assert len(writes) == 1
    asha.on_trial_add(None, trial("t2"))
    asha.on_trial_result(None, trial("t2"), {"training_iteration": 1, "m": 0.1})  # recorded and stopped: written
    assert len(writes) == 2
    assert json.loads((tmp_path / "asha_rungs.json").read_text())["stopped"] == {"t2": 1}
    moved = tmp_path / "moved"
    moved.mkdir()
    asha.bind(study_dir=moved)  # a new home gets the whole state at the next result, even with nothing new
    asha.on_trial_result(None, trial("t1"), {"training_iteration": 1, "m": 0.9})
    assert (moved / "asha_rungs.json").is_file() and len(writes) == 3


def test_a_tell_that_hits_a_full_disk_is_kept_and_told_later(tmp_path, monkeypatch, capsys):
    import errno
    import os
    import pickle

    import study.state.journal

    searcher = StudySearch(make_define_by_run(get_space("lambda_adv"), resolve_params(get_space("lambda_adv"), {})),
                           metric=METRIC, mode="max", max_t=4, study_dir=tmp_path, study_name="unit",
                           sampler=optuna.samplers.RandomSampler(seed=0), storage=_storage(tmp_path / "j.journal"))
    searcher.suggest("a")
    result = _report(searcher, "a", [0.1, 0.2, 0.3, 0.4], finished=True)
    real_write = os.write

    def full_disk(fd, data):  # the first bytes fit, then the disk is full
        real_write(fd, bytes(data[:7]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(study.state.journal.os, "write", full_disk)
    searcher.on_trial_complete("a", result=result)
    assert "could not record trial a" in capsys.readouterr().err
    journal = (tmp_path / "j.journal").read_bytes()
    assert journal.endswith(b"\n") and all(json.loads(line) for line in journal.splitlines())  # never torn
    snapshot = pickle.dumps(searcher)  # what Ray would have saved
    searcher.save(str(tmp_path / "searcher-state.pkl"))
    monkeypatch.setattr(study.state.journal.os, "write", real_write)  # space is back

    # a driver restored from that snapshot tells it
    restored = pickle.loads(snapshot)
    restored.bind(study_dir=tmp_path, storage=_storage(tmp_path / "j.journal"))
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    (trial,) = optuna.load_study(study_name="unit", storage=_storage(tmp_path / "j.journal")).trials
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(0.4)


def test_resuming_does_not_draw_an_adopted_trials_parameters_again(tmp_path):
    """SIGKILL just after a trial was asked: the restored sampler replays the random state of Ray's last
    snapshot, so the trial after the adopted one drew the same λ and lr (issue 11). resume_study seeds a new
    sampler past the trials already asked (study.run.tuner.resume_sampler)."""
    import pickle
    import shutil

    from study.config.study_config import study_from_dict
    from study.run.tuner import make_sampler, resume_sampler
    from study_helpers import study_table

    cfg = study_from_dict(study_table(tmp_path, search={"space": "lambda_adv", "sampler": "random", "seed": 0}),
                          source="test")
    space = get_space("lambda_adv")

    def driver(sampler):
        return StudySearch(make_define_by_run(space, resolve_params(space, {})), metric=METRIC, mode="max",
                           max_t=4, study_dir=tmp_path, study_name=cfg.name, sampler=sampler,
                           storage=_storage(tmp_path / "j.journal"))

    first = driver(make_sampler(cfg))
    first.suggest("a")
    snapshot = pickle.dumps(first)  # Ray's last state snapshot
    first.suggest("b")  # asked, then the driver was killed before the next snapshot
    lost = {"adapt.lambda_adv_main": first._ot_trials["b"].params["adapt.lambda_adv_main"]}
    shutil.copy(tmp_path / "j.journal", tmp_path / "k.journal")  # the same crashed study, twice

    def resume(sampler, journal):
        restored = pickle.loads(snapshot)
        restored.bind(study_dir=tmp_path, storage=_storage(journal), sampler=sampler)
        assert restored.suggest("c") == lost  # the orphan is adopted, its values replayed
        return restored.suggest("d")

    replayed = pickle.loads(snapshot)._sampler  # the sampler as the snapshot kept it
    assert resume(replayed, tmp_path / "j.journal") == lost  # the defect: drawn again, identically
    journal = tmp_path / "k.journal"
    assert resume(resume_sampler(cfg, _storage(journal)), journal) != lost


def test_a_failed_trial_points_into_the_study_directory_not_rays_temp_dir(tmp_path, capsys):
    """The FAILED line named Ray's driver_artifacts copy of error.txt, deleted with Ray's temp dir (issue 11)."""
    import shlex

    from study.run.search import StudyProgress

    trial_dir = tmp_path / "my studies" / "s" / "trial_x"
    trial = SimpleNamespace(trial_id="x", storage=SimpleNamespace(trial_fs_path=str(trial_dir)),
                            error_file="/tmp/dastudy-0/r1/session/artifacts/driver_artifacts/trial_x/error.txt")
    StudyProgress(metric=METRIC, mode="max", max_t=4, num_samples=1).on_trial_error(0, [], trial)
    line = capsys.readouterr().out
    assert "trial_x FAILED  see " + shlex.quote(str(trial_dir / "error.txt")) in line and "driver_artifacts" not in line


def test_a_resumed_grid_keeps_its_order_and_repeats_no_point(tmp_path):
    """The grid's seed fixes its shuffled order: a resumed grid seeded otherwise mapped the next trials' grid ids
    to points already run (seeds [2, 3, 3, 4] instead of [1, 2, 3, 4] in the driver-kill test)."""
    import pickle

    from study.config.study_config import study_from_dict
    from study.run.tuner import make_sampler, resume_sampler
    from study_helpers import study_table

    seeds = [1, 2, 3, 4, 5, 6]
    cfg = study_from_dict(study_table(tmp_path, search={"space": "seeds", "sampler": "grid", "seed": 0,
                                                        "params": {"seeds": seeds}}), source="test")
    space = get_space("seeds")
    define = make_define_by_run(space, cfg.space_params, grid=True, base=cfg.train)
    first = StudySearch(define, metric=METRIC, mode="max", max_t=4, study_dir=tmp_path, study_name=cfg.name,
                        sampler=make_sampler(cfg), storage=_storage(tmp_path / "j.journal"))
    first.suggest("a")
    snapshot = pickle.dumps(first)
    first.suggest("b")  # the orphan
    restored = pickle.loads(snapshot)
    restored.bind(study_dir=tmp_path, storage=_storage(tmp_path / "j.journal"),
                  sampler=resume_sampler(cfg, _storage(tmp_path / "j.journal")))
    for trial_id in "cdefg":
        restored.suggest(trial_id)
    study = optuna.load_study(study_name=cfg.name, storage=_storage(tmp_path / "j.journal"))
    assert sorted(t.params["runtime.seed"] for t in study.trials) == seeds


def test_a_trial_whose_end_rays_restored_limiter_dropped_is_told_after_the_resume(tmp_path):
    """Ray's ConcurrencyLimiter passes on a trial's end only if its restored live_trials name the trial; they lag
    this searcher's saved state, so a trial suggested just before the kill ended unseen and Optuna kept it RUNNING.
    record_reruns tells Optuna from the resumed fit's results: each such end once, COMPLETE or PRUNED as it ended."""
    from types import SimpleNamespace

    searcher = _searcher(tmp_path, max_t=4)
    for trial_id in ("done", "late", "stopped"):
        searcher.suggest(trial_id)
    searcher.on_trial_complete("done", result=_report(searcher, "done", [0.1, 0.2, 0.3, 0.4], finished=True))
    restored = _searcher(tmp_path, max_t=4)  # `study resume`: the searcher's state as saved
    restored._ot_trials, restored._completed_trials = dict(searcher._ot_trials), set(searcher._completed_trials)
    results = [SimpleNamespace(error=None, metrics={"trial_id": "done", METRIC: 0.4, "training_iteration": 4,
                                                    "finished": 1.0}),
               SimpleNamespace(error=None, metrics={"trial_id": "late", METRIC: 0.5, "training_iteration": 4,
                                                    "finished": 1.0}),
               SimpleNamespace(error=None, metrics={"trial_id": "stopped", METRIC: 0.05, "training_iteration": 1})]
    assert [t.state.name for t in restored._ot_study.trials] == ["COMPLETE", "RUNNING", "RUNNING"]
    assert restored.record_reruns(results) == 2
    trials = restored._ot_study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"] and trials[1].value == 0.5
    assert restored.record_reruns(results) == 0  # told once



def test_a_study_from_before_restores_from_rays_own_pickled_searcher_state(tmp_path):
    """Studies run before dastudy wrote its searcher state as JSON hold Ray's pickled OptunaSearch state; a resume
    of one takes the trial table, the ended trials and the pending tells from it and keeps its own location and
    sampler (the pickle's would point at the old home)."""
    import pickle

    from ray.tune.search.optuna import OptunaSearch

    home = tmp_path / "home"
    home.mkdir()
    searcher = _searcher(home)
    for trial_id in "abc":
        searcher.suggest(trial_id)
    searcher.on_trial_complete("a", result=_report(searcher, "a", [0.1, 0.2, 0.3, 0.4], finished=True))
    searcher._pending["b"] = {"value": 0.25, "error": False, "iteration": 2, "finished": False}
    OptunaSearch.save(searcher, str(home / "searcher-state.pkl"))  # Ray's own format: a pickle of the searcher
    assert (home / "searcher-state.pkl").read_bytes()[:1] == b"\x80"

    restored = pickle.loads(pickle.dumps(searcher))
    sampler = optuna.samplers.RandomSampler(seed=7)
    storage = _storage(home / "j.journal")
    restored.bind(study_dir=home, storage=storage, sampler=sampler)
    restored.restore(str(home / "searcher-state.pkl"))
    assert restored._sampler is sampler and restored._storage is storage and restored._study_dir == str(home)
    assert restored.state_dict()["ot_trials"] == searcher.state_dict()["ot_trials"]
    assert restored.state_dict()["completed"] == ["a"] and restored.state_dict()["pending"] == {}
    study = optuna.load_study(study_name="unit", storage=_storage(home / "j.journal"))
    states = {t.user_attrs["ray_trial_id"]: t.state.name for t in study.trials}
    assert states == {"a": "COMPLETE", "b": "PRUNED", "c": "RUNNING"}  # b's pending end was told on restore


def test_unbound_says_what_to_call_and_survives_pickling():
    import pickle

    from study.run.search import Unbound

    err = Unbound("StudySearch")
    assert str(err) == "StudySearch was restored without a study location; call bind() first"
    again = pickle.loads(pickle.dumps(err))
    assert again.what == "StudySearch" and str(again) == str(err)


@pytest.mark.parametrize("mode, direction", [("min", "MINIMIZE"), ("max", "MAXIMIZE")])
def test_bind_makes_the_study_where_the_storage_has_none_in_the_studys_direction(tmp_path, mode, direction):
    import pickle

    from study.run.search import Unbound

    space = get_space("lambda_adv")
    searcher = StudySearch(make_define_by_run(space, resolve_params(space, {})), metric=METRIC, mode=mode,
                           max_t=4, study_dir=tmp_path, sampler=optuna.samplers.RandomSampler(seed=0),
                           study_name="unit", storage=_storage(tmp_path / "old.journal"))
    restored = pickle.loads(pickle.dumps(searcher))
    with pytest.raises(Unbound, match="^StudySearch was restored"):
        restored.restore(str(tmp_path / "none.pkl"))
    restored.bind(study_dir=tmp_path / "new", storage=_storage(tmp_path / "new.journal"))
    restored.suggest("a")
    study = optuna.load_study(study_name="unit", storage=_storage(tmp_path / "new.journal"))
    assert study.direction.name == direction and len(study.trials) == 1


def test_after_a_resume_each_trial_the_searcher_missed_is_recorded_once_by_its_outcome(tmp_path):
    """``record_reruns`` over the resumed run's results: a FAIL that now ended cleanly becomes a new trial (PRUNED
    below max_t, COMPLETE at it), a FAIL that failed again stays alone, a trial Optuna holds RUNNING gets its end
    (FAIL when it errored), one already ended is left; a result without a trial id is skipped, not the end of the
    list; running it twice records nothing twice."""
    searcher = _searcher(tmp_path)  # max_t 4
    for trial_id in "abcdefg":
        searcher.suggest(trial_id)
    for trial_id in "abf":
        searcher.on_trial_result(trial_id, {METRIC: 0.1, "training_iteration": 1})
        searcher.on_trial_complete(trial_id, result=None, error=True)  # failed in the first run
    searcher.on_trial_complete("e", result=_report(searcher, "e", [0.1, 0.2, 0.3, 0.6], finished=True))
    grid = [SimpleNamespace(metrics={METRIC: 0.9}, error=None),  # no trial id: skipped
            SimpleNamespace(metrics={"trial_id": "a", METRIC: 0.35, "training_iteration": 2}, error=None),
            SimpleNamespace(metrics={"trial_id": "b", METRIC: 0.4, "training_iteration": 3}, error=RuntimeError()),
            SimpleNamespace(metrics={"trial_id": "c", METRIC: 0.45, "training_iteration": 4, "finished": 1.0},
                            error=None),
            SimpleNamespace(metrics={"trial_id": "d", METRIC: 0.5, "training_iteration": 2}, error=RuntimeError()),
            SimpleNamespace(metrics={"trial_id": "e", METRIC: 0.6, "training_iteration": 4}, error=None),
            SimpleNamespace(metrics={"trial_id": "f", METRIC: 0.7, "training_iteration": 4}, error=None),
            SimpleNamespace(metrics={"trial_id": "g", METRIC: 0.2, "training_iteration": 3}, error=None)]
    assert searcher.record_reruns(grid) == 5  # a, c, d, f, g
    trials = searcher._ot_study.trials
    by = {}
    for t in trials:
        by.setdefault(t.user_attrs["ray_trial_id"], []).append(t)
    state = {tid: [t.state.name for t in ts] for tid, ts in by.items()}
    assert state == {"a": ["FAIL", "PRUNED"], "b": ["FAIL"], "c": ["COMPLETE"], "d": ["FAIL"], "e": ["COMPLETE"],
                     "f": ["FAIL", "COMPLETE"], "g": ["PRUNED"]}
    a_rerun, f_rerun = by["a"][1], by["f"][1]
    assert (a_rerun.value, a_rerun.user_attrs["pruned_at"], a_rerun.user_attrs["rerun_of"]) == (0.35, 2, by["a"][0].number)
    assert a_rerun.intermediate_values == {1: 0.1, 2: 0.35} and "fail_reason" not in a_rerun.user_attrs
    assert f_rerun.value == 0.7 and "pruned_at" not in f_rerun.user_attrs and f_rerun.user_attrs["rerun_of"] == by["f"][0].number
    assert by["c"][0].value == 0.45 and by["g"][0].user_attrs["pruned_at"] == 3 and by["g"][0].value == 0.2
    assert by["e"][0].value == 0.6
    assert searcher.record_reruns(grid) == 0 and len(searcher._ot_study.trials) == len(trials)


def test_a_rerun_without_a_finite_value_records_nothing_better_than_its_failure(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result=None, error=True)
    for metrics in ({METRIC: math.nan, "training_iteration": 4}, {"training_iteration": 4}, {METRIC: "0.5"}):
        searcher.record_reruns([SimpleNamespace(metrics={"trial_id": "a", **metrics}, error=None)])
    assert [t.state.name for t in searcher._ot_study.trials] == ["FAIL"]


def test_a_completed_trial_keeps_its_value_in_percent_for_the_dashboards(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", result=_report(searcher, "a", [0.1, 0.2, 0.3, 0.123456789], finished=True))
    searcher.on_trial_complete("b", result={METRIC: math.inf, "training_iteration": 4}, error=False)
    a, b = searcher._ot_study.trials
    assert a.user_attrs["val/mIoU16 %"] == 12.3457 and a.value == 0.123456789
    assert b.state.name == "FAIL" and "val/mIoU16 %" not in b.user_attrs
    assert b.user_attrs["fail_reason"] == f"no finite {METRIC} reported"


def _ray_trial(tmp_path, trial_id: str, config: dict, last: dict | None = None):
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=last or {}, status="RUNNING",
                           storage=SimpleNamespace(trial_fs_path=str(tmp_path / f"trial_{trial_id}")))


@pytest.mark.parametrize("mode", ["max", "min"])
def test_progress_lines_word_for_word(tmp_path, monkeypatch, capsys, mode):
    """The plain progress lines (a log file, CI): elapsed time, parameters or label and directory, each evaluation
    with the best so far in the study's direction, the end state with the count, the failure reason."""
    import study.run.search as search

    clock = [1000.0]
    monkeypatch.setattr(search.time, "time", lambda: clock[0])
    labels = {"b1": "#1 λ=0.002 lr=0.004"}
    progress = search.StudyProgress(metric=METRIC, mode=mode, max_t=4, num_samples=4,
                                    name_of=lambda t: labels.get(t.trial_id, f"trial_{t.trial_id}"))
    a = _ray_trial(tmp_path, "a1", {"adapt.lambda_adv_main": 0.01, "optim.lr@deeplabv2_tiny": 0.02})
    b = _ray_trial(tmp_path, "b1", {"adapt.lambda_adv_main": 0.002, "optim.lr@deeplabv2_tiny": 0.004})
    c = _ray_trial(tmp_path, "c1", {})
    progress.on_trial_start(0, [a, b], a)
    clock[0] += 125.4
    progress.on_trial_start(0, [a, b], b)
    progress.on_trial_result(0, [a, b], a, {METRIC: 0.30, "training_iteration": 1})
    progress.on_trial_result(0, [a, b], b, {METRIC: 0.20, "training_iteration": 1})
    progress.on_trial_result(0, [a, b], b, {METRIC: 0.40, "training_iteration": 2})
    progress.on_trial_result(0, [a, b], a, {METRIC: math.nan, "training_iteration": 2})
    clock[0] += 3600
    a.last_result = {METRIC: 0.5, "training_iteration": 4}
    progress.on_trial_complete(0, [a, b], a)
    b.last_result = {METRIC: 0.4, "training_iteration": 2}
    progress.on_trial_complete(0, [a, b], b)
    (tmp_path / "trial_c1").mkdir()
    (tmp_path / "trial_c1" / "failure.json").write_text(json.dumps({"kind": "diverged", "reason": "NaN loss at 3"}))
    progress.on_trial_error(0, [a, b, c], c)
    d = _ray_trial(tmp_path, "d1", {})
    progress.on_trial_error(0, [a, b, c, d], d)
    best = "highest" if mode == "max" else "lowest"
    expected = [
        "[  0:00] trial_a1 started   lambda_adv=0.01 lr=0.02",
        "[  2:05] #1 λ=0.002 lr=0.004 started   in trial_b1",
        f"[  2:05] trial_a1 eval 1/4  val/mIoU16=30.00%  ({best} so far)",
        "[  2:05] #1 λ=0.002 lr=0.004 eval 1/4  val/mIoU16=20.00%" + ("" if mode == "max" else "  (lowest so far)"),
        "[  2:05] #1 λ=0.002 lr=0.004 eval 2/4  val/mIoU16=40.00%" + ("  (highest so far)" if mode == "max" else ""),
        "[  2:05] trial_a1 eval 2/4  val/mIoU16=nan",
        "[ 62:05] trial_a1 COMPLETE  val/mIoU16=50.00%   [1/4 trials ended]",
        "[ 62:05] #1 λ=0.002 lr=0.004 PRUNED at 2/4  val/mIoU16=40.00%   [2/4 trials ended]",
        "[ 62:05] trial_c1 FAILED  NaN loss at 3   [3/4 trials ended]",
        f"[ 62:05] trial_d1 FAILED  see {tmp_path}/trial_d1/error.txt   [4/4 trials ended]",
    ]
    assert capsys.readouterr().out.splitlines() == expected


def test_a_trial_label_that_starts_with_its_directory_is_not_followed_by_it(tmp_path, capsys):
    from study.run.search import StudyProgress

    progress = StudyProgress(metric=METRIC, mode="max", max_t=4, num_samples=1,
                             name_of=lambda t: f"trial_{t.trial_id} (seed 2)")
    progress.on_trial_start(0, [], _ray_trial(tmp_path, "a1", {"x": 1}))
    assert capsys.readouterr().out.split("] ", 1)[1] == "trial_a1 (seed 2) started\n"


def test_metrics_in_percent_and_others_as_numbers():
    from study.run.search import _fmt, _fmt_metric

    assert _fmt_metric("val/pixel_acc", 0.91234) == "91.23%" and _fmt_metric("select/mIoU13", 0.1) == "10.00%"
    assert _fmt_metric("uda/im", 0.91234) == "0.9123" and _fmt_metric("val/mIoU16", None) == "None"
    assert _fmt_metric("val/mIoU16", math.inf) == "inf" and _fmt("deeplabv2") == "deeplabv2" and _fmt(3) == "3"


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_tie_keeps_the_first_trial_as_the_best(tmp_path, capsys, mode):
    from study.run.search import StudyProgress

    progress = StudyProgress(metric=METRIC, mode=mode, max_t=4, num_samples=2)
    a, b = _ray_trial(tmp_path, "a", {}), _ray_trial(tmp_path, "b", {})
    progress.on_trial_result(0, [a, b], a, {METRIC: 0.3, "training_iteration": 1})
    progress.on_trial_result(0, [a, b], b, {METRIC: 0.3, "training_iteration": 1})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("so far)") and not lines[1].endswith("so far)")
    assert progress._best == (0.3, "trial_a")


def test_asha_rungs_restored_hold_the_same_records(tmp_path):
    """The rungs and stops read back from asha_rungs.json are the ones written (trial ids and values)."""
    trial = lambda name: SimpleNamespace(trial_id=name)  # noqa: E731
    asha = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    for name, value in (("a", 0.5), ("b", 0.1), ("c", 0.3)):
        asha.on_trial_add(None, trial(name))
        asha.on_trial_result(None, trial(name), {"m": value, "training_iteration": 1})  # the metric ASHA watches
    written = json.loads((tmp_path / "asha_rungs.json").read_text())
    again = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    again.on_trial_add(None, trial("d"))  # the first call that reads the file
    rungs = [{k: v for k, v in recorded.items()} for b in again._brackets for _, recorded in b._rungs]
    restored = {k: v for r in rungs for k, v in r.items()}
    # rung 1 records all three; b (0.1) is stopped there (below a's 0.5), c (0.3) is not (the cutoff of {0.5, 0.1})
    assert restored == {"a": 0.5, "b": 0.1, "c": 0.3}
    assert restored == {k: v for b in written["brackets"] for _, recorded in b for k, v in recorded.items()}
    assert written["stopped"] == {"b": 1} and set(again._stopped) == {"b"}


def test_the_searcher_state_lands_whole_under_rays_name_with_no_temporary_file_in_the_staging_dir(tmp_path):
    """Ray's staging directory is uploaded by a background thread: only whole files under their final names may
    appear there (a temporary file it listed and that was then renamed failed the sync, issue 12)."""
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    staging = tmp_path / "staging"
    staging.mkdir()
    searcher.save_to_dir(str(staging), session_str="2026-12-07")
    assert [p.name for p in staging.iterdir()] == ["searcher-state-2026-12-07.pkl"]
    saved = json.loads((staging / "searcher-state-2026-12-07.pkl").read_text())
    assert saved == searcher.state_dict() and list(saved["ot_trials"]) == ["a"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dastudy-searcher-")]  # none left beside it
    searcher.save_to_dir(str(staging))  # Ray's default session name
    assert sorted(p.name for p in staging.iterdir()) == ["searcher-state-2026-12-07.pkl", "searcher-state-default.pkl"]


def test_suggest_of_an_unbound_searcher_names_it_and_the_suggest_fault_point_fires(tmp_path, monkeypatch):
    import pickle

    from study.run.search import Unbound

    searcher = _searcher(tmp_path)
    with pytest.raises(Unbound, match="^StudySearch was restored without a study location"):
        pickle.loads(pickle.dumps(searcher)).suggest("a")
    monkeypatch.setenv("DASTUDY_FAULT", "crash_at:suggest:1")  # test-only: Optuna trial 1 asked, Ray not saved yet
    (tmp_path / "claims").mkdir()  # fires once per claim directory, not once per process (pytest run twice in one)
    monkeypatch.setenv("DASTUDY_FAULT_DIR", str(tmp_path / "claims"))
    searcher.suggest("a")
    with pytest.raises(RuntimeError, match="injected fault: crash at the suggest of iteration 1"):
        searcher.suggest("b")


# --- exact bookkeeping: numbers, legacy pickles, pending ends, reruns, progress lines (mutation-test findings) -----


def _trial(name):
    return SimpleNamespace(trial_id=name)


def test_each_ray_trial_is_named_by_its_optuna_number_after_suggest_and_after_a_restore(tmp_path, monkeypatch):
    import pickle

    import study.run.search as search
    from study.config.labels import trial_label

    monkeypatch.setattr(search, "_OPTUNA_NUMBERS", {})
    searcher = _searcher(tmp_path)
    searcher.suggest("n_a")
    searcher.suggest("n_b")
    search.note_optuna_number("pbt_member", None)  # no Optuna trial: not named
    assert search._OPTUNA_NUMBERS == {"n_a": 0, "n_b": 1}
    assert search.optuna_number("n_b") == 1 and search.optuna_number("pbt_member") is None
    first = searcher._ot_study.trials[0]
    assert first.user_attrs == {"ray_trial_id": "n_a", "trial_dir": "trial_n_a", "label": trial_label(0, first.params)}
    assert first.user_attrs["label"].startswith("#0 ")

    monkeypatch.setattr(search, "_OPTUNA_NUMBERS", {})  # a new driver process: bind names them again
    restored = pickle.loads(pickle.dumps(searcher))
    restored.bind(study_dir=tmp_path, storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    assert search._OPTUNA_NUMBERS == {"n_a": 0, "n_b": 1}
    monkeypatch.setattr(search, "_OPTUNA_NUMBERS", {})  # ... and so does loading the saved state
    restored.load_state_dict(searcher.state_dict())
    assert search._OPTUNA_NUMBERS == {"n_a": 0, "n_b": 1}


def test_a_searcher_and_a_scheduler_pickled_by_older_code_come_back_working(tmp_path):
    """Pickles from before ``_pending``, ``_num_samples`` (searcher) and ``_stopped`` (ASHA) existed."""
    searcher = _searcher(tmp_path)
    state = searcher.__getstate__()
    del state["_pending"], state["_num_samples"]
    old = StudySearch.__new__(StudySearch)
    old.__setstate__(state)
    old.bind(study_dir=tmp_path, storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    assert old.state_dict() == {"ot_trials": {}, "completed": [], "pending": {}}
    for trial_id in "abc":  # no cap on the number of trials
        assert isinstance(old.suggest(trial_id), dict)
    old.on_trial_complete("a", result={METRIC: 0.3, "training_iteration": 4, "finished": 1.0})
    assert [t.state.name for t in old._ot_study.trials] == ["COMPLETE", "RUNNING", "RUNNING"]

    asha = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    state = asha.__getstate__()
    del state["_stopped"]
    old_asha = PersistentASHA.__new__(PersistentASHA)
    old_asha.__setstate__(state)
    old_asha.bind(study_dir=tmp_path)  # nothing saved yet in this process: nothing to forget
    for name, value, expected in (("t1", 0.9, TrialScheduler.CONTINUE), ("t2", 0.8, TrialScheduler.STOP)):
        old_asha.on_trial_add(None, _trial(name))
        assert old_asha.on_trial_result(None, _trial(name), {"training_iteration": 1, "m": value}) == expected
    assert old_asha._stopped == {"t2": 1}
    assert json.loads((tmp_path / "asha_rungs.json").read_text())["stopped"] == {"t2": 1}


def test_a_restored_asha_used_unbound_raises_even_with_nothing_new_to_save(tmp_path):
    import pickle

    from study.run.search import Unbound

    asha = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    asha.on_trial_add(None, _trial("t1"))
    asha.on_trial_result(None, _trial("t1"), {"training_iteration": 1, "m": 0.9})
    restored = pickle.loads(pickle.dumps(asha))
    with pytest.raises(Unbound, match="^PersistentASHA was restored"):
        restored.on_trial_result(None, _trial("t1"), {"training_iteration": 1, "m": 0.9})


def test_asha_reads_its_rung_file_once_and_takes_files_with_rungs_only_or_stops_only(tmp_path):
    path = tmp_path / "asha_rungs.json"
    first = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    for name, value in (("t1", 0.9), ("t2", 0.8)):
        first.on_trial_add(None, _trial(name))
        first.on_trial_result(None, _trial(name), {"training_iteration": 1, "m": value})
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({"brackets": saved["brackets"]}))  # a file from before stops were kept
    again = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    again.on_trial_add(None, _trial("t3"))
    assert [(m, dict(r)) for m, r in again._brackets[0]._rungs] == [(4, {}), (2, {}), (1, {"t1": 0.9, "t2": 0.8})]
    assert again._stopped == {}

    path.write_text(json.dumps({"stopped": {"t9": 1}}))  # stops only
    other = _asha(PersistentASHA, tmp_path, study_dir=tmp_path)
    other.on_trial_add(None, _trial("t9"))
    assert other._stopped == {"t9": 1}
    assert [(m, dict(r)) for m, r in other._brackets[0]._rungs] == [(4, {}), (2, {}), (1, {})]
    # `again` read its file on its first use and does not read it again (t9's stop is not its own)
    again.on_trial_add(None, _trial("t9"))
    assert again.on_trial_result(None, _trial("t9"), {"training_iteration": 1, "m": 0.95}) == TrialScheduler.CONTINUE
    assert again._stopped == {}


def test_the_searcher_state_is_staged_beside_the_staging_dir_under_a_hidden_name_and_a_failed_write_leaves_nothing(
        tmp_path, monkeypatch):
    import errno
    import os
    from pathlib import Path

    import study.run.search as search

    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    staging = tmp_path / "staging"
    staging.mkdir()
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(search.os, "replace", lambda a, b: (moves.append((str(a), str(b))), real_replace(a, b))[1])
    searcher.save_to_dir(str(staging), session_str="s")
    (src, dst), = [m for m in moves if m[1].startswith(str(staging))]
    assert Path(dst) == staging / "searcher-state-s.pkl"
    assert Path(src).parent == tmp_path and Path(src).name.startswith(".dastudy-searcher-")

    def full_disk(path):
        Path(path).write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(searcher, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        searcher.save_to_dir(str(staging), session_str="t")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dastudy-searcher-")]
    assert sorted(p.name for p in staging.iterdir()) == ["searcher-state-s.pkl"]


def test_load_state_dict_needs_a_bound_searcher_and_takes_a_state_without_pending_ends(tmp_path):
    import pickle

    from study.run.search import Unbound

    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    saved = searcher.state_dict()
    restored = pickle.loads(pickle.dumps(searcher))
    with pytest.raises(Unbound) as err:
        restored.load_state_dict(saved)
    assert err.value.what == "StudySearch"
    restored.bind(study_dir=tmp_path, storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    restored.load_state_dict({"ot_trials": saved["ot_trials"], "completed": []})
    assert restored.state_dict() == {"ot_trials": saved["ot_trials"], "completed": [], "pending": {}}


def test_ends_optuna_could_not_record_are_kept_exactly_and_told_as_they_ended(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import study.state.journal

    searcher = StudySearch(make_define_by_run(get_space("lambda_adv"), resolve_params(get_space("lambda_adv"), {})),
                           metric=METRIC, mode="max", max_t=4, study_dir=tmp_path, study_name="unit",
                           sampler=optuna.samplers.RandomSampler(seed=0), storage=_storage(tmp_path / "j.journal"))
    for trial_id in "abc":
        searcher.suggest(trial_id)
    (tmp_path / "trial_b_r2").mkdir()
    (tmp_path / "trial_b_r2" / "failure.json").write_text(json.dumps({"reason": "OOM in replicate 2"}))
    real_write = os.write

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(study.state.journal.os, "write", full_disk)
    searcher.on_trial_complete("a", result={METRIC: 0.2, "training_iteration": 2})  # stopped by ASHA
    searcher.on_trial_complete("a", result={METRIC: 0.9, "training_iteration": 4, "finished": 1.0})  # again: ignored
    searcher.on_trial_complete("b", result=None, error=True, failed_dir="trial_b_r2")  # a failed replicate
    searcher.on_trial_complete("c", result={METRIC: 0.5, "training_iteration": 2, "finished": 1.0})  # all it had
    assert searcher.state_dict()["pending"] == {
        "a": {"value": 0.2, "error": False, "iteration": 2, "finished": False},
        "b": {"value": None, "error": True, "iteration": 0, "finished": False, "trial_dir": "trial_b_r2"},
        "c": {"value": 0.5, "error": False, "iteration": 2, "finished": True}}
    assert "could not record trial a in Optuna yet" in capsys.readouterr().err
    monkeypatch.setattr(study.state.journal.os, "write", real_write)  # space is back: the next event tells them
    searcher.suggest("d")
    assert searcher.state_dict()["pending"] == {}
    by = {t.user_attrs["ray_trial_id"]: t for t in searcher._ot_study.trials}
    assert (by["a"].state.name, by["a"].value, by["a"].user_attrs["pruned_at"]) == ("PRUNED", 0.2, 2)
    assert by["b"].state.name == "FAIL" and by["b"].user_attrs["fail_reason"] == "OOM in replicate 2"
    assert (by["c"].state.name, by["c"].value) == ("COMPLETE", 0.5) and "pruned_at" not in by["c"].user_attrs


def test_an_end_optuna_already_holds_is_neither_told_again_nor_kept_pending_nor_counted(tmp_path, capsys):
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    searcher.suggest("b")
    killed = optuna.load_study(study_name="unit", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    killed.tell(0, 0.4)  # the killed driver told both before Ray's snapshot
    killed.tell(1, 0.3)
    searcher.on_trial_complete("a", result={METRIC: 0.1, "training_iteration": 2})
    assert searcher.state_dict()["pending"] == {} and "warning" not in capsys.readouterr().err
    results = [SimpleNamespace(error=None, metrics={"trial_id": "b", METRIC: 0.3, "training_iteration": 4,
                                                    "finished": 1.0}),
               SimpleNamespace(error=None, metrics={"trial_id": "never_asked_here", METRIC: 0.2,
                                                    "training_iteration": 1})]
    assert searcher.record_reruns(results) == 0
    assert [(t.state.name, t.value) for t in searcher._ot_study.trials] == [("COMPLETE", 0.4), ("COMPLETE", 0.3)]


def test_a_rerun_that_finished_below_max_t_is_complete_and_two_restored_drivers_record_it_once(tmp_path):
    searcher = _searcher(tmp_path)  # max_t 4
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", result=None, error=True)
    drivers = []
    for _ in range(2):  # the same snapshot restored twice (a driver killed after recording the rerun)
        restored = _searcher(tmp_path)
        restored._ot_trials, restored._completed_trials = dict(searcher._ot_trials), set(searcher._completed_trials)
        restored.on_trial_complete("a", result={METRIC: 0.5, "training_iteration": 2, "finished": 1.0})
        drivers.append(restored)
    trials = drivers[1]._ot_study.trials
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "RUNNING"), (2, "COMPLETE")]
    assert trials[2].value == 0.5 and trials[2].user_attrs["rerun_of"] == 0 and "pruned_at" not in trials[2].user_attrs
    assert [d._ot_trials["a"].number for d in drivers] == [2, 2]  # each now tells the rerun's trial


def test_an_intermediate_value_a_full_disk_refused_is_a_warning_on_stderr(tmp_path, monkeypatch, capsys):
    import errno

    searcher = _searcher(tmp_path)
    searcher.suggest("a")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(searcher._ot_study._storage, "set_trial_intermediate_value", full_disk)
    searcher.on_trial_result("a", {METRIC: 0.1, "training_iteration": 1})
    out, err = capsys.readouterr()
    assert "warning: could not record a result of trial a in Optuna: [Errno 28] No space left on device" in \
        err.splitlines() and out == ""


@pytest.mark.parametrize("home", ["studyX", "study "])
def test_a_failed_trials_reason_is_read_from_its_folder_whatever_the_study_folder_is_called(tmp_path, home):
    study_dir = tmp_path / home
    study_dir.mkdir()
    searcher = _searcher(study_dir)
    searcher.suggest("a")
    searcher.suggest("b")
    (study_dir / "trial_a").mkdir()
    (study_dir / "trial_a" / "failure.json").write_text(json.dumps({"reason": "y" * 2500}))
    searcher.on_trial_complete("a", error=True)
    searcher.on_trial_complete("b", error=True)  # crashed before it could write failure.json
    a, b = searcher._ot_study.trials
    assert a.user_attrs["fail_reason"] == "y" * 2000
    assert b.user_attrs["fail_reason"] == f"error (see the trial's error.txt in {study_dir})"


def test_a_metric_not_shown_in_percent_gets_no_percent_attribute_and_a_failure_no_optuna_warning(tmp_path):
    import warnings

    from study.config.labels import trial_label

    space = get_space("lambda_adv")
    searcher = StudySearch(make_define_by_run(space, resolve_params(space, {})), metric="uda/im", mode="max",
                           max_t=4, study_dir=tmp_path, sampler=optuna.samplers.RandomSampler(seed=0),
                           study_name="unit", storage=optuna.storages.InMemoryStorage())
    searcher.suggest("a")
    searcher.suggest("b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        searcher.on_trial_complete("a", result={"uda/im": 0.25, "training_iteration": 4, "finished": 1.0})
        searcher.on_trial_complete("b", result={"uda/im": math.nan, "training_iteration": 4})
    a, b = searcher._ot_study.trials
    assert a.user_attrs == {"ray_trial_id": "a", "trial_dir": "trial_a", "label": trial_label(0, a.params)}
    assert (a.state.name, a.value) == ("COMPLETE", 0.25)
    assert b.state.name == "FAIL" and b.user_attrs["fail_reason"] == "no finite uda/im reported"
    assert searcher.state_dict()["pending"] == {}


def test_an_exhausted_grid_leaves_nothing_pending_and_prints_no_warning(tmp_path, capsys):
    space = get_space("lambda_adv")
    params = resolve_params(space, {"lambda_grid": [0.001, 0.002]})
    searcher = StudySearch(make_define_by_run(space, params, grid=True), metric=METRIC, mode="max", max_t=1,
                           study_dir=tmp_path, sampler=optuna.samplers.GridSampler(
                               {"adapt.lambda_adv_main": [0.001, 0.002]}, seed=0), study_name="g",
                           storage=optuna.storages.InMemoryStorage())
    for trial_id in ("x", "y"):
        searcher.suggest(trial_id)
    for trial_id in ("x", "y"):
        searcher.on_trial_complete(trial_id, result={METRIC: 0.5, "training_iteration": 1, "finished": 1.0})
    assert searcher.state_dict()["pending"] == {} and "warning" not in capsys.readouterr().err
    assert [t.state.name for t in searcher._ot_study.trials] == ["COMPLETE", "COMPLETE"]


def test_every_orphan_folder_is_set_aside_and_none_without_a_ray_id_or_in_an_object_store(tmp_path, monkeypatch):
    before = _searcher(tmp_path)
    for name in ("lost1", "lost2"):
        before.suggest(name)
        (tmp_path / f"trial_{name}").mkdir()
        (tmp_path / f"trial_{name}" / "params.json").write_text("{}")
    after = _searcher(tmp_path)
    after.suggest("new1")
    after.suggest("new2")  # a second orphan: superseded/ exists already
    assert sorted(p.name for p in (tmp_path / "superseded").iterdir()) == ["trial_lost1", "trial_lost2"]
    (tmp_path / "trial_").mkdir()
    after._set_aside_orphan_dir("")  # an orphan asked before Ray named it: no folder of its own
    assert (tmp_path / "trial_").is_dir()
    monkeypatch.chdir(tmp_path)
    local_lookalike = tmp_path / "s3:" / "bucket" / "st" / "trial_x"  # what Path("s3://bucket/st/trial_x") names
    local_lookalike.mkdir(parents=True)
    after._study_dir = "s3://bucket/st"
    after._set_aside_orphan_dir("x")
    assert local_lookalike.is_dir()


def test_progress_lines_of_a_trial_without_files_results_or_its_last_iterations(tmp_path, capsys):
    from study.run.search import StudyProgress

    progress = StudyProgress(metric=METRIC, mode="max", max_t=4, num_samples=3)
    progress.on_trial_error(0, [], SimpleNamespace(trial_id="x"))  # no storage: no reason, nowhere to point
    progress.on_trial_complete(0, [], SimpleNamespace(trial_id="y", last_result={}))  # ended without a result
    progress.on_trial_complete(0, [], SimpleNamespace(trial_id="z", last_result={
        METRIC: 0.5, "training_iteration": 2, "finished": 1.0}))  # trained all it had, in fewer than max_t
    lines = [line.split("] ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["trial_x FAILED     [1/3 trials ended]",
                     "trial_y PRUNED at 0/4  val/mIoU16=None   [2/3 trials ended]",
                     "trial_z COMPLETE  val/mIoU16=50.00%   [3/3 trials ended]"]


def test_progress_lines_are_flushed_one_by_one(monkeypatch):
    import sys

    from study.run.search import StudyProgress

    class Stream:
        def __init__(self):
            self.events = []

        def write(self, text):
            self.events.append("write")

        def flush(self):
            self.events.append("flush")

    stream = Stream()
    monkeypatch.setattr(sys, "stdout", stream)
    StudyProgress(metric=METRIC, mode="max", max_t=4, num_samples=1).on_experiment_end([])
    assert stream.events[-1] == "flush" and "write" in stream.events


def test_metrics_in_percent_by_their_last_name_component():
    from study.run.search import _fmt_metric

    assert _fmt_metric("mIoU16", 0.5) == "50.00%" and _fmt_metric("val/target/mIoU16", 0.5) == "50.00%"


def test_where_a_failed_trials_files_are_has_no_trailing_slash(tmp_path, monkeypatch):
    import trainables.objectstore
    from study.run.search import read_failure, trial_failure
    from study.state.atomic_fs import atomic_local_filesystem

    for name in ("trial_X", "trial_y"):
        (tmp_path / name).mkdir()
    (tmp_path / "trial_X" / "failure.json").write_text(json.dumps({"reason": "diverged"}))
    for fs in (None, atomic_local_filesystem()):
        for name, reason in (("trial_X", "diverged"), ("trial_y", None)):
            trial = SimpleNamespace(storage=SimpleNamespace(trial_fs_path=f"{tmp_path / name}/",
                                                            storage_filesystem=fs))
            assert trial_failure(trial) == (reason, str(tmp_path / name))
    asked = []
    monkeypatch.setattr(trainables.objectstore, "read_bytes",
                        lambda uri: (asked.append(uri), json.dumps({"reason": "OOM"}).encode())[1])
    assert read_failure("s3://bucket/studies/st/trial_X/") == "OOM"
    assert asked == ["s3://bucket/studies/st/trial_X/failure.json"]
