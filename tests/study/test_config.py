"""Strict run-config loading: every class of bad input names the file, the key, the value and what is allowed."""
from __future__ import annotations

import pytest

from study.config.files import load_train_config, parse_overrides, shipped_names
from trainables.builders import validate_config
from trainables.config import ConfigError, TrainConfig, from_dict, to_dict

BASE = 'name = "t"\n'  # everything else at its default (the real-data SYNTHIA → Cityscapes recipe)


def _write(tmp_path, text: str, name: str = "run.toml"):
    path = tmp_path / name
    path.write_text(BASE + text)
    return path


def _error(tmp_path, text: str, *, validate: bool = False) -> ConfigError:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg = load_train_config(path)
        if validate:
            validate_config(cfg, source=str(path))
    err = info.value
    assert str(path) in str(err)  # the file is always named
    return err


@pytest.mark.parametrize("text, key, value, allowed", [
    ("[optim]\nlearning_rate = 0.1\n", "optim.learning_rate", 0.1, "lr"),  # unknown key: the known ones listed
    ("[optim]\nlr = \"fast\"\n", "optim.lr", "fast", "a number"),  # wrong type
    ("[optim]\nbatch_size = 1.5\n", "optim.batch_size", 1.5, "an integer"),
    ("[optim]\nlr = -0.01\n", "optim.lr", -0.01, "> 0"),  # negative learning rate
    ("[adapt]\nlambda_adv_main = -1.0\n", "adapt.lambda_adv_main", -1.0, ">= 0"),  # negative λ
    ("[adapt]\nlambda_target = -0.5\n", "adapt.lambda_target", -0.5, ">= 0"),
    ("[data.source]\nsize = [128, 64]\ncrop = [256, 64]\n", "data.source.crop", (256, 64),
     "no larger than size = [128, 64]"),
    ("[data.val]\ndataset = \"kitti\"\n", "data.val.dataset", "kitti", "cityscapes | synthia | gta5"),
    ("[adapt]\ngan = \"wgan\"\n", "adapt.gan", "wgan", "'vanilla' | 'lsgan'"),
    ("[eval]\nselect_metric = \"mIoU19\"\n", "eval.select_metric", "mIoU19", "mIoU19 needs 19"),
    ("[optim]\niter_max = 100\niter_stop = 200\n", "optim.iter_stop", 200, "[1, iter_max=100]"),
])
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path, text, key, value, allowed):
    err = _error(tmp_path, text)
    assert err.key == key and err.value == value
    assert allowed in err.allowed
    assert key in str(err) and repr(value) in str(err)


def test_unknown_model_name_is_checked_against_the_registry(tmp_path):
    err = _error(tmp_path, "[model]\nname = \"deeplabv9\"\n", validate=True)
    assert err.key == "model.name" and err.value == "deeplabv9"
    assert "deeplabv2_tiny" in err.allowed and "fc_discriminator" not in err.allowed  # segmentation models only


def test_missing_weight_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "init.pth"
    err = _error(tmp_path, f"[model]\nweights = \"{missing}\"\n", validate=True)
    assert err.key == "model.weights" and err.value == str(missing) and str(missing) in err.allowed


def test_missing_init_checkpoint_is_named(tmp_path):
    err = _error(tmp_path, "[model]\ninit_checkpoint = \"runs/none/best.pt\"\n", validate=True)
    assert err.key == "model.init_checkpoint" and "checkpoint" in err.allowed


def test_single_output_model_cannot_be_multi_level(tmp_path):
    err = _error(tmp_path, "[model]\nname = \"deeplabv3plus_tiny\"\n", validate=True)  # multi_level defaults to true
    assert err.key == "model.multi_level" and "false" in err.allowed


def test_overrides_are_validated_and_named(tmp_path):
    path = _write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_train_config(path, ["optim.lr=0"])
    assert "optim.lr=0" in str(info.value) and info.value.key == "optim.lr"
    cfg = load_train_config(path, ["optim.lr=0.5", "adapt.gan=lsgan"])
    assert cfg.optim.lr == 0.5 and cfg.adapt.gan == "lsgan"
    assert parse_overrides(["data.source.size=[64, 32]"]) == {"data": {"source": {"size": [64, 32]}}}


def test_extends_chain_and_round_trip(tmp_path):
    _write(tmp_path, "[optim]\nlr = 0.02\n[model]\nname = \"deeplabv2_tiny\"\n", name="parent.toml")
    child = tmp_path / "child.toml"
    child.write_text('extends = "parent.toml"\nname = "child"\n[adapt]\nlambda_adv_main = 0.05\n')
    cfg = load_train_config(child)
    assert (cfg.name, cfg.optim.lr, cfg.adapt.lambda_adv_main, cfg.model.name) == ("child", 0.02, 0.05,
                                                                                  "deeplabv2_tiny")
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("name", shipped_names("configs"))
def test_every_shipped_config_loads(name):
    cfg = load_train_config(name)
    assert cfg.name == name
    if name.startswith("synth_") and cfg.model.init_checkpoint is None:
        validate_config(cfg, source=name)  # tiny models, no weight files needed
