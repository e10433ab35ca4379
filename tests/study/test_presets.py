"""Presets resolve to the recipes they claim: every grid point's real run config (space constants and per-backbone
overrides applied as in a trial) against the facts of AdaptSegNet, of the seed, and of the source-only run each trial
starts from. Also: an adaptation study that would start from ImageNet / DeepLab-init weights is refused."""
from __future__ import annotations

import re

import pytest
from optuna.trial import FixedTrial

from study.config.files import load_toml
from study.config.spaces import get_space, grid_points, grid_search_space
from study.config.study_config import load_study_config, study_from_dict
from study_helpers import study_table
from trainables.config import ConfigError, TrainConfig, from_dict, to_dict
from trainables.tune import apply_overrides

ADVERSARIAL = ("lambda_sensitivity", "seed_protocol", "between_city", "lr_backbone")
SEED_LAMBDAS = {0.0005, 0.001, 0.002, 0.004}  # the seed's Table 3
# The seed's adaptation length: solve_synthia_adv.py set iter_max = (len(Cityscapes train) + 1) // 1 × 2 epochs.
SEED_ITERATIONS = (2975 + 1) * 2


def trial_configs(name: str) -> list[TrainConfig]:
    """Each grid point's TrainConfig, built the way a trial builds it (trainables.tune.apply_overrides)."""
    cfg = load_study_config(name)
    space, params = get_space(cfg.search.space), cfg.space_params
    out = []
    if cfg.search.sampler != "grid":  # a TPE space: 16 random draws (seeded), enough to meet every backbone
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(16):
            trial = study.ask()
            constants = space.run(trial, params, grid=False, base=cfg.train)
            out.append(from_dict(TrainConfig, apply_overrides(to_dict(cfg.train), {**trial.params, **constants}),
                                 source=name))
        assert {c.model.name for c in out} == set(params["models"])
        return out
    for point in grid_points(grid_search_space(space, params, base=cfg.train)):
        constants = space.run(FixedTrial(point), params, grid=True, base=cfg.train)
        out.append(from_dict(TrainConfig, apply_overrides(to_dict(cfg.train), {**point, **constants}), source=name))
    assert len(out) == cfg.num_samples  # the grid is run exactly once
    return out


def source_config(init_checkpoint: str) -> TrainConfig:
    """The shipped run config whose `dastudy train NAME` writes runs/NAME/checkpoints/best.pt."""
    match = re.search(r"runs/([^/]+)/checkpoints/best\.pt$", init_checkpoint)
    assert match, init_checkpoint
    return from_dict(TrainConfig, load_toml(match.group(1), "configs"), source=match.group(1))


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_every_trial_adapts_from_a_matching_source_only_model(name):
    for cfg in trial_configs(name):
        assert cfg.adapt.mode == "adversarial" and cfg.model.init_checkpoint
        source = source_config(cfg.model.init_checkpoint)
        # the checkpoint fits: same network, same output levels, same classes, trained source-only on the source
        assert source.adapt.mode == "source_only"
        assert (source.model.name, source.model.multi_level, source.data.num_classes) == (
            cfg.model.name, cfg.model.multi_level, cfg.data.num_classes)
        assert (source.data.source.dataset, source.data.source.split) == (cfg.data.source.dataset,
                                                                         cfg.data.source.split)
        assert source.model.aspp_dilations == cfg.model.aspp_dilations or cfg.model.name.startswith("deeplabv3plus")
        # chosen on the source's own val split: no target label picks the start (the seed's choice)
        assert source.eval.selection == "source_val"
        # DeepLabV3+'s image-pooling BN cannot train on one image (seed README, V3P issues #11/#41/#143)
        assert cfg.optim.batch_size == (2 if cfg.model.name.startswith("deeplabv3plus") else 1)
        assert source.optim.batch_size == cfg.optim.batch_size


@pytest.mark.parametrize("name", ("lambda_sensitivity", "seed_protocol", "between_city"))
def test_lambda_presets_are_single_level_with_a_control_arm_and_three_seeds(name):
    configs = trial_configs(name)
    assert all(not c.model.multi_level and c.adapt.lambda_adv_aux == 0 for c in configs)
    lambdas = {c.adapt.lambda_adv_main for c in configs}
    assert lambdas == {0.0} | SEED_LAMBDAS
    for model in ("deeplabv2_resnet101", "deeplabv3plus_resnet101"):
        for lam in lambdas:
            assert sorted(c.runtime.seed for c in configs if c.model.name == model
                          and c.adapt.lambda_adv_main == lam) == [1, 2, 3]


def test_lambda_sensitivity_is_adaptsegnet_scored_at_full_resolution():
    study = load_study_config("lambda_sensitivity")
    assert study.study_metric == "val/mIoU16" and study.scheduler.kind == "fifo"
    for cfg in trial_configs("lambda_sensitivity"):
        # AdaptSegNet: 80k of a 200k poly schedule, logits upsampled to the 2048x1024 labels
        assert (cfg.optim.iter_max, cfg.optim.iterations, cfg.optim.lr) == (200_000, 80_000, 2.5e-4)
        assert cfg.eval.protocol == "full" and cfg.data.val.size == (1024, 512)
        assert cfg.data.source.size == (1280, 720) and cfg.data.num_classes == 16


def test_seed_protocol_reproduces_the_seed():
    study = load_study_config("seed_protocol")
    assert study.selection == "val" and study.study_metric == "val/mIoU13"  # the seed's (oracle) choice
    assert study.max_t == 2  # one evaluation per epoch
    for cfg in trial_configs("seed_protocol"):
        assert cfg.optim.iter_max == cfg.optim.iterations == SEED_ITERATIONS == 5952
        assert cfg.eval.interval == SEED_ITERATIONS // 2 and cfg.eval.selection == "val"
        # scored against labels resized to the 1024x512 input
        assert cfg.eval.protocol == "seed" and cfg.data.val.size == (1024, 512)
        assert cfg.model.bn_policy == "stem_frozen"
        if cfg.model.name == "deeplabv2_resnet101":
            assert cfg.model.aspp_dilations == (6, 12)  # the two branches the seed's early return kept
        source = source_config(cfg.model.init_checkpoint)
        assert source.model.bn_policy == "stem_frozen" and source.eval.protocol == "seed"


def test_between_city_has_its_own_source_only_models_and_split():
    for cfg in trial_configs("between_city"):
        assert (cfg.data.source.split, cfg.data.target.split, cfg.data.val.split) == (
            "group0_train", "group1_train", "group1_val")
        source = source_config(cfg.model.init_checkpoint)
        assert source.data.num_classes == 19 and source.eval.select_metric == "mIoU19"
        assert source.data.val.split == "group1_val"  # its reported numbers are the source-only arm on group1


def test_adaptation_from_init_weights_alone_is_refused(tiny_benchmark):
    table = study_table(tiny_benchmark)
    study_from_dict(table, source="tiny.toml")  # a tiny model trained from scratch has no init weights to fall to
    table["train"]["model"]["weights"] = "imagenet"
    with pytest.raises(ConfigError, match=r"train\.model\.init_checkpoint = None .*source-only start for "
                                          r"deeplabv2_tiny"):
        study_from_dict(table, source="tiny.toml")
    table["train"]["model"]["init_checkpoint"] = "runs/x/checkpoints/best.pt"
    study_from_dict(table, source="tiny.toml")
    # a third backbone with init weights but no source-only checkpoint
    with pytest.raises(ConfigError, match=r"search\.params\.init_checkpoints = \{'deeplabv2_resnet101': .*source-only "
                                          r"start for deeplabv2_tiny:"):
        load_study_config("lambda_sensitivity", [
            'search.params.models=["deeplabv2_resnet101","deeplabv3plus_resnet101","deeplabv2_tiny"]',
            'search.params.weights={deeplabv2_tiny="imagenet"}', "num_samples=1"])
