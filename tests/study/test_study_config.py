"""Study configs: presets load and validate, bad configs are refused with the key and what is allowed."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from study.config.files import shipped_names
from study.config.study_config import (baseline_train_config, load_study_config, n_evaluations, study_from_dict,
                                study_to_dict)
from study_helpers import study_table, write_study_file
from trainables.config import ConfigError

PRESETS = ("lambda_sensitivity", "lr_backbone", "between_city", "demo")


def _load(tmp_path: Path, table: dict, *overrides: str):
    return load_study_config(write_study_file(tmp_path / "study.toml", table), overrides)


@pytest.mark.parametrize("name", PRESETS)
def test_shipped_presets_load_by_name_and_by_path(name):
    assert name in shipped_names("presets")
    cfg = load_study_config(name)
    assert cfg.name == name
    assert cfg.study_metric.startswith("val/")  # presets default to val for comparability
    assert cfg.resources.cpu > 0
    described = cfg.describe_space()
    assert described["dimensions"]
    if cfg.search.sampler == "grid":
        assert cfg.num_samples == described["grid_size"]
    from importlib import resources

    path = Path(str(resources.files("study.presets") / f"{name}.toml"))
    assert load_study_config(path).name == name


def test_lambda_sensitivity_is_the_seed_grid_on_both_backbones():
    cfg = load_study_config("lambda_sensitivity")
    grid = cfg.describe_space()["grid"]
    assert grid["adapt.lambda_adv_main"] == [0.0, 0.0005, 0.001, 0.002, 0.004]  # + the λ = 0 control (issue 13)
    assert sorted(grid["model.name"]) == ["deeplabv2_resnet101", "deeplabv3plus_resnet101"]
    assert cfg.scheduler.kind == "fifo" and cfg.train.data.source.dataset == "synthia"


def test_demo_preset_is_cpu_scale_with_asha_and_a_baseline():
    cfg = load_study_config("demo")
    assert cfg.num_samples >= 8 and cfg.max_concurrent_trials == 2 and cfg.resources.gpu == 0
    assert cfg.scheduler.kind == "asha" and cfg.max_t == n_evaluations(cfg.train) == 4
    base = baseline_train_config(cfg)
    assert base.adapt.mode == "source_only" and base.model.name == cfg.train.model.name
    assert base.optim.iterations == 400


def test_metric_gets_the_selection_prefix(tmp_path, tiny_benchmark):
    assert _load(tmp_path, study_table(tiny_benchmark)).study_metric == "val/mIoU16"
    holdout = _load(tmp_path, study_table(tiny_benchmark, selection="holdout"))
    assert holdout.study_metric == "select/mIoU16"
    assert holdout.train.eval.selection == "holdout" and holdout.train.eval.select_metric == "mIoU16"
    with pytest.raises(ConfigError, match="metric"):
        _load(tmp_path, study_table(tiny_benchmark, selection="holdout", metric="val/mIoU16"))
    with pytest.raises(ConfigError, match="mIoU19 needs"):
        _load(tmp_path, study_table(tiny_benchmark, metric="mIoU19"))


@pytest.mark.parametrize("overrides, key, allowed", [
    (("search.params.lamda_low=1e-4",), "search", "unknown parameter of space 'lambda_lr'"),
    (("resources.gpu=1.5",), "resources.gpu", "whole number"),
    (("resources.gpu=-1",), "resources.gpu", ">= 0"),
    (("resources.cpu=0",), "resources.cpu", "CPUs > 0"),
    (("search.space=nope",), "search", "unknown search space"),
    (("search.sampler=grid",), "search", "has no grid values"),
    (("scheduler.max_t=9",), "scheduler.max_t", "1..3"),
    (("scheduler.grace_period=5",), "scheduler.grace_period", "1..max_t"),
    (("scheduler.kind=hyperband",), "scheduler.kind", "'asha' | 'fifo'"),
    (("num_samples=0",), "num_samples", "positive"),
    (("name=../escape",), "name", "directory name"),
    (("max_t=4",), "max_t", "known keys"),
    (("train.optim.lr=-1",), "train.optim.lr", "learning rate > 0"),
    (("train.runtime.device=cuda",), "train.runtime.device", "resources.gpu = 0"),
    (("train.adapt.mode=source_only",), "train.adapt.mode", "study adapts"),
])
def test_bad_study_configs_are_refused_naming_the_key(tmp_path, tiny_benchmark, overrides, key, allowed):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, study_table(tiny_benchmark), *overrides)
    assert info.value.key == key
    assert allowed in str(info.value)
    assert "study.toml" in str(info.value)  # names the file


def test_grid_num_samples_cannot_exceed_the_grid(tmp_path, tiny_benchmark):
    table = study_table(tiny_benchmark, search={"space": "lambda_adv", "sampler": "grid", "seed": 0})
    assert _load(tmp_path, table).num_samples == 4
    with pytest.raises(ConfigError, match="at most the grid size 4"):
        _load(tmp_path, table, "num_samples=5")


def test_baseline_cannot_initialise_a_space_over_backbones(tmp_path, tiny_benchmark):
    table = study_table(tiny_benchmark, search={"space": "backbone", "sampler": "tpe", "seed": 0},
                        baseline={"overrides": {}})
    with pytest.raises(ConfigError, match="space over backbones"):
        _load(tmp_path, table)


@pytest.mark.parametrize("key, base, train", [("model.multi_level", True, False), ("model.multi_level", False, True),
                                                ("model.aspp_dilations", [6, 12], [6, 12, 18, 24])])
def test_baseline_whose_checkpoint_the_trials_cannot_load_is_refused(tmp_path, tiny_benchmark, key, base, train):
    """A multi-level baseline cannot start single-level trials (models/pretrained.py refuses the checkpoint): said
    before the baseline trains, not by every trial after it (found running a single-level λ study)."""
    section, attr = key.split(".")
    table = study_table(tiny_benchmark, baseline={"overrides": {section: {attr: base}}})
    table["train"][section][attr] = train
    with pytest.raises(ConfigError, match=rf"baseline\.{key} = .*the study's train\.{key}"):
        _load(tmp_path, table)
    table["baseline"]["overrides"][section][attr] = train  # the same network: accepted
    assert getattr(getattr(_load(tmp_path, table).train, section), attr) == (tuple(train) if isinstance(train, list)
                                                                              else train)


def test_relative_dataset_roots_become_absolute(tmp_path, tiny_benchmark):
    table = study_table(tiny_benchmark)
    table["train"]["data"]["source"]["root"] = "datasets/synth/source"
    cfg = study_from_dict(table, source="x", cwd=tmp_path)
    assert cfg.train.data.source.root == str(tmp_path / "datasets/synth/source")


def test_resolved_study_round_trips_through_study_toml(tmp_path, tiny_benchmark):
    import tomli_w

    cfg = _load(tmp_path, study_table(tiny_benchmark), "num_samples=3", "train.optim.lr=0.02")
    text = tomli_w.dumps(study_to_dict(cfg))
    again = study_from_dict(tomllib.loads(text), source="study.toml")
    assert again == cfg
    assert again.num_samples == 3 and again.train.optim.lr == 0.02
