"""Reading a study directory (study/report/collect.py) piece by piece: the status rule the searcher tells Optuna,
why a trial failed, study.toml layouts of earlier versions, the files Ray and the engine leave, and the source-only
checkpoint's evaluation. Each case is a tiny directory written here with the values a reader can check by hand."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from study.report import ReportError, load_study
from study.report.collect import (TrialRecord, _engine_status, _failure, _find_run_dir, _full_run_evaluations,
                                  _json_lines, _last_eval, _lookup, _metrics_of, _number, _ray_states,
                                  _searched_names, _start_checkpoint_eval, _trial_status)


def _status(rows, *, ray="", failure=None, engine=None, max_t=4):
    return _trial_status(rows, ray_status=ray, failure_kind=failure, engine_status=engine, max_t=max_t)


@pytest.mark.parametrize("rows, kwargs, expected", [
    ([{"training_iteration": 4}], {}, "completed"),  # reached max_t
    ([{"training_iteration": 5}], {}, "completed"),  # past it (a resumed trial reports once more)
    ([{"training_iteration": 3}], {}, "pruned"),  # stopped by the scheduler before max_t
    ([{"training_iteration": 3, "finished": 1.0}], {}, "completed"),  # trained every iteration in fewer rounds
    ([{"training_iteration": 3}], {"max_t": None, "engine": "completed"}, "completed"),  # no max_t: the engine says
    ([{"training_iteration": 3}], {"max_t": None}, "pruned"),
    ([{"training_iteration": 3}], {"max_t": None, "engine": "stopped"}, "pruned"),
    ([{}], {"max_t": 0}, "completed"),  # no training_iteration counts as 0
    ([{}], {"max_t": 1}, "pruned"),
    ([], {}, "failed"),  # never reported
    ([], {"ray": "TERMINATED"}, "failed"),
    ([{"training_iteration": 4}], {"ray": "ERROR"}, "failed"),
    ([{"training_iteration": 4}], {"failure": "error"}, "failed"),
    ([{"training_iteration": 4}], {"failure": "oom"}, "failed"),
    ([{"training_iteration": 2}], {"failure": "diverged"}, "diverged"),
    ([{"training_iteration": 2}], {"engine": "diverged"}, "diverged"),
    ([{"training_iteration": 2}], {"engine": "diverged", "ray": "ERROR"}, "diverged"),
    # failed once, retried from its checkpoint and ended normally: error.txt stays, the trial is not failed
    ([{"training_iteration": 4}], {"failure": "error", "ray": "TERMINATED"}, "completed"),
    ([{"training_iteration": 4}], {"failure": "diverged", "engine": "completed"}, "completed"),
    ([{"training_iteration": 2}], {"failure": "error", "ray": "TERMINATED"}, "pruned"),
    ([{"training_iteration": 2}], {"ray": "RUNNING"}, "running"),
    ([{"training_iteration": 2}], {"ray": "PENDING"}, "running"),
    ([{"training_iteration": 2}], {"ray": "PAUSED"}, "running"),
    ([], {"ray": "RUNNING"}, "running"),
])
def test_the_status_rule_of_every_case(rows, kwargs, expected):
    assert _status(rows, **kwargs) == expected


def test_why_a_trial_failed_from_failure_json_else_the_last_line_of_error_txt(tmp_path):
    assert _failure(tmp_path) == (None, None)
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n\n"
                                        "   RuntimeError: boom  \n\n  \n")
    assert _failure(tmp_path) == ("error", "RuntimeError: boom")
    (tmp_path / "error.txt").write_bytes(b"Traceback\nRuntimeError: bad byte \xff in a path\n")  # not UTF-8
    assert _failure(tmp_path) == ("error", "RuntimeError: bad byte \ufffd in a path")
    (tmp_path / "error.txt").write_text("  \n\n")
    assert _failure(tmp_path) == ("error", "see error.txt")
    (tmp_path / "failure.json").write_text("not json")  # torn: error.txt still says something
    assert _failure(tmp_path) == ("error", "see error.txt")
    (tmp_path / "failure.json").write_text("[1, 2]")  # not an object
    assert _failure(tmp_path) == ("error", "see error.txt")
    (tmp_path / "failure.json").write_text(json.dumps({"kind": "oom", "reason": "CUDA out of memory (cap 8 GiB)"}))
    assert _failure(tmp_path) == ("oom", "CUDA out of memory (cap 8 GiB)")
    (tmp_path / "failure.json").write_text("{}")
    assert _failure(tmp_path) == ("error", "")


def _write_study(root: Path, toml: str, name: str = "old") -> Path:
    study_dir = root / name
    study_dir.mkdir()
    (study_dir / "study.toml").write_text(toml)
    return study_dir


@pytest.mark.parametrize("toml", [
    'metric = "val/mIoU16"\nmode = "min"\nname = "n1"\nspace = "s1"\nsampler = "grid"\n',
    '[study]\nmetric = "val/mIoU16"\nmode = "min"\nname = "n1"\n[search]\nspace = "s1"\nsampler = "grid"\n',
    '[search]\nmetric = "val/mIoU16"\nmode = "min"\nspace = "s1"\nsampler = "grid"\n[study]\nname = "n1"\n',
    '[tune]\nmetric = "val/mIoU16"\nmode = "min"\n[study]\nname = "n1"\n[search]\nspace = "s1"\nsampler = "grid"\n',
])
def test_study_toml_of_every_earlier_layout_loads(tmp_path, toml):
    data = load_study(_write_study(tmp_path, toml))
    assert (data.name, data.metric, data.mode, data.space, data.sampler) == ("n1", "val/mIoU16", "min", "s1", "grid")


def test_the_newest_spelling_wins_and_defaults_are_named(tmp_path):
    data = load_study(_write_study(tmp_path, 'metric = "val/mIoU13"\n[study]\nmetric = "val/mIoU16"\nmode = "min"\n'
                                             '[search]\nmode = "max"\n'))
    assert data.metric == "val/mIoU13" and data.mode == "min"  # the first spelling found, in the documented order
    assert (data.name, data.space, data.sampler, data.scheduler, data.time_attr) == ("old", "?", "?", "asha",
                                                                                     "training_iteration")
    assert (data.max_t, data.grace_period, data.reduction_factor, data.num_classes) == (None, None, None, 16)
    assert data.trials == () and data.baseline is None and data.model is None and data.base_lambda is None


@pytest.mark.parametrize("scheduler, expected", [
    ("[scheduler]\ngrace = 2\nrf = 3\nmax_t = 9\n", (9, 2, 3.0)),
    ("[scheduler]\ngrace_period = 3\nreduction_factor = 4\ngrace = 2\nrf = 3\n", (None, 3, 4.0)),
    ('[scheduler]\nkind = "fifo"\ntime_attr = "iteration"\n', (None, None, None)),
])
def test_scheduler_keys_of_either_spelling(tmp_path, scheduler, expected):
    data = load_study(_write_study(tmp_path, 'metric = "val/mIoU13"\n' + scheduler))
    assert (data.max_t, data.grace_period, data.reduction_factor) == expected
    if "fifo" in scheduler:
        assert (data.scheduler, data.time_attr) == ("fifo", "iteration")


@pytest.mark.parametrize("table", ["train.data", "base.data", "data"])
def test_the_class_count_from_any_layout(tmp_path, table):
    data = load_study(_write_study(tmp_path, f'metric = "val/mIoU13"\n[{table}]\nnum_classes = 19\n'))
    assert data.num_classes == 19


@pytest.mark.parametrize("optim, interval, expected", [
    ({"iter_max": 100, "iter_stop": 45}, 10, 5),  # the run stops at iter_stop: ceil(45 / 10)
    ({"iter_max": 100}, 10, 10),
    ({"iter_max": 101}, 10, 11),
    ({"iter_max": 100, "iter_stop": 0}, 25, 4),  # 0 means "no early stop": iter_max
    ({"iter_max": 100}, 0, None),
    ({"iter_max": 100}, -10, None),
    ({"iter_max": 100}, None, None),
    ({}, 10, None),
    ({"iter_max": "100"}, 10, None),
    ({"iter_max": 5}, 1, 5),
    (5, 10, None),  # train.optim is no table
])
def test_a_full_run_in_evaluations(optim, interval, expected):
    config = {"train": {"optim": optim, **({"eval": {"interval": interval}} if interval is not None else {})}}
    assert _full_run_evaluations(config) == expected


def test_max_t_left_out_is_the_full_run(tmp_path):
    data = load_study(_write_study(tmp_path, 'metric = "val/mIoU13"\n[train.optim]\niter_max = 95\n'
                                             '[train.eval]\ninterval = 10\n'))
    assert data.max_t == 10


@pytest.mark.parametrize("toml, message", [
    ('mode = "max"\n', "metric = None is not valid; allowed: a metric name such as 'val/mIoU13'"),
    ("metric = 3\n", "metric = 3 is not valid; allowed: a metric name such as 'val/mIoU13'"),
    ("metric = [\n", "not valid TOML ("),
])
def test_a_broken_study_toml_is_named_with_what_is_allowed(tmp_path, toml, message):
    study_dir = _write_study(tmp_path, toml)
    with pytest.raises(ReportError) as err:
        load_study(study_dir)
    assert str(err.value).startswith(f"{study_dir / 'study.toml'}: ")
    assert message in str(err.value)


def test_no_study_directory_or_no_study_toml(tmp_path):
    with pytest.raises(ReportError, match="no such study directory$") as err:
        load_study(tmp_path / "nope")
    assert str(err.value) == f"{tmp_path / 'nope'}: no such study directory"
    with pytest.raises(ReportError) as err:
        load_study(tmp_path)
    assert str(err.value) == f"{tmp_path / 'study.toml'}: missing; is this a dastudy study directory?"


def test_lookup_takes_the_first_dotted_key_present():
    config = {"a": {"b": 1, "c": {"d": None}}, "e": 2, "f": "text"}
    assert _lookup(config, "x.y", "a.b", "e") == 1
    assert _lookup(config, "a.c.d", "e") is None  # present with the value None: found
    assert _lookup(config, "f.g", "a.z", default=7) == 7  # "f" is no table
    assert _lookup(config) is None


def test_json_lines_skips_torn_and_non_object_lines(tmp_path):
    path = tmp_path / "r.json"
    assert _json_lines(path) == []
    path.write_text('{"a": 1}\n{"a": 2\n[3]\n\n{"a": 4}\n')
    assert _json_lines(path) == [{"a": 1}, {"a": 4}]


def test_numbers_are_numbers_but_not_booleans():
    assert [_number(v) for v in (1, 2.5, True, False, "3", None)] == [1.0, 2.5, None, None, None, None]
    assert isinstance(_number(1), float)


def test_metrics_of_keeps_val_and_select_numbers_and_none_as_nan():
    got = _metrics_of({"val/mIoU13": 0.5, "select/mIoU13": None, "val/name": "x", "val/flag": True,
                       "train/loss": 1.0, "iteration": 10, "select/acc": 1})
    assert set(got) == {"val/mIoU13", "select/mIoU13", "select/acc"}
    assert got["val/mIoU13"] == 0.5 and math.isnan(got["select/mIoU13"]) and got["select/acc"] == 1.0
    assert isinstance(got["select/acc"], float)


def test_the_newest_experiment_state_gives_ray_statuses(tmp_path):
    assert _ray_states(tmp_path) == {}

    def state(name, statuses):
        trial_data = [[json.dumps({"relative_logdir": f"sub/{t}", "status": s}), "{}"] for t, s in statuses.items()]
        (tmp_path / name).write_text(json.dumps({"trial_data": trial_data}))

    state("experiment_state-2026-01-01_00-00-00.json", {"trial_a": "RUNNING", "trial_b": "PENDING"})
    state("experiment_state-2026-01-02_00-00-00.json", {"trial_a": "TERMINATED", "trial_b": "ERROR"})
    assert _ray_states(tmp_path) == {"trial_a": "TERMINATED", "trial_b": "ERROR"}
    (tmp_path / "experiment_state-2026-01-03_00-00-00.json").write_text('{"trial_data": [["{", "{}"]]}')
    assert _ray_states(tmp_path) == {}  # an internal format that changed: no statuses, not a crash
    (tmp_path / "experiment_state-2026-01-04_00-00-00.json").write_text("[]")
    assert _ray_states(tmp_path) == {}


def test_the_run_directory_is_found_by_its_files(tmp_path):
    trial = tmp_path / "trial"
    (trial / "a_other").mkdir(parents=True)
    (trial / "run").mkdir()
    assert _find_run_dir(trial) is None
    (trial / "a_other" / "metrics.jsonl").write_text("")
    assert _find_run_dir(trial) == trial / "a_other"
    (trial / "run" / "config.toml").write_text("")
    assert _find_run_dir(trial) == trial / "run"  # run/ before any other sub-directory
    (trial / "metrics.jsonl").write_text("")
    assert _find_run_dir(trial) == trial


def test_the_last_evaluation_from_last_eval_json_else_metrics_jsonl(tmp_path):
    assert _last_eval(None) == {}
    assert _last_eval(tmp_path) == {}
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"kind": "eval", "iteration": 10, "val/mIoU13": 0.1},
        {"kind": "eval", "iteration": 15, "val/mIoU13": 0.15},
        {"iteration": 20, "val/mIoU13": 0.2},  # no kind: an evaluation (older runs)
        {"kind": "train", "iteration": 25, "val/mIoU13": 0.9})) + "\n")
    assert _last_eval(tmp_path) == {"val/mIoU13": 0.2}
    (tmp_path / "last_eval.json").write_text(json.dumps({"iteration": 30, "val/mIoU13": 0.3}))
    assert _last_eval(tmp_path) == {"val/mIoU13": 0.3}
    (tmp_path / "last_eval.json").write_text("{")  # torn: the metrics file
    assert _last_eval(tmp_path) == {"val/mIoU13": 0.2}


def test_the_engine_status_is_read_from_its_own_result_json_only(tmp_path):
    assert _engine_status(None) is None and _engine_status(tmp_path) is None
    (tmp_path / "result.json").write_text('{"training_iteration": 1}\n{"training_iteration": 2}\n')  # Ray's lines
    assert _engine_status(tmp_path) is None
    (tmp_path / "result.json").write_text('{"status": 3}')
    assert _engine_status(tmp_path) is None
    (tmp_path / "result.json").write_text('["completed"]')
    assert _engine_status(tmp_path) is None
    (tmp_path / "result.json").write_text('{"status": "diverged"}')
    assert _engine_status(tmp_path) == "diverged"


def test_searched_names_from_space_json_and_the_replicate_seed(tmp_path):
    params = [{"a.x": 1, "runtime.seed": 1, "b": 5, "runtime.seeds": 1, "model.seedling": 1},
              {"a.x": 2, "runtime.seed@m": 2, "b": 5, "seed": 3, "a.seed.x": 1, "a.b.seed": 1}]
    (tmp_path / "space.json").write_text(json.dumps({"dimensions": {"b": [], "a.x": []}}))
    assert _searched_names(tmp_path, params) == ["b", "a.x", "a.b.seed", "runtime.seed", "runtime.seed@m", "seed"]
    for broken in ('{"dimensions": {}}', '{"dimensions": [1]}', "[]", "{"):
        (tmp_path / "space.json").write_text(broken)
        # no usable space: the parameters that vary between trials (a key one trial lacks varies), by name
        assert _searched_names(tmp_path, params) == ["a.b.seed", "a.seed.x", "a.x", "model.seedling", "runtime.seed",
                                                     "runtime.seed@m", "runtime.seeds", "seed"], broken
    (tmp_path / "space.json").unlink()
    assert _searched_names(tmp_path, [{"b": {"k": [1, 2]}}, {"b": {"k": [1, 2]}}]) == []
    assert _searched_names(tmp_path, [{"b": {"k": 1, "j": 2}}, {"b": {"j": 2, "k": 1}}]) == []  # same dict


def _record(name, metric, *, status="completed", order=None, curve=()):
    return TrialRecord(name=name, trial_id=name, params={}, status=status, rounds=1, iteration=None, metric=metric,
                       final={}, curve=curve, time_s=None, run_dir=None, order=order)


def test_scored_trials_best_first_ties_in_start_order_then_by_name(tmp_path):
    study_dir = _write_study(tmp_path, 'metric = "val/mIoU13"\n')
    data = load_study(study_dir)
    trials = (_record("e", 0.5, order=None), _record("d", 0.5, order=None), _record("b", 0.5, order=2),
              _record("c", 0.5, order=1), _record("a", 0.4, order=0), _record("f", 0.9, status="failed"),
              _record("g", 0.9, status="diverged"), _record("h", math.nan), _record("i", None),
              _record("j", 0.45, status="pruned"), _record("k", 0.2, status="running"))
    data = dataclasses.replace(data, trials=trials)
    assert [t.name for t in data.scored()] == ["c", "b", "d", "e", "j", "a", "k"]  # start order, not the name
    low = dataclasses.replace(data, mode="min")
    assert [t.name for t in low.scored()] == ["k", "a", "j", "c", "b", "d", "e"]
    assert data.selection == "val"
    assert dataclasses.replace(data, metric="select/mIoU13").selection == "holdout"


def test_best_report_skips_non_finite_evaluations():
    trial = _record("t", 0.3, curve=((1, 0.2), (2, math.nan), (3, 0.5), (4, 0.3), (5, math.inf)))
    assert trial.best_report("max") == 0.5 and trial.best_report("min") == 0.2
    assert _record("t", None, curve=((1, math.nan),)).best_report("max") is None


def _baseline(tmp_path, result, evals):
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    if result is not None:
        (baseline / "result.json").write_text(json.dumps(result))
    (baseline / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    return baseline


def test_the_source_only_number_is_the_start_checkpoints_evaluation(tmp_path):
    evals = [{"kind": "eval", "iteration": 100, "val/mIoU13": 0.10}, {"kind": "train", "iteration": 200},
             {"kind": "eval", "iteration": 200, "val/mIoU13": 0.20}, {"kind": "eval", "iteration": 300,
                                                                       "val/mIoU13": 0.15},
             {"kind": "eval", "iteration": 200, "val/mIoU13": 0.21},  # re-evaluated after a resume: the last
             {"kind": "train", "iteration": 200, "train/loss_seg": 0.7}]  # a training line is no evaluation
    baseline = _baseline(tmp_path, {"best_iteration": 200}, evals)
    assert _start_checkpoint_eval(baseline, tmp_path, []) == ({"val/mIoU13": 0.21}, 200, None)
    # an older engine wrote no "kind": every line is an evaluation
    (baseline / "metrics.jsonl").write_text(json.dumps({"iteration": 200, "val/mIoU13": 0.22}) + "\n")
    assert _start_checkpoint_eval(baseline, tmp_path, []) == ({"val/mIoU13": 0.22}, 200, None)


@pytest.mark.parametrize("result, why", [
    (None, "baseline/result.json names no best_iteration"),
    ({"status": "completed"}, "baseline/result.json names no best_iteration"),
    ([200], "baseline/result.json names no best_iteration"),
    ({"best_iteration": 250}, "baseline/metrics.jsonl has no evaluation at best_iteration 250"),
])
def test_an_older_baseline_falls_back_to_its_last_evaluation_and_says_so(tmp_path, result, why):
    baseline = _baseline(tmp_path, result, [{"kind": "eval", "iteration": 100, "val/mIoU13": 0.10},
                                            {"kind": "eval", "iteration": 300, "val/mIoU13": 0.15}])
    metrics, iteration, note = _start_checkpoint_eval(baseline, tmp_path, [])
    assert (metrics, iteration) == ({"val/mIoU13": 0.15}, None)
    assert note == (f"{why} (a study directory from an older version): the source-only numbers are the baseline's "
                    "last evaluation, which may not be the checkpoint (best.pt) the trials start from")


def test_a_baseline_scored_otherwise_than_the_trials_is_named_key_by_key(tmp_path):
    baseline = _baseline(tmp_path, {"best_iteration": 100}, [{"kind": "eval", "iteration": 100, "val/mIoU13": 0.1}])
    run = tmp_path / "trial_0" / "run"
    run.mkdir(parents=True)
    (baseline / "config.toml").write_text('[eval]\nprotocol = "full"\nflip = true\nmax_images = 50\n'
                                          '[data]\nval = "val"\nnum_classes = 16\n')
    (run / "config.toml").write_text('[eval]\nprotocol = "full"\nflip = false\nmax_images = 50\n'
                                     '[data]\nval = "val"\nnum_classes = 19\n')
    assert _start_checkpoint_eval(baseline, tmp_path, [_record("x", 0.2)])[2] is None  # no trial config to compare
    trials = [_record("x", 0.2), dataclasses.replace(_record("y", 0.2), run_dir="trial_0/run")]
    _, _, note = _start_checkpoint_eval(baseline, tmp_path, trials)
    assert note == ("the source-only baseline was evaluated with other settings than the trials (eval.flip, "
                    "data.num_classes differ between baseline/config.toml and trial_0/run/config.toml): its numbers "
                    "are not scored the way the trials are")
    (run / "config.toml").write_text((baseline / "config.toml").read_text())
    assert _start_checkpoint_eval(baseline, tmp_path, trials)[2] is None
    (run / "config.toml").write_text("[eval\n")  # unreadable: no claim either way
    assert _start_checkpoint_eval(baseline, tmp_path, trials)[2] is None



def test_a_trial_whose_ray_files_never_reached_the_study_is_read_from_its_engine_output(tmp_path):
    """A driver killed right after a trial ended: no params.json/result.json, but run/ and the Optuna record are
    complete. Its rows are rebuilt from run/metrics.jsonl's evaluations, numbered as Ray would number them."""
    from types import SimpleNamespace

    from study.report.collect import _engine_only_trials
    from study.report.importance import OptunaRecord

    def run(name, status, evals):
        run_dir = tmp_path / name / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps({"status": status}))
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))

    evals = [{"kind": "train", "iteration": 5, "train/loss_seg": 1.0},
             {"kind": "eval", "iteration": 10, "val/mIoU13": 0.1, "select/mIoU13": 0.09, "uda/snd": 0.5,
              "time_s": 3.0},
             {"iteration": 15, "val/mIoU13": 0.9},  # no kind: not counted here (the engine always writes it)
             {"kind": "eval", "iteration": 20, "val/mIoU13": 0.2},
             {"kind": "eval", "iteration": 30, "val/mIoU13": 0.3}]
    run("trial_done", "completed", evals)
    run("trial_stopped", "stopped", evals[:2])
    run("trial_known", "completed", evals)
    (tmp_path / "trial_nofile" / "run").mkdir(parents=True)  # no run/result.json: nothing to rebuild from

    def record(trial_dir, lam):
        return OptunaRecord(trial_dir=trial_dir, params={"adapt.lambda_adv_main": lam}, distributions={},
                            value=None, state="COMPLETE")

    summary = SimpleNamespace(records=(record("trial_done", 0.001), record("", 0.002), record("trial_known", 0.003),
                                       record("trial_nofile", 0.004), record("trial_stopped", 0.005)))
    known = {"trial_known"}
    got = _engine_only_trials(tmp_path, summary, known=known)
    assert [(d.name, p) for d, p, _ in got] == [("trial_done", {"adapt.lambda_adv_main": 0.001}),
                                                ("trial_stopped", {"adapt.lambda_adv_main": 0.005})]
    assert got[0][2] == [
        {"val/mIoU13": 0.1, "select/mIoU13": 0.09, "uda/snd": 0.5, "iteration": 10, "training_iteration": 1,
         "trial_id": "done"},
        {"val/mIoU13": 0.2, "iteration": 20, "training_iteration": 2, "trial_id": "done"},
        {"val/mIoU13": 0.3, "iteration": 30, "training_iteration": 3, "trial_id": "done", "finished": 1.0}]
    assert got[1][2] == [{"val/mIoU13": 0.1, "select/mIoU13": 0.09, "uda/snd": 0.5, "iteration": 10,
                          "training_iteration": 1, "trial_id": "stopped"}]  # stopped early: not finished
    assert known == {"trial_known", "trial_done", "trial_stopped"}
    assert _engine_only_trials(tmp_path, SimpleNamespace(), known=set()) == []  # a summary without records


def test_every_field_of_a_loaded_study_read_back_from_the_files_it_came_from(tmp_path):
    """The fixture study of the report tests, loaded: each trial record against its own result.json (Ray's rows),
    error.txt and failure.json, and the study's fields against study.toml, baseline/ and the run configs."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import LAMBDA, LR, SEED, TRIALS, make_study

    study_dir = make_study(tmp_path, trials=TRIALS, baseline=True, baseline_model="deeplabv3plus_tiny")
    (study_dir / "notes").mkdir()  # a directory without params.json is no trial
    (study_dir / "params.json").write_text("{}")  # nor is a file
    data = load_study(study_dir)
    assert (data.name, data.metric, data.mode, data.space, data.sampler) == ("fixture", "val/mIoU13", "max",
                                                                             "lambda_lr", "tpe")
    assert (data.max_t, data.grace_period, data.reduction_factor, data.scheduler) == (4, 1, 2.0, "asha")
    assert [t.name[-2:] for t in data.trials] == ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]  # by directory name
    statuses = {t.name[-2:]: t.status for t in data.trials}
    assert statuses == {"t0": "completed", "t1": "completed", "t2": "completed", "t3": "pruned", "t4": "pruned",
                        "t5": "failed", "t6": "diverged"}
    for index, t in enumerate(data.trials):
        rows = [json.loads(line) for line in (study_dir / t.name / "result.json").read_text().splitlines()]
        spec = TRIALS[index]
        assert t.params == {LAMBDA: spec[1], LR: spec[2], SEED: spec[3]}
        assert (t.trial_id, t.rounds, t.iteration, t.time_s) == (f"abc_{index:05d}", spec[4], 10 * spec[4],
                                                                 3.0 * spec[4])
        assert t.curve == tuple((r["training_iteration"], r["val/mIoU13"]) for r in rows)
        assert t.metric == rows[-1]["val/mIoU13"] and t.order == index
        assert t.final == {k: v for k, v in rows[-1].items() if k.startswith("val/")}
        assert t.run_dir == f"{t.name}/run"
    reasons = {t.name[-2:]: t.reason for t in data.trials}
    assert reasons["t5"] == "RuntimeError: boom" and reasons["t6"] == "diverged at iteration 25: loss is nan"
    assert reasons["t0"] is None
    evals = [json.loads(line) for line in (study_dir / "baseline" / "metrics.jsonl").read_text().splitlines()]
    at_20 = [r for r in evals if r.get("kind") == "eval" and r["iteration"] == 20][0]
    assert data.baseline == {k: v for k, v in at_20.items() if k.startswith("val/")}
    assert (data.baseline_dir, data.baseline_iteration, data.baseline_note) == ("baseline", 20, None)
    assert data.baseline_model == "deeplabv3plus_tiny"
    import tomllib

    run_model = tomllib.loads((study_dir / data.trials[0].run_dir / "config.toml").read_text())["model"]["name"]
    assert data.model == run_model == "deeplabv2_resnet101"  # no train.model.name in study.toml: the run config
    assert data.base_lambda is None and data.num_classes == 16  # no mIoU19 anywhere
    assert data.optuna.states == {"COMPLETE": 3, "PRUNED": 2, "FAIL": 2}
    rows = [json.loads(line) for line in (study_dir / data.trials[0].name / "result.json").read_text().splitlines()]
    (study_dir / data.trials[0].name / "result.json").write_text(
        "".join(json.dumps({**r, "val/mIoU19": 0.3}) + "\n" for r in rows))
    assert load_study(study_dir).num_classes == 19  # a 19-class score in any trial: a GTA5 study


def test_a_study_without_baseline_or_trials_has_neither(tmp_path):
    data = load_study(_write_study(tmp_path, 'metric = "val/mIoU13"\n[train.model]\nname = "deeplabv2"\n'
                                             '[train.adapt]\nlambda_adv_main = 0.002\n'))
    assert (data.baseline, data.baseline_dir, data.baseline_model, data.baseline_iteration, data.baseline_note) == (
        None, None, None, None, None)
    assert (data.model, data.base_lambda) == ("deeplabv2", 0.002)


def test_the_odd_trials_of_a_real_study_each_read_as_what_happened_to_them(tmp_path):
    """One trial each: its run directory lost, its Ray status ERROR or RUNNING with nothing else saying so, its
    last row without "finished", a null score, no report at all, an engine that says diverged, Ray files that never
    reached the study; and a baseline of an older version (no result.json) that scored 19 classes."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import LAMBDA, LR, SEED, TRIALS, make_study

    trials = TRIALS + [("t7", 1e-3, 0.01, 3, 0, "failed"), ("t8", 2e-3, 0.01, 3, 2, "pruned"),
                       ("t9", 3e-3, 0.01, 3, 4, "completed")]
    study_dir = make_study(tmp_path, trials=trials, baseline=True, baseline_result=False)
    dirs = {p.name[-2:]: p for p in study_dir.glob("trial_*")}
    shutil.rmtree(dirs["t0"] / "run")
    (dirs["t1"] / "run" / "last_eval.json").write_text(json.dumps({"iteration": 40, "select/extra": 0.5,
                                                                   "val/mIoU13": 0.0}))

    def rewrite(name, change):
        rows = [json.loads(line) for line in (dirs[name] / "result.json").read_text().splitlines()]
        change(rows)
        (dirs[name] / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))

    rewrite("t2", lambda rows: rows[-1].pop("finished"))
    rewrite("t4", lambda rows: rows[0].update({"val/mIoU13": None}))
    (dirs["t8"] / "run" / "result.json").write_text(json.dumps({"status": "diverged"}))
    (dirs["t9"] / "params.json").unlink()
    (dirs["t9"] / "result.json").unlink()
    (dirs["t9"] / "run" / "result.json").write_text(json.dumps({"status": "completed"}))
    state = study_dir / "experiment_state-2026-01-01_00-00-00.json"
    trial_data = json.loads(state.read_text())["trial_data"]
    for entry in trial_data:
        trial = json.loads(entry[0])
        trial["status"] = {"t1": "ERROR", "t3": "RUNNING"}.get(trial["relative_logdir"][-2:], trial["status"])
        entry[0] = json.dumps(trial)
    state.write_text(json.dumps({"trial_data": trial_data}))
    baseline_rows = [json.loads(line) for line in (study_dir / "baseline" / "metrics.jsonl").read_text().splitlines()]
    baseline_rows[-1]["val/mIoU19"] = 0.2
    (study_dir / "baseline" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in baseline_rows))

    data = load_study(study_dir)
    by = {t.name[-2:]: t for t in data.trials}
    assert {k: t.status for k, t in by.items()} == {
        "t0": "completed", "t1": "failed", "t2": "completed", "t3": "running", "t4": "pruned", "t5": "failed",
        "t6": "diverged", "t7": "failed", "t8": "diverged", "t9": "completed"}
    assert by["t0"].run_dir is None and by["t1"].run_dir == f"{dirs['t1'].name}/run"
    assert by["t1"].reason is None and by["t8"].reason is None  # nothing wrote why
    assert by["t1"].final["select/extra"] == 0.5  # from the run's last evaluation file ...
    assert by["t1"].final["val/mIoU13"] == by["t1"].metric != 0.0  # ... where Ray's row has the value, Ray's row
    assert [r for r, _ in by["t4"].curve] == [2]  # the null score is no point of the curve
    t7 = by["t7"]
    assert (t7.trial_id, t7.rounds, t7.iteration, t7.metric, t7.curve, t7.final, t7.time_s) == (
        dirs["t7"].name, 0, None, None, (), {}, None)
    t9 = by["t9"]
    assert t9.params == {LAMBDA: 3e-3, LR: 0.01, SEED: 3} and t9.trial_id == dirs["t9"].name.removeprefix("trial_")
    assert [r for r, _ in t9.curve] == [1, 2, 3, 4] and t9.rounds == 4 and t9.iteration == 40
    assert data.model == "deeplabv2_resnet101"  # from the first trial that still has its run config
    assert data.num_classes == 19  # the baseline scored 19 classes
    assert data.baseline_iteration is None and data.baseline_note.startswith(
        "baseline/result.json names no best_iteration (a study directory from an older version)")
    assert data.baseline["val/mIoU19"] == 0.2  # the last evaluation


def test_a_baseline_directory_without_evaluations_is_no_baseline(tmp_path):
    study_dir = _write_study(tmp_path, 'metric = "val/mIoU13"\n')
    (study_dir / "baseline").mkdir()
    (study_dir / "baseline" / "config.toml").write_text('[model]\nname = "deeplabv2"\n')
    data = load_study(study_dir)
    assert (data.baseline, data.baseline_dir, data.baseline_model, data.baseline_iteration, data.baseline_note) == (
        None, None, None, None, None)
