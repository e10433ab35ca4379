"""The dry run's plan, resource checks and override refusals of study/config/preflight.py: the printed plan
(format_plan) word for word, the trial configs it resolves (trial_plans), the resource verdicts
(resource_problems) and the refusal of a ``train.KEY=VALUE`` override the search space would overwrite
(check_overrides_apply). No Ray."""
from __future__ import annotations

import pytest

from study.config.preflight import (Preflight, Problem, check_overrides_apply, format_plan, resource_problems,
                                    trial_plans)
from study.config.resources import NodeInfo
from study.config.spaces import SpaceError
from study.config.study_config import load_study_config
from trainables.config import ConfigError

PASSED = ("all pre-launch checks passed (configs, model names, weight and checkpoint files, datasets, storage URL, "
          "resources); nothing was created")


def _plan(name, *overrides, problems=(), notes=()):
    study = load_study_config(name, list(overrides))
    plans, exhaustive = trial_plans(study, source=name)
    return format_plan(Preflight(study, tuple(plans), exhaustive), problems, notes)


def _tiny(tmp_path, tiny_benchmark, **table):
    from study_helpers import study_table, write_study_file

    return load_study_config(write_study_file(tmp_path / "s.toml", study_table(tiny_benchmark, **table)), [])


# ---------------------------------------------------------------------------------------------------------
# format_plan


def test_pbt_plan_runs_every_member_at_once_and_lists_notes_and_problems():
    problems = [Problem("w1", "f1", ValueError("a")), Problem("w2", "f2", ValueError("b"))]
    assert _plan("lambda_schedule_pbt", problems=problems, notes=["n1", "n2"]).splitlines() == [
        "study lambda_schedule_pbt: 8 trial(s), space 'adversarial_schedule' (tpe, seed 0), metric uda/im (max), "
        "pbt max_t=16, every member at once (cpu 4, gpu 0.25 each)",
        "same in every trial: model.name=deeplabv2_resnet101, optim.iter_max=200000, optim.iter_stop=80000, "
        "optim.batch_size=1, runtime.seed=12345",
        "",
        "space (each trial samples):",
        "  lambda_adv       log-uniform [0.0001, 0.01]  -> adapt.lambda_adv_main",
        "  lambda_adv_aux   log-uniform [2e-05, 0.002]  -> adapt.lambda_adv_aux",
        "  lr               log-uniform [0.0001, 0.001]  -> optim.lr",
        "  lr_d             log-uniform [1e-05, 0.001]  -> adapt.lr_d",
        "",
        "resolved trial configs checked (2: each branch at both ends of its ranges):",
        "  #  optim.lr  adapt.lambda_adv_main  adapt.lambda_adv_aux  adapt.lr_d",
        "  1  0.0001    0.0001                 2e-05                 1e-05",
        "  2  0.001     0.01                   0.002                 0.001",
        "",
        "n1",
        "n2",
        "2 problem(s); a real run would not start until each is fixed:",
        "  1. w1; fix: f1",
        "  2. w2; fix: f2",
        "nothing was created",
    ]


def test_pb2_population_also_runs_at_once():
    study = load_study_config("lambda_schedule_pbt", ['scheduler.kind="pb2"', "scheduler.pbt.burn_in=0"])
    first = format_plan(Preflight(study, (), False)).splitlines()[0]
    assert first == ("study lambda_schedule_pbt: 8 trial(s), space 'adversarial_schedule' (tpe, seed 0), metric "
                     "uda/im (max), pb2 max_t=16, every member at once (cpu 4, gpu 0.25 each)")


def test_plan_with_replicates_storage_and_baseline():
    out = _plan("demo", "search.seeds=[1,2]", 'search.storage="sqlite:///x.db"')
    assert out.splitlines() == [
        "study demo: 8 configuration(s) x 2 seeds = 16 trials, space 'lambda_lr' (tpe, seed 0), metric val/mIoU16 "
        "(max), asha max_t=4, 2 at a time (cpu 1, gpu 0 each)",
        "optuna storage: sqlite:///x.db",
        "baseline: source_only deeplabv2_tiny, 400 iterations (trained first unless a completed one exists; its "
        "checkpoint starts every trial)",
        "replicates: every configuration runs once per seed in search.seeds = [1, 2] (runtime.seed)",
        "same in every trial: model.name=deeplabv2_tiny, optim.iter_max=160, optim.iter_stop=160, optim.batch_size=4",
        "",
        "space (each trial samples):",
        "  lambda_adv       log-uniform [0.0001, 0.1]  -> adapt.lambda_adv_main",
        "  lr               log-uniform [0.002, 0.05]  -> optim.lr",
        "",
        "resolved trial configs checked (2: each branch at both ends of its ranges):",
        "  #  optim.lr  adapt.lambda_adv_main",
        "  1  0.002     0.0001",
        "  2  0.05      0.1",
        "",
        PASSED,
    ]


def test_grid_plan_with_replicates():
    out = _plan("demo", 'search.sampler="grid"', "search.params.lambda_grid=[0.001,0.01]",
                "search.params.lr_grid=[0.01]", "search.seeds=[4,5,6]", "num_samples=2")
    assert out.splitlines() == [
        "study demo: 2 configuration(s) x 3 seeds = 6 trials, space 'lambda_lr' (grid, seed 0), metric val/mIoU16 "
        "(max), asha max_t=4, 2 at a time (cpu 1, gpu 0 each)",
        "baseline: source_only deeplabv2_tiny, 400 iterations (trained first unless a completed one exists; its "
        "checkpoint starts every trial)",
        "replicates: every configuration runs once per seed in search.seeds = [4, 5, 6] (runtime.seed)",
        "same in every trial: model.name=deeplabv2_tiny, optim.lr=0.01, optim.iter_max=160, optim.iter_stop=160, "
        "optim.batch_size=4",
        "",
        "trial configs (grid of 2, 2 launched in the sampler's order, each on 3 seeds):",
        "  #  adapt.lambda_adv_main",
        "  1  0.001",
        "  2  0.01",
        "",
        PASSED,
    ]


def test_grid_plan_of_one_point_shows_every_shown_key_as_fixed():
    out = _plan("demo", 'search.sampler="grid"', "search.params.lambda_grid=[0.001]",
                "search.params.lr_grid=[0.01]", "num_samples=1")
    assert out.splitlines() == [
        "study demo: 1 trial(s), space 'lambda_lr' (grid, seed 0), metric val/mIoU16 (max), asha max_t=4, "
        "2 at a time (cpu 1, gpu 0 each)",
        "baseline: source_only deeplabv2_tiny, 400 iterations (trained first unless a completed one exists; its "
        "checkpoint starts every trial)",
        "same in every trial: model.name=deeplabv2_tiny, optim.lr=0.01, optim.iter_max=160, optim.iter_stop=160, "
        "optim.batch_size=4, "
        "adapt.lambda_adv_main=0.001, runtime.seed=12345",
        "",
        "trial configs (grid of 1, 1 launched in the sampler's order):",
        "  #",
        "  1",
        "",
        PASSED,
    ]


def test_plan_of_a_categorical_conditional_space():
    out = _plan("lr_backbone")
    lines = out.splitlines()
    assert lines[1:8] == [
        "same in every trial: optim.iter_max=200000, optim.iter_stop=80000, adapt.lambda_adv_main=0.001, "
        "runtime.seed=12345",
        "",
        "space (each trial samples):",
        "  backbone         one of deeplabv2_resnet101, deeplabv3plus_resnet101  -> model.name",
        "  lr               log-uniform [0.0001, 0.001]  -> optim.lr when backbone=deeplabv2_resnet101",
        "  lr_d             log-uniform [1e-05, 0.001]  -> adapt.lr_d",
        "  lr               log-uniform [0.0001, 0.001]  -> optim.lr when backbone=deeplabv3plus_resnet101",
    ]


def test_plan_without_trial_configs():
    study = load_study_config("lambda_schedule_pbt", [])
    assert format_plan(Preflight(study, (), False)).splitlines()[-5:] == [
        "",
        "resolved trial configs checked (0: each branch at both ends of its ranges):",
        "  #",
        "",
        PASSED,
    ]


def test_plan_cells_show_missing_keys_and_paths_below_the_working_directory(tmp_path, monkeypatch):
    import dataclasses

    study = load_study_config("demo", [])
    plans, _ = trial_plans(study, source="demo")
    cfg = plans[0].config
    monkeypatch.chdir(tmp_path)
    first = dataclasses.replace(cfg, name="a", data=dataclasses.replace(
        cfg.data, source=dataclasses.replace(cfg.data.source, root=str(tmp_path / "src" / "one"))))
    second = dataclasses.replace(cfg, name="b", data=dataclasses.replace(
        cfg.data, val=None, source=dataclasses.replace(cfg.data.source, root="/elsewhere/two")))
    pre = Preflight(study, tuple(dataclasses.replace(plans[0], config=c) for c in (first, second)), False)
    lines = format_plan(pre).splitlines()
    start = lines.index("resolved trial configs checked (2: each branch at both ends of its ranges):")
    header, one, two = (line.split() for line in lines[start + 1:start + 4])
    assert "name" not in header and header[:2] == ["#", "data.source.root"]
    assert one[:2] == ["1", "src/one"] and two[:2] == ["2", "/elsewhere/two"]
    val = [i for i, k in enumerate(header) if k.startswith("data.val")]
    assert val and [two[i] for i in val] == ["-"] * len(val) and all(one[i] != "-" for i in val)


# ---------------------------------------------------------------------------------------------------------
# trial_plans


def test_trial_plans_keep_each_distinct_config_once_and_name_it_preflight(tmp_path, tiny_benchmark):
    study = _tiny(tmp_path, tiny_benchmark, search__space="seeds", search__params={"seeds": [7, 8]})
    plans, exhaustive = trial_plans(study, source="SRC")
    # the seeds space has no continuous range: both ends of a branch are one config
    assert [p.params for p in plans] == [{"runtime.seed": 7}, {"runtime.seed": 8}] and exhaustive is False
    assert [p.config.runtime.seed for p in plans] == [7, 8] and {p.config.name for p in plans} == {"preflight"}


def test_a_grid_of_max_plans_points_is_exhaustive(monkeypatch):
    import study.config.preflight as preflight

    args = ("demo", ['search.sampler="grid"', "search.params.lambda_grid=[0.001,0.01]",
                     "search.params.lr_grid=[0.01]", "num_samples=2"])
    monkeypatch.setattr(preflight, "MAX_PLANS", 2)
    plans, exhaustive = trial_plans(load_study_config(*args), source="demo")
    assert len(plans) == 2 and exhaustive is True
    monkeypatch.setattr(preflight, "MAX_PLANS", 1)
    plans, exhaustive = trial_plans(load_study_config(*args), source="demo")
    assert len(plans) == 1 and exhaustive is False


def test_a_trial_config_the_trial_would_refuse_names_the_trial_and_the_key(tmp_path, tiny_benchmark):
    study = _tiny(tmp_path, tiny_benchmark, search__space="lr_backbone", search__params={
        "models": ["deeplabv2_tiny"], "model_overrides": {"deeplabv2_tiny": {"optim.batch_size": 0}}})
    with pytest.raises(ConfigError) as info:
        trial_plans(study, source="SRC")
    assert str(info.value) == ("SRC [trial model.name=deeplabv2_tiny, optim.lr@deeplabv2_tiny=0.002, "
                               "adapt.lr_d=1e-05]: search.params.model_overrides.deeplabv2_tiny.optim.batch_size = 0 is not "
                               "valid; allowed: a positive integer")  # the key the user wrote, not train.optim…
    assert (info.value.source, info.value.key, info.value.value, info.value.allowed) == (
        "SRC [trial model.name=deeplabv2_tiny, optim.lr@deeplabv2_tiny=0.002, adapt.lr_d=1e-05]",
        "search.params.model_overrides.deeplabv2_tiny.optim.batch_size", 0, "a positive integer")


def test_a_space_registered_under_another_name_is_refused(monkeypatch):
    import dataclasses

    from study.config.spaces import SPACES

    study = load_study_config("demo", [])
    monkeypatch.setitem(SPACES, "lambda_lr", dataclasses.replace(SPACES["lambda_lr"], name="lambda_lr_old"))
    with pytest.raises(ConfigError) as info:
        trial_plans(study, source="SRC")
    assert (info.value.source, info.value.key, info.value.value, info.value.allowed) == (
        "SRC", "search.space", "lambda_lr", "a registered space")


# ---------------------------------------------------------------------------------------------------------
# check_overrides_apply


def _refusal(preset, *overrides):
    study = load_study_config(preset, [])
    with pytest.raises(SpaceError) as info:
        check_overrides_apply(study, list(overrides), source="SRC")
    return str(info.value)


def test_refusal_of_a_sampled_float_names_each_range_and_the_knobs():
    assert _refusal("lr_backbone", "num_samples=2", "train.optim.lr=1e-3") == (
        "SRC: train.optim.lr=1e-3 would be ignored: space 'lr_backbone' samples optim.lr in every trial (as lr: "
        "log-uniform [0.0001, 0.001]; as lr: log-uniform [0.0001, 0.001]); change the space instead "
        "(search.params.lr_low / search.params.lr_high / search.params.lr_grid), or choose a space without optim.lr "
        "(`dastudy study presets`)")


def test_refusal_of_a_sampled_categorical_with_an_equals_sign_in_the_value():
    assert _refusal("lambda_sensitivity", "train.runtime.seed=4") == (
        "SRC: train.runtime.seed=4 would be ignored: space 'lambda_sensitivity' samples runtime.seed in every trial "
        "(as seed: one of 1, 2, 3); change the space instead (search.params.seeds), or choose a space without "
        "runtime.seed (`dastudy study presets`)")
    assert _refusal("lr_backbone", "train.model.name=x=y") == (
        "SRC: train.model.name=x=y would be ignored: space 'lr_backbone' samples model.name in every trial (as "
        "backbone: one of deeplabv2_resnet101, deeplabv3plus_resnet101); change the space instead "
        "(search.params.models), or choose a space without model.name (`dastudy study presets`)")


def test_refusal_of_a_constant_of_every_branch():
    assert _refusal("lr_backbone", "train.model.weights=x") == (
        "SRC: train.model.weights=x would be ignored: space 'lr_backbone' sets model.weights in every trial; change "
        "the space instead (search.params.weights), or choose a space without model.weights (`dastudy study "
        "presets`)")


def test_refusal_of_a_key_without_a_search_param_lists_the_spaces_params():
    study = load_study_config("lambda_sensitivity", [
        'search.params.model_overrides={deeplabv2_resnet101={"optim.batch_size"=1},'
        'deeplabv3plus_resnet101={"optim.batch_size"=2}}'])
    with pytest.raises(SpaceError) as info:
        check_overrides_apply(study, ["train.optim.batch_size=3"], source="SRC")
    assert str(info.value) == (
        "SRC: train.optim.batch_size=3 would be ignored: space 'lambda_sensitivity' sets optim.batch_size in every "
        "trial; change the space instead (the [search.params] of space 'lambda_sensitivity' (init_checkpoints, "
        "lambda_grid, lambda_high, lambda_low, model_overrides, models, seeds, weights)), or choose a space without "
        "optim.batch_size (`dastudy study presets`)")


def test_overrides_the_space_leaves_alone_pass():
    study = load_study_config("demo", [])
    check_overrides_apply(study, ["num_samples=2", "train.optim.momentum=0.8", "search.params.lr_low=0.003",
                                  "train.runtime.seed=4"], source="SRC")


def test_refusal_walks_the_space_on_the_studys_own_backbone(tmp_path, tiny_benchmark):
    # lr_low = 0.005 fits deeplabv2_tiny's default range [., 0.05], not deeplabv2_resnet101's [1e-4, 1e-3]
    study = _tiny(tmp_path, tiny_benchmark, search__params={"lr_low": 0.005})
    with pytest.raises(SpaceError) as info:
        check_overrides_apply(study, ["train.optim.lr=0.001"], source="SRC")
    assert str(info.value) == (
        "SRC: train.optim.lr=0.001 would be ignored: space 'lambda_lr' samples optim.lr in every trial (as lr: "
        "log-uniform [0.005, 0.05]); change the space instead (search.params.lr_low / search.params.lr_high / "
        "search.params.lr_grid), or choose a space without optim.lr (`dastudy study presets`)")


# ---------------------------------------------------------------------------------------------------------
# resource_problems


@pytest.fixture
def fixed_state(monkeypatch):
    """One checkpoint of exactly 1 GiB, so that the estimate is computed by hand."""
    import trainables.tune

    monkeypatch.setattr(trainables.tune, "checkpoint_state_bytes", lambda cfg: 2 ** 30)


def _resources(nodes, *overrides, where="here", home=None, tmp_path=None):
    study = load_study_config("demo", list(overrides))
    return resource_problems(study, home or tmp_path / "studies" / "demo", nodes, where=where)


# demo: 8 samples, checkpoints_to_keep 2 -> 3 kept; ASHA, grace 1, max_t 4, keep_pruned false;
# reduction 3: one rung at 3 (9 > 4) -> ceil(8 / 3) = 3 trials keep checkpoints: 1 GiB x 3 x 3 = 9 GiB.
ESTIMATE = ("checkpoints: about 9.0 GiB at most (1.0 GiB per checkpoint x 3 kept per trial x 3 trials; "
            "PRUNED/FAILED trials' checkpoints removed; ASHA lets ~3 of 8 trials finish)")


def test_resources_fit_and_the_checkpoint_estimate(fixed_state, tmp_path):
    problems, notes = _resources([NodeInfo("a", "10.0.0.1", cpu=8, gpu=0)], tmp_path=tmp_path)
    assert problems == [] and notes == ["here: 8 trial(s) fit at once (cpu 1, gpu 0 each)", ESTIMATE]
    problems, notes = _resources(None, tmp_path=tmp_path)
    assert problems == [] and notes == [ESTIMATE]


def test_an_autoscaling_cluster_is_asked(fixed_state, tmp_path):
    problems, notes = _resources([NodeInfo("a", "10.0.0.1", cpu=8, gpu=0)], "resources.gpu=1",
                                 "resources.autoscaling=true", tmp_path=tmp_path)
    assert problems == [] and notes == ["here: no node hosts a trial now; the autoscaler would be asked", ESTIMATE]


@pytest.mark.parametrize("nodes, overrides, what, fix", [
    ([NodeInfo("a", "1", cpu=8, gpu=0)], ["resources.gpu=1"], "resources.gpu = 1 but here has no GPU",
     "resources.gpu=0 (CPU trials), or --address a Ray cluster with GPUs"),
    ([NodeInfo("a", "1", cpu=8, gpu=0)], ["resources.gpu=0.5"], "resources.gpu = 0.5 but here has no GPU",
     "resources.gpu=0 (CPU trials), or --address a Ray cluster with GPUs"),
    ([NodeInfo("a", "1", cpu=8, gpu=0)], ["resources.cpu=16"], "no node of here hosts a trial of cpu 16, gpu 0",
     "lower resources.cpu / resources.gpu, or --address a larger cluster"),
    ([NodeInfo("a", "1", cpu=8, gpu=1)], ["resources.gpu=1", "resources.cpu=16"],
     "no node of here hosts a trial of cpu 16, gpu 1",
     "lower resources.cpu / resources.gpu, or --address a larger cluster"),
    ([NodeInfo("a", "1", cpu=8, gpu=2)], ["resources.gpu=1", "resources.cpu=16"],
     "no node of here hosts a trial of cpu 16, gpu 1",
     "lower resources.cpu / resources.gpu, or --address a larger cluster"),
])
def test_a_trial_no_node_hosts(nodes, overrides, what, fix, fixed_state, tmp_path):
    from study.config.resources import PreflightError

    problems, notes = _resources(nodes, *overrides, tmp_path=tmp_path)
    assert [(p.what, p.fix, type(p.error)) for p in problems] == [(what, fix, PreflightError)]
    assert notes == [ESTIMATE]


def test_checkpoints_larger_than_the_free_space(fixed_state, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from study.config.resources import PreflightError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 ** 40, 2 ** 40 - 2 ** 30, 2 ** 30))
    home = tmp_path / "studies" / "demo"
    problems, notes = _resources(None, home=home)
    assert notes == [ESTIMATE] and len(problems) == 1
    assert problems[0].what == "checkpoints need about 9.0 GiB, more than is free under the storage"
    assert problems[0].fix == (f"--storage on a larger filesystem than {tmp_path / 'studies'}, or lower num_samples "
                               "/ checkpoints_to_keep")
    assert isinstance(problems[0].error, PreflightError)


def test_no_checkpoint_estimate_for_a_network_the_meta_device_cannot_build(tmp_path, monkeypatch):
    import trainables.tune

    def fails(cfg):
        raise RuntimeError("no meta kernel")

    monkeypatch.setattr(trainables.tune, "checkpoint_state_bytes", fails)
    problems, notes = _resources(None, tmp_path=tmp_path)
    assert problems == [] and notes == ["checkpoints: no size estimate (RuntimeError: no meta kernel)"]


def test_the_plan_shows_the_iteration_count_the_user_set():
    """`optim.iterations` is a property: the plan shows the two fields it comes from, as overridden."""
    out = _plan("demo", 'search.sampler="grid"', "search.params.lambda_grid=[0.001]",
                "search.params.lr_grid=[0.01]", "num_samples=1", "train.optim.iter_max=300",
                "train.optim.iter_stop=120")
    fixed = next(line for line in out.splitlines() if line.startswith("same in every trial: "))
    assert "optim.iter_max=300, optim.iter_stop=120, optim.batch_size=4" in fixed, fixed
