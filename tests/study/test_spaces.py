"""Search spaces: registry, parameters, grids, JSON descriptions, and valid TrainConfigs for sampled points."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from study.config import spaces
from study.config.spaces import (SEED_LAMBDA_GRID, SpaceError, describe_space, get_space, grid_search_space,
                          make_define_by_run, resolve_params)
from study_helpers import tiny_train_table
from trainables.config import TrainConfig, from_dict
from trainables.tune import apply_overrides

optuna.logging.set_verbosity(optuna.logging.WARNING)

REQUIRED = ("lambda_adv", "lambda_adv_levels", "lr", "lr_d", "backbone", "gan", "target_loss", "seeds")


def _base(model: str = "deeplabv2_resnet101") -> dict:
    table = tiny_train_table(Path("/nonexistent"))
    table["model"] = {"name": model}
    return table


def test_registry_has_the_required_spaces_and_unknown_names_are_listed():
    for name in REQUIRED:
        assert get_space(name).name == name
    with pytest.raises(SpaceError, match="known spaces: .*lambda_adv"):
        get_space("lamda_adv")


def test_unknown_and_mistyped_parameters_are_refused():
    space = get_space("lambda_adv")
    with pytest.raises(SpaceError, match=r"search.params.lamda_low: unknown parameter .*lambda_low"):
        resolve_params(space, {"lamda_low": 1e-4})
    with pytest.raises(SpaceError, match="expected float"):
        resolve_params(space, {"lambda_low": "small"})
    with pytest.raises(SpaceError, match="0 < lambda_low < lambda_high"):
        resolve_params(space, {"lambda_low": 1e-2, "lambda_high": 1e-3})
    assert resolve_params(space, {"lambda_high": 0.02})["lambda_high"] == 0.02


def test_lambda_grid_is_the_seed_sweep_and_grid_sampler_visits_each_point_once():
    space = get_space("lambda_adv")
    params = resolve_params(space, {})
    grid = grid_search_space(space, params)
    assert grid == {"adapt.lambda_adv_main": [0.0005, 0.001, 0.002, 0.004]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0), direction="maximize")
    define = make_define_by_run(space, params, grid=True)
    seen = []
    for _ in range(4):
        trial = study.ask()
        define(trial)
        seen.append(trial.params["adapt.lambda_adv_main"])
        try:
            study.tell(trial, 0.0)
        except RuntimeError:  # GridSampler stops the study once the grid is exhausted (outside optimize)
            assert len(seen) == 4
    assert sorted(seen) == list(SEED_LAMBDA_GRID)


def test_lambda_sensitivity_grid_is_lambda_x_seed_x_backbone_with_single_level_constants():
    space = get_space("lambda_sensitivity")
    params = resolve_params(space, {"models": ["deeplabv2_resnet101", "deeplabv3plus_resnet101"], "seeds": [1, 2]})
    grid = grid_search_space(space, params)
    assert len(grid["adapt.lambda_adv_main"]) * len(grid["runtime.seed"]) * len(grid["model.name"]) == 16
    described = describe_space(space, params, sampler="grid")
    assert described["grid_size"] == 16
    # DeepLabV3+ has one output level: no auxiliary discriminator weight.
    v3 = [c for c in described["constants"] if c["when"] == [{"model.name": "deeplabv3plus_resnet101"}]]
    assert v3 and v3[0]["set"] == {"model.multi_level": False, "adapt.lambda_adv_aux": 0.0}


def test_learning_rate_range_depends_on_the_backbone():
    space = get_space("lr_backbone")
    params = resolve_params(space, {"models": ["deeplabv2_resnet101", "deeplabv2_tiny"]})
    dims = describe_space(space, params, sampler="tpe")["dimensions"]
    big, tiny = dims["optim.lr@deeplabv2_resnet101"][0], dims["optim.lr@deeplabv2_tiny"][0]
    # Recipe facts, not the module's own table: AdaptSegNet trains DeepLabV2-ResNet-101 at lr 2.5e-4 (SGD), so the
    # search range must bracket it on a log scale; the from-scratch tiny CPU model needs a range of its own, higher.
    assert big["low"] < 2.5e-4 < big["high"] and big["log"] is True
    assert big["high"] / big["low"] >= 10  # at least a decade around the published value
    assert tiny["low"] > big["low"] and tiny["high"] > big["high"]
    assert big["when"] == [{"model.name": "deeplabv2_resnet101"}] and big["applies_to"] == "optim.lr"
    with pytest.raises(SpaceError, match="grid"):
        grid_search_space(space, params)  # continuous and conditional: no grid


def test_backbone_choices_come_from_the_model_registry():
    space = get_space("backbone")
    with pytest.raises(SpaceError, match="not registered segmentation models"):
        describe_space(space, resolve_params(space, {"models": ["fc_discriminator"]}), sampler="tpe")
    default = describe_space(space, resolve_params(space, {}), sampler="tpe")["dimensions"]["model.name"][0]
    import models

    # The published backbones of the study (DeepLabV2 and DeepLabV3+ on ResNet-101) are offered; CPU-only tiny
    # variants and discriminators are not; and every choice is a registered segmentation model.
    assert {"deeplabv2_resnet101", "deeplabv3plus_resnet101"} <= set(default["choices"])
    assert not [m for m in default["choices"] if m.endswith("_tiny") or "discriminator" in m]
    assert set(default["choices"]) <= set(models.list_models("segmentation"))


def test_descriptions_are_json_and_name_every_dimension():
    for name in spaces.list_spaces():
        space = get_space(name)
        described = describe_space(space, resolve_params(space, {}), sampler="tpe")
        text = json.dumps(described)
        assert json.loads(text)["name"] == name
        assert described["dimensions"], name
        for dims in described["dimensions"].values():
            for dim in dims:
                assert dim["applies_to"] == dim["applies_to"].split("@")[0]


def test_apply_overrides_strips_qualifiers_and_sets_nested_keys():
    base = _base("deeplabv2_tiny")
    out = apply_overrides(base, {"optim.lr@deeplabv2_tiny": 0.03, "adapt.lambda_adv_main": 0.002})
    assert out["optim"]["lr"] == 0.03 and out["adapt"]["lambda_adv_main"] == 0.002
    assert base["optim"]["lr"] == 0.01  # the base is not modified


@pytest.mark.parametrize("name", sorted(spaces.SPACES))
def test_sampled_points_give_valid_train_configs(name):
    space = get_space(name)
    base = _base("deeplabv2_resnet101")
    overrides = {"models": ["deeplabv2_resnet101", "deeplabv3plus_resnet101"]} if "models" in space.params else {}
    params = resolve_params(space, overrides)
    base_cfg = from_dict(TrainConfig, base)
    for sampler in (optuna.samplers.RandomSampler(seed=1), optuna.samplers.TPESampler(seed=1, n_startup_trials=5)):
        study = optuna.create_study(sampler=sampler, direction="maximize")
        define = make_define_by_run(space, params, base=base_cfg)
        for i in range(12):
            trial = study.ask()
            constants = define(trial)
            point = {**trial.params, **constants}
            cfg = from_dict(TrainConfig, apply_overrides(base, point), source=f"{name} point {i}")
            for key, value in trial.params.items():
                section, attr = key.split("@")[0].split(".")
                assert getattr(getattr(cfg, section), attr) == value
            study.tell(trial, math.sin(i))  # any finite value; TPE then models the observations


# ---------------------------------------------------------------------------------------------------------
# one name per parameter everywhere


@pytest.mark.parametrize("names, label", [
    (("optim.lr@deeplabv2_tiny", "optim.lr@deeplabv3plus_resnet101", "optim.lr", "lr"), "lr"),
    (("adapt.lambda_adv_main", "adapt.lambda_adv_main@lsgan", "lambda_adv_main", "lambda_adv"), "lambda_adv"),
    (("model.name", "backbone"), "backbone"),
    (("runtime.seed", "seed"), "seed"),
    (("model.weights",), "model.weights"),  # no label: the full key, never its last part
])
def test_param_label_gives_one_name_per_parameter(names, label):
    from study.config.spaces import param_label

    assert {param_label(n) for n in names} == {label}


def test_every_dimension_of_every_space_has_a_label_that_is_not_a_bare_field_name():
    from study.config.spaces import SPACES, PARAM_LABELS, param_label

    for space in SPACES.values():
        for name in describe_space(space, resolve_params(space, {}), sampler="tpe",
                                   base=from_dict(TrainConfig, _base()))["dimensions"]:
            assert spaces.split_qualifier(name) in PARAM_LABELS, name
            assert param_label(name) not in ("name", "lambda_adv_main"), name


def test_status_table_progress_lines_and_hparams_use_the_same_names(capsys):
    from types import SimpleNamespace

    from study.commands.study import format_trials_table
    from study.run.search import StudyProgress

    params = {"optim.lr@deeplabv2_tiny": 0.01, "model.name": "deeplabv2_tiny", "adapt.lambda_adv_main": 0.002}
    info = {"metric": "val/mIoU16", "max_t": 4, "num_samples": 1, "counts": {"COMPLETE": 1}, "best": None,
            "trials": [{"number": 0, "trial": "trial_a", "state": "COMPLETE", "params": params, "value": 0.1,
                        "step": 4}]}
    header = format_trials_table(info).splitlines()[0].split()
    assert header[1:4] == ["lr", "backbone", "lambda_adv"]
    StudyProgress(metric="val/mIoU16", mode="max", max_t=4, num_samples=1).on_trial_start(
        0, [], SimpleNamespace(trial_id="a", config=params))
    line = capsys.readouterr().out
    assert "backbone=deeplabv2_tiny" in line and "lambda_adv=0.002" in line and "lr=0.01" in line
    assert " name=" not in line


def test_optuna_study_gets_the_metric_name_and_param_labels():
    from study.config.spaces import label_optuna_study

    study = optuna.create_study(direction="maximize")
    label_optuna_study(study, metric="val/mIoU16", param_names=["optim.lr@deeplabv2_tiny", "model.name"])
    assert study.metric_names == ["val/mIoU16 (fraction)"]  # the unit in the name: elsewhere it is in percent
    assert study.user_attrs["param_labels"] == {"optim.lr@deeplabv2_tiny": "lr", "model.name": "backbone"}
    # what the dashboard reads back from the storage
    again = optuna.load_study(study_name=study.study_name, storage=study._storage)
    assert again.metric_names == ["val/mIoU16 (fraction)"]
    other = optuna.create_study(direction="maximize")
    label_optuna_study(other, metric="uda/im", param_names=[])
    assert other.metric_names == ["uda/im"]  # a validator keeps its own scale and name


@pytest.mark.parametrize("params, match", [
    ({"lambda_low": 0}, r"lambda_low = 0: must be > 0"),
    ({"lambda_high": 0.0}, r"lambda_high = 0.0: must be > 0"),
    ({"lambda_grid": [-1.0]}, r"-1.0 is not a finite number >= 0"),  # 0: the λ = 0 control arm
    ({"lambda_grid": ["x"]}, r"'x' is not a finite number >= 0"),
    ({"lambda_grid": [float("inf")]}, r"inf is not a finite number >= 0"),
    ({"lambda_grid": [0.001], "lambda_low": 1e-4}, None),
])
def test_zero_bounds_and_bad_grid_values_are_refused(params, match):
    if match is None:
        assert resolve_params(get_space("lambda_adv"), params)["lambda_grid"] == params["lambda_grid"]
        return
    with pytest.raises(SpaceError, match=match):
        resolve_params(get_space("lambda_adv"), params)
    with pytest.raises(SpaceError, match="lr_grid"):  # elsewhere 0 is no grid value of a log-uniform range
        resolve_params(get_space("lr"), {"lr_grid": [0.0, 0.01]})


def test_seeds_must_be_non_negative_integers_and_lr_zero_still_means_the_backbone_default():
    with pytest.raises(SpaceError, match="seeds"):
        resolve_params(get_space("seeds"), {"seeds": [1, "2"]})
    with pytest.raises(SpaceError, match="seeds"):
        resolve_params(get_space("seeds"), {"seeds": []})
    assert resolve_params(get_space("lr"), {"lr_low": 0, "lr_high": 0})["lr_low"] == 0


def test_lr_bound_outside_a_backbones_default_range_is_refused_per_backbone():
    space = get_space("lr_backbone")
    base = from_dict(TrainConfig, _base())
    # 5e-3 is inside the tiny models' default range (2e-3..5e-2) but above ResNet-101's high (1e-3)
    params = resolve_params(space, {"models": ["deeplabv2_tiny", "deeplabv2_resnet101"], "lr_low": 5e-3})
    with pytest.raises(SpaceError, match=r"learning-rate range of deeplabv2_resnet101 would be \[0.005, 0.001\]"):
        describe_space(space, params, sampler="tpe", base=base)
    ok = resolve_params(space, {"models": ["deeplabv2_tiny"], "lr_low": 5e-3})
    assert describe_space(space, ok, sampler="tpe", base=base)["dimensions"]
