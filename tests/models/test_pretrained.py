"""Weight loading: each format written by the test, rules named in the summary, anything unexplained an error."""
from __future__ import annotations

import logging

import pytest
import torch

import models
from models import WeightsError, checkpoint_meta, load_weights


def _v2(**kwargs):
    return models.create_model("deeplabv2_tiny", num_classes=kwargs.pop("num_classes", 5), **kwargs).eval()


def _backbone_state(model, *, with_step_counter=False):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("layer5.", "layer6."))
            and (with_step_counter or not k.endswith("num_batches_tracked"))}


def _randomise(model):
    """Give BN statistics non-trivial values, so that a load that forgot them would show in the outputs."""
    torch.manual_seed(123)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return model


def _scale_file(tmp_path, model, *, layer5_in=None, extra=None, drop=None):
    """A DeepLab-init-style file: ``Scale.``-prefixed backbone, a 4-branch ``layer5`` for a wider trunk, no layer6,
    no ``num_batches_tracked`` (old PyTorch)."""
    state = {f"Scale.{k}": v for k, v in _backbone_state(model).items()}
    layer5_in = layer5_in or 2 * model.layer6.conv2d_list[0].in_channels  # 2048 for ResNet-101: never our aux head
    for i in range(4):
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.randn(21, layer5_in, 3, 3)
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.randn(21)
    state.update(extra or {})
    for key in drop or ():
        del state[key]
    path = tmp_path / "DeepLab_resnet_pretrained_init-f81d91e8.pth"
    torch.save(state, path)
    return path


def test_deeplab_init_file_loads_backbone_and_names_every_rule(tmp_path, caplog):
    source = _randomise(_v2(num_classes=16))
    path = _scale_file(tmp_path, source)
    target = _v2(num_classes=16)
    heads_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith(("layer5.", "layer6."))}
    with caplog.at_level(logging.INFO, logger="models.pretrained"):
        summary = load_weights(target, path)
    assert summary.format == "deeplab_init"
    backbone = _backbone_state(source)
    assert set(summary.loaded) == set(backbone)
    rules = summary.skipped_by_rule
    assert set(rules) == {"deeplab_init_layer5", "heads_stay_at_init", "num_batches_tracked_absent"}
    assert sorted(rules["deeplab_init_layer5"]) == sorted(
        f"Scale.layer5.conv2d_list.{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    assert set(rules["heads_stay_at_init"]) == set(heads_before)
    assert all(k.endswith("num_batches_tracked") for k in rules["num_batches_tracked_absent"])
    assert set(summary.unexpected) == set(rules["deeplab_init_layer5"])
    assert set(summary.missing) == set(heads_before) | set(rules["num_batches_tracked_absent"])
    state = target.state_dict()
    assert all(torch.equal(state[k], v) for k, v in backbone.items())
    assert all(torch.equal(state[k], v) for k, v in heads_before.items())  # layer6 stays at N(0, 0.01) init
    text = str(summary)
    assert "\n" not in text and f"loaded {len(backbone)} tensors" in text and "deeplab_init_layer5 (8)" in text
    assert text in caplog.text


def test_scale_format_reproduces_outputs_exactly(tmp_path):
    # Same seed: identical heads (which the init file does not carry); then a different backbone in the source.
    torch.manual_seed(0)
    source = _v2()
    torch.manual_seed(0)
    target = _v2()
    _randomise(source)
    with torch.no_grad():
        for p in source.backbone_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    x = torch.randn(2, 3, 40, 72)
    with torch.no_grad():
        expected = source(x)
        assert not torch.equal(target(x)["out"], expected["out"])
        load_weights(target, _scale_file(tmp_path, source))
        got = target(x)
    assert list(got) == ["out", "aux"]
    assert all(torch.equal(got[k], expected[k]) for k in expected)


@pytest.mark.parametrize("change, message", [
    ({"extra": {"Scale.layer4.0.extra.weight": torch.zeros(1)}}, "unexpected keys"),
    ({"drop": ["Scale.layer2.0.conv2.weight"]}, "missing keys"),
    ({"extra": {"Scale.layer1.0.conv1.weight": torch.zeros(3, 3, 1, 1)}}, "shape mismatches"),
])
def test_deeplab_init_unexplained_keys_raise(tmp_path, change, message):
    path = _scale_file(tmp_path, _v2(), **change)
    target = _v2()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError, match=message) as info:
        load_weights(target, path)
    assert str(path) in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing half-loaded


def test_deeplab_init_refused_by_an_imagenet_model(tmp_path):
    path = _scale_file(tmp_path, _v2())
    with pytest.raises(WeightsError, match="caffe.*imagenet"):
        load_weights(models.create_model("deeplabv3plus_tiny", num_classes=5), path)


def _torchvision_file(tmp_path, model, name="resnet101-tv.pth"):
    state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_torchvision_weights_load_into_the_v3plus_backbone(tmp_path):
    source = _randomise(models.create_model("deeplabv3plus_tiny", num_classes=5))
    path = _torchvision_file(tmp_path, source)
    target = models.create_model("deeplabv3plus_tiny", num_classes=5)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith(("aspp.", "decoder."))}
    summary = load_weights(target, path)
    assert summary.format == "torchvision"
    assert summary.skipped_by_rule["imagenet_classifier_fc"] == ("fc.weight", "fc.bias")
    assert set(summary.skipped_by_rule["heads_stay_at_init"]) == set(head_before)
    assert "num_batches_tracked_absent" not in summary.skipped_by_rule  # this file has the step counters
    assert set(summary.loaded) == {f"backbone.{k}" for k in source.backbone.state_dict()}
    state = target.state_dict()
    assert all(torch.equal(state[f"backbone.{k}"], v) for k, v in source.backbone.state_dict().items())
    assert all(torch.equal(state[k], v) for k, v in head_before.items())


def test_named_imagenet_weights_come_from_the_hub_cache_only(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        model = models.create_model("deeplabv3plus_tiny", num_classes=5)
        with pytest.raises(WeightsError) as info:
            load_weights(model, "imagenet")
        text = str(info.value)
        for part in ("resnet101-5d3b4d8f.pth", "resnet101-63fe2227.pth",
                     str(tmp_path / "hub" / "checkpoints" / "resnet101-5d3b4d8f.pth"),
                     "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth"):
            assert part in text
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        path = _torchvision_file(tmp_path / "hub" / "checkpoints", model, name="resnet101-63fe2227.pth")
        summary = load_weights(model, "imagenet")
        assert summary.path == str(path) and summary.format == "torchvision"
    finally:
        torch.hub.set_dir(old)


def test_dastudy_checkpoint_roundtrip_and_mismatches(tmp_path):
    source = _randomise(_v2(num_classes=16))
    path = tmp_path / "best.pt"
    torch.save({"model": source.state_dict(), "meta": checkpoint_meta(source), "iteration": 7}, path)
    target = _v2(num_classes=16)
    summary = load_weights(target, path)
    assert summary.format == "dastudy" and not summary.skipped_by_rule and not summary.missing
    x = torch.randn(1, 3, 33, 65)
    with torch.no_grad():
        assert torch.equal(source(x)["out"], target(x)["out"]) and torch.equal(source(x)["aux"], target(x)["aux"])
    with pytest.raises(WeightsError, match="'deeplabv2_tiny'.*'deeplabv3plus_tiny'"):
        load_weights(models.create_model("deeplabv3plus_tiny", num_classes=16), path)
    with pytest.raises(WeightsError, match="16 classes.*19"):
        load_weights(_v2(num_classes=19), path)
    with pytest.raises(WeightsError, match=r"aspp_dilations=\[6, 12, 18, 24\].*\(6, 12\)"):
        load_weights(_v2(num_classes=16, aspp_dilations=(6, 12)), path)
    # The factory's weights= goes through the same loader.
    built = models.create_model("deeplabv2_tiny", num_classes=16, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), source.state_dict().values()))


def test_published_deeplab_multi_checkpoint_into_the_two_branch_head(tmp_path):
    """A published 4-branch checkpoint in the (6, 12) model: the dead d=18/24 branches are skipped by rule, and
    the result computes what the published forward computed (first two branches only)."""
    source = _randomise(_v2(num_classes=16))
    path = tmp_path / "GTA5_source.pth"  # MaxSquare/seed layout: DataParallel prefixes under "state_dict"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "iteration": 1}, path)
    target = _v2(num_classes=16, aspp_dilations=(6, 12))
    summary = load_weights(target, path)
    assert summary.format == "deeplab_multi"
    assert sorted(summary.skipped_by_rule["dead_aspp_branches"]) == sorted(
        f"module.layer{h}.conv2d_list.{i}.{p}" for h in (5, 6) for i in (2, 3) for p in ("weight", "bias"))
    x = torch.randn(1, 3, 33, 65)
    with torch.no_grad():
        f = source.maxpool(source.relu(source.bn1(source.conv1(x))))
        f3 = source.layer3(source.layer2(source.layer1(f)))
        f4 = source.layer4(f3)
        published_main = source.layer6.conv2d_list[0](f4) + source.layer6.conv2d_list[1](f4)
        published_aux = source.layer5.conv2d_list[0](f3) + source.layer5.conv2d_list[1](f3)
        out = target(x)
    torch.testing.assert_close(out["out"], published_main, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["aux"], published_aux, rtol=0, atol=1e-6)
    # Into the full 4-branch model the same file loads completely; into a single-level model the aux head is
    # skipped by its own rule.
    assert not load_weights(_v2(num_classes=16), path).skipped_by_rule
    single = load_weights(_v2(num_classes=16, multi_level=False), path)
    assert len(single.skipped_by_rule["aux_head_not_built"]) == 8


def test_missing_unreadable_and_unrecognised_files(tmp_path):
    model = _v2()
    with pytest.raises(WeightsError, match=str(tmp_path / "nope.pth")):
        load_weights(model, tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="nope.pth"):
        models.create_model("deeplabv2_tiny", weights=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(model, garbage)
    odd = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, odd)
    with pytest.raises(WeightsError, match="cannot tell the format"):
        load_weights(model, odd)
    with pytest.raises(ValueError, match="kind"):
        load_weights(model, odd, kind="caffe2")
    with pytest.raises(WeightsError, match="not a dastudy checkpoint"):
        load_weights(model, odd, kind="dastudy")
