"""One identity per trial: the label of study.config.labels in Optuna's user attributes, TensorBoard, the report,
`study status` and the progress lines of a running study (replicates: the configuration's number and the seed)."""
from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study.config.labels import format_value, pct, percent_name, symbol, trial_label

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_trial_label_short_symbols_number_first_and_space_order():
    params = {"adapt.lambda_adv_main": 0.029134, "optim.lr@deeplabv2_tiny": 0.04291, "runtime.seed": 1}
    assert trial_label(6, params) == "#6 λ=0.0291 lr=0.0429 seed=1"
    # the space's order, not the dict's; a parameter the space does not name is left out
    assert trial_label(6, params, ["runtime.seed", "optim.lr@deeplabv2_tiny"]) == "#6 seed=1 lr=0.0429"
    # the backbone by its value alone; a key without a symbol keeps its dotted name
    assert trial_label(0, {"model.name": "deeplabv2_tiny", "model.weights": "x"}) == \
        "#0 deeplabv2_tiny model.weights=x"
    # no Optuna number: the fallback (a directory name) takes its place
    assert trial_label(None, {"adapt.lambda_adv_main": 0.0}, fallback="trial_ab") == "trial_ab λ=0"
    assert symbol("adapt.lambda_adv_main") == symbol("lambda_adv") == "λ"
    assert format_value(2.5e-4) == "0.00025" and format_value(3) == "3" and format_value(math.nan) == "nan"


def test_iou_metrics_are_named_with_their_unit():
    assert percent_name("val/mIoU16") == "val/mIoU16 %"
    assert percent_name("select/mIoU13") == "select/mIoU13 %"
    assert percent_name("val/IoU/road") == "val/IoU/road %"
    assert percent_name("uda/entropy") == "uda/entropy" and percent_name("train/loss_seg") == "train/loss_seg"
    assert pct(0.150863) == "15.09" and pct(None) == "n/a"


def test_the_searcher_gives_each_optuna_trial_its_label_and_the_metric_in_percent(tmp_path):
    """What optuna-dashboard shows: the label and the metric in percent as user attributes, next to the value
    (the fraction the sampler learns from, unchanged)."""
    from study.run.search import StudySearch
    from study.config.spaces import get_space, make_define_by_run, resolve_params

    space = get_space("lambda_adv")
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    searcher = StudySearch(make_define_by_run(space, resolve_params(space, {})), metric="val/mIoU16", mode="max",
                           max_t=2, study_dir=tmp_path, sampler=optuna.samplers.RandomSampler(seed=0),
                           study_name="unit", storage=storage)
    configs = {tid: searcher.suggest(tid) for tid in "ab"}
    searcher.on_trial_result("a", {"val/mIoU16": 0.1, "training_iteration": 1})
    searcher.on_trial_complete("a", result={"val/mIoU16": 0.150863, "training_iteration": 2, "finished": 1.0})
    searcher.on_trial_complete("b", error=True)
    study = optuna.load_study(study_name="unit", storage=storage)
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    for tid, trial in by_ray.items():
        assert trial.user_attrs["label"] == trial_label(trial.number, trial.params)
        lam = configs[tid]["adapt.lambda_adv_main"]
        assert trial.user_attrs["label"].startswith(f"#{trial.number} λ={lam:.3g}")
    assert by_ray["a"].value == pytest.approx(0.150863)
    assert by_ray["a"].user_attrs["val/mIoU16 %"] == pytest.approx(15.0863)
    assert "val/mIoU16 %" not in by_ray["b"].user_attrs  # failed: no value to show


def test_a_replicates_label_is_its_configurations_with_its_seed():
    params = {"adapt.lambda_adv_main": 0.029134, "optim.lr@deeplabv2_tiny": 0.04291}
    assert trial_label(6, params, seed=2) == "#6 λ=0.0291 lr=0.0429 seed=2"
    # a searched seed is shown once, where the space puts it
    assert trial_label(6, {**params, "runtime.seed": 1}, seed=1) == "#6 λ=0.0291 lr=0.0429 seed=1"
    assert trial_label(None, params, fallback="trial_ab", seed=3) == "trial_ab λ=0.0291 lr=0.0429 seed=3"


# ---------------------------------------------------------------------------------------------------------
# live progress: the label the searcher knows, not Ray's trial_<id>


def _progress_lines(capsys, progress, trials):
    from types import SimpleNamespace

    for trial in trials:
        progress.on_trial_start(0, [], trial)
        progress.on_trial_result(0, [], trial, {"val/mIoU16": 0.1184, "training_iteration": 1})
        trial.last_result = {"val/mIoU16": 0.2, "training_iteration": 4, "finished": 1.0}
        progress.on_trial_complete(0, [], trial)
    progress.on_trial_error(0, [], SimpleNamespace(trial_id=trials[0].trial_id, config=trials[0].config,
                                                   storage=SimpleNamespace(trial_fs_path="/s/trial_x")))
    return [ln.split("] ", 1)[1] for ln in capsys.readouterr().out.splitlines()]


def test_progress_lines_name_a_trial_by_its_label(tmp_path, capsys):
    from types import SimpleNamespace

    from study.config.spaces import describe_space, get_space, make_define_by_run, resolve_params
    from study.run.progress import LiveProgress
    from study.run.search import StudyProgress, StudySearch, TrialLabels

    space = get_space("lambda_lr")
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    searcher = StudySearch(make_define_by_run(space, resolve_params(space, {})), metric="val/mIoU16", mode="max",
                           max_t=4, study_dir=tmp_path, sampler=optuna.samplers.RandomSampler(seed=0),
                           study_name="unit", storage=storage)
    configs = {tid: searcher.suggest(tid) for tid in ("p8707e148", "q3bf31302")}
    dims = list(describe_space(space, resolve_params(space, {}), sampler="random")["dimensions"])  # as tuner.py
    assert len(dims) == 2
    labels = TrialLabels(dims)
    trials = [SimpleNamespace(trial_id=tid, config=config, storage=None) for tid, config in configs.items()]
    study = optuna.load_study(study_name="unit", storage=storage)
    attrs = {t.user_attrs["ray_trial_id"]: t.user_attrs["label"] for t in study.trials}
    # the label optuna-dashboard shows (the searcher's user attribute), TensorBoard's run name for that trial
    from study.view.tensorboard import run_name

    for number, trial in enumerate(trials):
        assert labels(trial) == attrs[trial.trial_id] == run_name(trial.config, dims, number)
        assert labels(trial).startswith(f"#{number} λ=")
    lines = _progress_lines(capsys, StudyProgress(metric="val/mIoU16", mode="max", max_t=4, num_samples=2,
                                                  name_of=labels), trials)
    first = labels(trials[0])
    assert lines[0] == f"{first} started   in trial_p8707e148"
    assert lines[1] == f"{first} eval 1/4  val/mIoU16=11.84%  (highest so far)"
    assert lines[2] == f"{first} COMPLETE  val/mIoU16=20.00%   [1/2 trials ended]"
    assert lines[-1].startswith(f"{first} FAILED  see /s/trial_x/error.txt")  # the path stays where a path is wanted
    assert not [ln for ln in lines if ln.startswith("trial_")]
    # the live table's trial column too
    live = LiveProgress(StudyProgress(metric="val/mIoU16", mode="max", max_t=4, num_samples=2), name_of=labels,
                        metric="val/mIoU16", mode="max", max_t=4, num_samples=2, max_concurrent=2)
    rows = live._table([SimpleNamespace(**{**vars(t), "status": "RUNNING", "last_result": {}}) for t in trials], max_rows=5)
    assert rows[1].strip().startswith(first) and "trial_p8707e148" not in "".join(rows)
    # a trial no searcher of this driver numbered (a PBT member): its directory in place of the number, as in the
    # report and TensorBoard
    stray = SimpleNamespace(trial_id="zz", config=configs["p8707e148"])
    assert labels(stray) == first.replace("#0", "trial_zz")


def test_replicates_carry_their_configurations_number_and_their_seed_in_progress_lines(tmp_path, capsys):
    from types import SimpleNamespace

    from study.config.spaces import get_space, make_define_by_run, resolve_params
    from study.run.replicates import ReplicateSearch
    from study.run.search import StudyProgress, StudySearch, TrialLabels

    space = get_space("lambda_adv")
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    inner = StudySearch(make_define_by_run(space, resolve_params(space, {})), metric="val/mIoU16", mode="max",
                        max_t=4, num_samples=2, study_dir=tmp_path, sampler=optuna.samplers.RandomSampler(seed=0),
                        study_name="unit", storage=storage)
    searcher = ReplicateSearch(inner, seeds=[1, 2])
    trials = [SimpleNamespace(trial_id=tid, config=searcher.suggest(tid), storage=None) for tid in ("ra", "rb", "rc")]
    labels = TrialLabels(["adapt.lambda_adv_main"], replicates=True)
    config_label = {t.user_attrs["trial_dir"]: t.user_attrs["label"]
                    for t in optuna.load_study(study_name="unit", storage=storage).trials}
    assert [labels(t) for t in trials] == [f"{config_label['trial_ra']} seed=1", f"{config_label['trial_ra']} seed=2",
                                           f"{config_label['trial_rc']} seed=1"]
    assert config_label["trial_ra"].startswith("#0 λ=") and config_label["trial_rc"].startswith("#1 λ=")
    lines = _progress_lines(capsys, StudyProgress(metric="val/mIoU16", mode="max", max_t=4, num_samples=4,
                                                  name_of=labels), trials[:2])
    assert lines[0] == f"{config_label['trial_ra']} seed=1 started   in trial_ra"
    assert lines[3] == f"{config_label['trial_ra']} seed=2 started   in trial_rb"
    # a driver that resumes the study restores the searcher: its numbers come back with it
    from study.run import search as search_module

    search_module._OPTUNA_NUMBERS.clear()
    restored = ReplicateSearch(StudySearch(make_define_by_run(space, resolve_params(space, {})), metric="val/mIoU16",
                                           mode="max", max_t=4, num_samples=2, study_dir=tmp_path,
                                           sampler=optuna.samplers.RandomSampler(seed=0), study_name="unit",
                                           storage=storage), seeds=[1, 2])
    (tmp_path / "state.json").write_text(json.dumps(searcher.state_dict()))
    restored.restore(str(tmp_path / "state.json"))
    assert labels(trials[1]) == f"{config_label['trial_ra']} seed=2"


# ---------------------------------------------------------------------------------------------------------
# a study with replicates (search.seeds): report, TensorBoard and status agree


def _replicate_study(tmp_path):
    """The report tests' study directory as a study with ``search.seeds = [1, 2]`` writes it: the seed is no
    searched dimension (space.json), Ray's params.json holds it, and Optuna has one trial per configuration (the
    replicate mean), its first replicate as ``trial_dir`` and every replicate in ``replicate_trials``."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import LAMBDA, LR, SEED, make_study

    trials = [("a1", 1e-3, 0.01, 1, 4, "completed"), ("a2", 1e-3, 0.01, 2, 4, "completed"),
              ("b1", 4e-3, 0.02, 1, 4, "completed"), ("b2", 4e-3, 0.02, 2, 4, "completed")]
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    space = json.loads((study_dir / "space.json").read_text())
    del space["dimensions"][SEED]
    (study_dir / "space.json").write_text(json.dumps(space))
    toml = study_dir / "study.toml"
    toml.write_text(toml.read_text().replace('[search]\n', '[search]\nseeds = [1, 2]\n')
                    .replace('mode = "max"\n', 'mode = "max"\nnum_samples = 2\n'))
    dirs = {p.name.rsplit("_", 1)[1]: p.name for p in study_dir.glob("trial_*")}
    for name in dirs.values():
        (study_dir / name / "run" / "tb").mkdir()
    (study_dir / "optuna.journal").unlink()
    ostudy = optuna.create_study(study_name="fixture", direction="maximize", storage=JournalStorage(
        JournalFileBackend(str(study_dir / "optuna.journal"))))
    from optuna.distributions import FloatDistribution

    dists = {LAMBDA: FloatDistribution(1e-4, 1e-2, log=True), LR: FloatDistribution(2e-3, 5e-2, log=True)}
    for config, lam, lr in (("a", 1e-3, 0.01), ("b", 4e-3, 0.02)):
        number = len(ostudy.trials)
        ostudy.add_trial(optuna.trial.create_trial(
            params={LAMBDA: lam, LR: lr}, distributions=dists, value=0.5,
            user_attrs={"trial_dir": dirs[f"{config}1"], "ray_trial_id": dirs[f"{config}1"][6:],
                        "label": trial_label(number, {LAMBDA: lam, LR: lr}), "seeds": [1, 2],
                        "replicate_trials": {"1": dirs[f"{config}1"], "2": dirs[f"{config}2"]},
                        # each seed's value behind the mean (0.5): configuration b is the better one
                        "seed_values": {"1": 0.45 + 0.02 * (config == "b"), "2": 0.55 + 0.02 * (config == "b")}}))
    return study_dir, dirs


def test_replicates_are_labelled_alike_in_the_report_tensorboard_and_status(tmp_path):
    from study.commands.study import collect_trials, format_trials_table
    from study.report import load_study, write_report
    from study.view.tensorboard import build_view

    study_dir, dirs = _replicate_study(tmp_path)
    expected = {dirs["a1"]: "#0 λ=0.001 lr=0.01 seed=1", dirs["a2"]: "#0 λ=0.001 lr=0.01 seed=2",
                dirs["b1"]: "#1 λ=0.004 lr=0.02 seed=1", dirs["b2"]: "#1 λ=0.004 lr=0.02 seed=2"}
    data = load_study(study_dir)
    assert {t.name: data.label(t) for t in data.trials} == expected
    write_report(study_dir)
    from test_report import _table  # on sys.path since _replicate_study

    header, *body = _table((study_dir / "report.md").read_text(), "## Trials")
    assert {r[header.index("dir")]: r[header.index("trial")] for r in body} == expected
    view = build_view(study_dir)
    made = {p.name: p.resolve().parent.parent.name for p in view.iterdir() if p.is_symlink()}
    assert {directory: name for name, directory in made.items()} == expected
    # status: one row per replicate (Optuna holds one trial per configuration, its replicate mean): each with its
    # seed, its own value and directory; the best configuration is ranked over its seeds (it was "none": every
    # row looked like a configuration of one run)
    info = collect_trials(study_dir)
    assert {t["trial"]: t["label"] for t in info["trials"]} == expected
    assert [t["value"] for t in info["trials"]] == pytest.approx([0.45, 0.55, 0.47, 0.57])
    text = format_trials_table(info)
    assert [r[:r.index("  ")] for r in text.splitlines()[2:6]] == sorted(expected.values())
    assert "4 of 4 trials (4 COMPLETE)" in text  # num_samples 2 configurations x 2 seeds
    assert "best configuration by its mean over seeds (val/mIoU13, completed trials): 52.00 ± 7.07 % (n = 2" in text


def test_a_running_study_names_its_trials_by_their_labels_in_both_progress_displays(tmp_path):
    """What `study run` / `resume` hands Ray (study.run.tuner.study_progress): the plain lines and the live table
    share one TrialLabels over the space's dimensions, with the seed shown for replicates."""
    from types import SimpleNamespace

    from study.config.study_config import study_from_dict
    from study.run.search import TrialLabels, note_optuna_number
    from study.run.tuner import study_progress

    table = {"name": "unit", "metric": "mIoU16", "mode": "max", "num_samples": 2,
             "search": {"space": "lambda_adv", "sampler": "random", "seeds": [1, 2]},
             "train": {"optim": {"iter_max": 40, "iter_stop": 40}, "eval": {"interval": 10}}}
    live = study_progress(study_from_dict(table, source="unit.toml", cwd=tmp_path))
    assert isinstance(live.name_of, TrialLabels) and live.plain.name_of is live.name_of
    assert live.name_of.dimensions == ["adapt.lambda_adv_main"] and live.name_of.replicates
    note_optuna_number("live_a", 3)
    trial = SimpleNamespace(trial_id="live_a", config={"adapt.lambda_adv_main": 0.01, "runtime.seed": 2})
    assert live.name_of(trial) == "#3 λ=0.01 seed=2"
    del table["search"]["seeds"]
    assert not study_progress(study_from_dict(table, source="unit.toml", cwd=tmp_path)).name_of.replicates
