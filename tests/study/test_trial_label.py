"""One identity per trial: the label of study.config.labels in Optuna's user attributes, TensorBoard and the report."""
from __future__ import annotations

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
