"""build_model (config -> factory kwargs), param_groups, and the ``dastudy models`` command."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import models


def test_build_model_from_the_run_config_dataclass():
    from trainables.config import ModelConfig

    cfg = ModelConfig(name="deeplabv2_tiny", multi_level=False, aspp_dilations=(6, 12), bn_policy="stem_frozen")
    model = models.build_model(cfg, num_classes=7)
    assert (model.model_name, model.num_classes, model.multi_level, model.aspp_dilations, model.bn_policy) == \
        ("deeplabv2_tiny", 7, False, (6, 12), "stem_frozen")
    assert model.layer5 is None and len(model.layer6.conv2d_list) == 2


def test_build_model_accepts_mappings_and_duck_typed_objects():
    from_mapping = models.build_model({"name": "deeplabv2_tiny", "aspp_dilations": [6, 12, 18]}, num_classes=3)
    assert from_mapping.aspp_dilations == (6, 12, 18) and from_mapping.multi_level  # factory default kept
    duck = SimpleNamespace(name="deeplabv3plus_tiny", multi_level=False, aspp_dilations=(6, 12, 18, 24),
                           bn_policy="frozen", weights=None)
    model = models.build_model(duck, num_classes=4)
    assert model.model_name == "deeplabv3plus_tiny" and model.decoder.classifier.out_channels == 4


def test_build_model_rejects_options_a_model_does_not_have():
    with pytest.raises(ValueError, match="'deeplabv3plus_tiny'.*multi_level must be false.*deeplabv2_resnet101"):
        models.build_model({"name": "deeplabv3plus_tiny", "multi_level": True}, num_classes=4)
    with pytest.raises(ValueError, match="'deeplabv3plus_resnet101'.*aspp_dilations"):
        models.build_model({"name": "deeplabv3plus_resnet101", "multi_level": False, "aspp_dilations": (6, 12)},
                           num_classes=4)
    with pytest.raises(ValueError, match="discriminator"):
        models.build_model({"name": "fc_discriminator"}, num_classes=4)
    with pytest.raises(ValueError, match="unknown model 'deeplab'"):
        models.build_model({"name": "deeplab"}, num_classes=4)
    with pytest.raises(ValueError, match="bn_policy"):
        models.build_model({"name": "deeplabv2_tiny", "bn_policy": "none"}, num_classes=4)
    with pytest.raises(models.WeightsError, match="missing.pth"):
        models.build_model({"name": "deeplabv2_tiny", "weights": "/nonexistent/missing.pth"}, num_classes=4)


@pytest.mark.parametrize("name, policy", [("deeplabv2_tiny", "frozen"), ("deeplabv2_tiny", "stem_frozen"),
                                          ("deeplabv3plus_tiny", None)])
def test_param_groups_split_backbone_and_heads(name, policy):
    kwargs = {"bn_policy": policy} if policy else {}
    model = models.create_model(name, num_classes=4, **kwargs)
    groups = models.param_groups(model, lr=2.5e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 2.5e-4), ("head", 2.5e-3)]
    by_id = {id(p): n for n, p in model.named_parameters()}
    backbone = {by_id[id(p)] for p in groups[0]["params"]}
    head = {by_id[id(p)] for p in groups[1]["params"]}
    head_prefixes = ("layer5.", "layer6.") if name.startswith("deeplabv2") else ("aspp.", "decoder.")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert head == {n for n in trainable if n.startswith(head_prefixes)}
    assert backbone == trainable - head
    assert all(model.get_parameter(n).requires_grad for n in backbone | head)
    if policy == "frozen":
        assert not any("bn" in n or "downsample.1" in n for n in backbone)
    elif policy == "stem_frozen":
        assert "bn1.weight" not in backbone and "layer1.0.bn1.weight" in backbone
    assert models.param_groups(model, lr=1.0, head_lr_mult=3.0)[1]["lr"] == 3.0
    with pytest.raises(TypeError):
        models.param_groups(models.create_model("fc_discriminator", in_channels=4), lr=1.0)


def test_dastudy_models_command_lists_counts(capsys):
    from study.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line and line.split()[0] in
             models.list_models()}
    assert set(lines) == set(models.list_models())
    assert lines["deeplabv2_resnet101"][2] == "caffe" and lines["deeplabv3plus_resnet101"][2] == "imagenet"
    assert lines["deeplabv2_resnet101"][-2:] == ["44,269,760", "44,601,560"]
    assert lines["fc_discriminator"][-2:] == ["2,778,049", "2,781,121"]
    with torch.device("meta"):
        tiny = models.count_parameters(models.create_model("deeplabv3plus_tiny", num_classes=16))
    assert lines["deeplabv3plus_tiny"][-2] == f"{tiny:,}"
    with pytest.raises(SystemExit) as info:
        main(["models", "--help"])
    assert info.value.code == 0
    assert "normalization" in capsys.readouterr().out
