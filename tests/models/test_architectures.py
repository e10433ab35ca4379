"""Every registered network on tiny CPU inputs: output contract, strides, gradients, structure, parameter counts."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models._atrous import AtrousConv2d

SEGMENTATION = models.list_models("segmentation")
BIG = {name for name in SEGMENTATION if not name.endswith("_tiny")}  # ResNet-50/101: one batch-1 pass only


def _conv_out(n: int, *, kernel: int, stride: int, padding: int, ceil_mode: bool = False) -> int:
    """PyTorch's output-size rule, including ceil_mode's 'last window must start inside the input' correction."""
    span = n + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1
    return out


def expected_logits_size(name: str, h: int, w: int) -> tuple[int, int]:
    def v2(n):  # 7x7/2 stem conv, 3x3/2 ceil-mode max-pool, layer2's stride-2 1x1 conv; layers 3-4 dilated
        n = _conv_out(n, kernel=7, stride=2, padding=3)
        n = _conv_out(n, kernel=3, stride=2, padding=1, ceil_mode=True)
        return _conv_out(n, kernel=1, stride=2, padding=0)

    def v3p(n):  # the decoder works at layer1's resolution: stem conv and floor-mode max-pool
        n = _conv_out(n, kernel=7, stride=2, padding=3)
        return _conv_out(n, kernel=3, stride=2, padding=1)

    fn = v2 if name.startswith("deeplabv2") else v3p
    return fn(h), fn(w)


def test_stride_formula_matches_published_sizes():
    # AdaptSegNet's 1024x512 target gives 129x65 logits; 1280x720 gives 161x91 (seed-and-references §2.1).
    assert expected_logits_size("deeplabv2_resnet101", 512, 1024) == (65, 129)
    assert expected_logits_size("deeplabv2_resnet101", 720, 1280) == (91, 161)
    assert expected_logits_size("deeplabv3plus_resnet101", 512, 1024) == (128, 256)
    # ceil_mode matters: a floor-mode pool would give 16 here, the caffe model gives 17.
    assert _conv_out(32, kernel=3, stride=2, padding=1, ceil_mode=True) == 17
    assert _conv_out(32, kernel=3, stride=2, padding=1) == 16


def test_registry_names_and_records():
    for name in ("deeplabv2_resnet101", "deeplabv3plus_resnet101", "fc_discriminator", "deeplabv2_tiny",
                 "deeplabv3plus_tiny"):
        assert name in models.list_models()
    assert models.list_models("discriminator") == ["fc_discriminator"]
    v2, v3p = models.model_info("deeplabv2_resnet101"), models.model_info("deeplabv3plus_resnet101")
    assert (v2.kind, v2.normalization, v2.output_stride, v2.logits_stride, v2.multi_level_capable) == \
        ("segmentation", "caffe", 8, 8, True)
    assert (v3p.normalization, v3p.output_stride, v3p.logits_stride, v3p.multi_level_capable) == \
        ("imagenet", 16, 4, False)
    assert models.model_info("deeplabv2_tiny") == models.model_info("deeplabv2_tiny")
    with pytest.raises(ValueError, match="deeplabv2_resnet101"):
        models.create_model("deeplabv2_resnet152")
    with pytest.raises(ValueError, match="segmentation"):
        models.list_models("generator")


def _trainable_and_frozen(model: nn.Module):
    params = dict(model.named_parameters())
    return ({k for k, p in params.items() if p.requires_grad}, {k for k, p in params.items() if not p.requires_grad})


@pytest.mark.parametrize("name", SEGMENTATION)
def test_forward_backward_every_segmentation_model(name):
    torch.manual_seed(0)
    model = models.create_model(name, num_classes=5).train()
    batch = 1 if name in BIG else 2  # batch 1 in train mode also covers V3+'s image-pooling branch (seed S9)
    x = torch.randn(batch, 3, 65, 129)
    # Backward on the big models only where it tests something of its own: V3+-101 trains at batch 1.
    backward = name not in BIG or name == "deeplabv3plus_resnet101"
    with torch.set_grad_enabled(backward):
        out = model(x)
    multi = models.model_info(name).multi_level_capable
    assert list(out) == (["out", "aux"] if multi else ["out"])
    h, w = expected_logits_size(name, 65, 129)
    for logits in out.values():
        assert logits.shape == (batch, 5, h, w)
        assert torch.isfinite(logits).all()
    if not backward:
        return
    sum(v.square().mean() for v in out.values()).backward()
    trainable, frozen = _trainable_and_frozen(model)
    with_grad = {k for k, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    stem = model.get_parameter("conv1.weight" if multi else "backbone.conv1.weight")
    assert stem.grad.abs().sum() > 0  # the gradient reaches the input end of the backbone
    if multi:  # the frozen-BN default: every BN affine parameter frozen, and nothing else
        assert frozen and all(".bn" in k or "bn1" in k or "downsample.1" in k for k in frozen)


@pytest.mark.parametrize("bn_policy", ["frozen", "stem_frozen"])
@pytest.mark.parametrize("aspp_dilations", [(6, 12, 18, 24), (6, 12)])
@pytest.mark.parametrize("multi_level", [True, False])
def test_deeplabv2_options_gradients(bn_policy, aspp_dilations, multi_level):
    model = models.create_model("deeplabv2_tiny", num_classes=4, bn_policy=bn_policy,
                                aspp_dilations=aspp_dilations, multi_level=multi_level).train()
    out = model(torch.randn(2, 3, 64, 94))  # even stem output: ceil_mode changes the size
    assert set(out) == ({"out", "aux"} if multi_level else {"out"})
    assert out["out"].shape[-2:] == expected_logits_size("deeplabv2_tiny", 64, 94)
    sum(v.sum() for v in out.values()).backward()
    bn_affine = {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
                 for p in ("weight", "bias")}
    expected_frozen = bn_affine if bn_policy == "frozen" else {"bn1.weight", "bn1.bias"}
    trainable, frozen = _trainable_and_frozen(model)
    assert frozen == expected_frozen
    assert {k for k, p in model.named_parameters() if p.grad is not None} == trainable
    assert all(model.get_parameter(k).grad is None for k in frozen)
    assert len(model.layer6.conv2d_list) == len(aspp_dilations)
    assert (model.layer5 is not None) == multi_level


def test_frozen_bn_policy_holds_in_train_mode():
    torch.manual_seed(0)
    for policy, frozen_names in (("frozen", None), ("stem_frozen", {"bn1"})):
        model = models.create_model("deeplabv2_tiny", num_classes=3, bn_policy=policy).train()
        bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
        frozen_names = frozen_names or set(bns)
        before = {n: (m.weight.detach().clone(), m.running_mean.clone()) for n, m in bns.items()}
        optimizer = torch.optim.SGD(models.param_groups(model, lr=0.1), lr=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.randn(2, 3, 33, 65))["out"].logsumexp(1).mean().backward()
            optimizer.step()
        assert model.training
        for name, bn in bns.items():
            assert torch.equal(bn.weight, before[name][0]) == (name in frozen_names), name
            # running statistics follow train() as in AdaptSegNet/ADVENT: they move even where the affine is frozen
            assert not torch.equal(bn.running_mean, before[name][1]), name


def _count(name, **kwargs):
    with torch.device("meta"):  # shapes only: a ResNet-101 builds in milliseconds
        return models.count_parameters(models.create_model(name, **kwargs))


def test_parameter_counts_match_the_published_networks():
    # seed-and-references §2.5, §3, §4 (DeeplabMulti with all four branches, V3P, FCDiscriminator).
    assert _count("deeplabv2_resnet101", num_classes=19) == 44_601_560
    assert _count("deeplabv2_resnet101", num_classes=16) == 44_269_760
    # Two branches per head: exactly the parameters the published (buggy) forward uses.
    assert _count("deeplabv2_resnet101", num_classes=16, aspp_dilations=(6, 12)) == 43_384_960
    assert _count("fc_discriminator", in_channels=16) == 2_778_049
    assert _count("fc_discriminator", in_channels=19) == 2_781_121
    # V3P has 59,343,024 at 16 classes; our image-pooling branch swaps its BN (512) for conv biases (256).
    assert _count("deeplabv3plus_resnet101", num_classes=16) == 59_343_024 - 512 + 256
    assert _count("deeplabv3plus_resnet101", num_classes=19) == 59_343_795 - 512 + 256
    with torch.device("meta"):
        frozen = models.create_model("deeplabv2_resnet101", num_classes=16)
        stem = models.create_model("deeplabv2_resnet101", num_classes=16, bn_policy="stem_frozen")
    assert models.count_parameters(frozen, trainable_only=True) == 44_164_416
    assert models.count_parameters(stem, trainable_only=True) == 44_269_632


def test_deeplabv2_resnet101_structure():
    with torch.device("meta"):
        model = models.create_model("deeplabv2_resnet101", num_classes=19)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert model.maxpool.ceil_mode and model.maxpool.kernel_size == 3 and model.maxpool.stride == 2
    first = model.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)  # caffe: stride on the 1x1
    for name, m in model.named_modules():  # bias-free backbone, heads with bias
        if isinstance(m, nn.Conv2d):
            assert (m.bias is not None) == name.startswith(("layer5", "layer6")), name
    for layer, rate in ((model.layer3, 2), (model.layer4, 4)):
        assert {(b.conv2.dilation, b.conv2.padding) for b in layer} == {((rate, rate), (rate, rate))}
        assert layer[0].downsample is not None and layer[0].conv1.stride == (1, 1)
    for head, channels in ((model.layer5, 1024), (model.layer6, 2048)):
        assert [c.dilation[0] for c in head.conv2d_list] == [6, 12, 18, 24]
        assert [c.padding[0] for c in head.conv2d_list] == [6, 12, 18, 24]
        assert all(c.in_channels == channels and c.bias is not None for c in head.conv2d_list)
    names = set(model.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
                "layer3.22.bn3.running_var", "layer5.conv2d_list.3.weight", "layer6.conv2d_list.0.bias"):
        assert key in names


def test_deeplabv3plus_resnet101_structure():
    with torch.device("meta"):
        model = models.create_model("deeplabv3plus_resnet101", num_classes=16)
    trunk = model.backbone
    assert [len(getattr(trunk, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert trunk.layer2[0].conv2.stride == (2, 2) and trunk.layer3[0].conv2.stride == (2, 2)
    assert trunk.layer4[0].conv2.stride == (1, 1) and trunk.layer4[0].downsample[0].stride == (1, 1)
    assert [b.conv2.dilation[0] for b in trunk.layer4] == [2, 4, 8]  # V3P multi-grid 2*(1,2,4)
    assert [b.conv2.padding[0] for b in trunk.layer4] == [2, 4, 8]
    assert not hasattr(trunk, "fc")
    aspp = model.aspp
    assert len(aspp.branches) == 4 and aspp.branches[0][0].kernel_size == (1, 1)
    assert [b[0].dilation[0] for b in aspp.branches[1:]] == [6, 12, 18]
    assert [b[0].padding[0] for b in aspp.branches[1:]] == [6, 12, 18]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in aspp.image_pool)  # batch 1 must train
    assert aspp.project[0].in_channels == 5 * 256 and isinstance(aspp.project[3], nn.Dropout)
    assert aspp.project[3].p == 0.5
    dec = model.decoder
    assert dec.low_level_proj[0].in_channels == 256 and dec.low_level_proj[0].out_channels == 48
    assert dec.fuse[0][0].in_channels == 304 and [dec.fuse[1].p, dec.fuse[3].p] == [0.5, 0.1]
    assert dec.classifier.out_channels == 16 and dec.classifier.bias is not None


def test_aspp_v2_sums_every_branch():
    # The published head returned after two branches; ours sums all of them (and exactly the two for (6, 12)).
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 30)
    for dilations in ((6, 12, 18, 24), (6, 12)):
        head = models.deeplabv2.ASPPv2(8, 3, dilations)
        expected = sum(F.conv2d(x, c.weight, c.bias, padding=d, dilation=d)
                       for c, d in zip(head.conv2d_list, dilations))
        torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-6)
        assert len(head.conv2d_list) == len(dilations)


@pytest.mark.parametrize("size", [(9, 17), (30, 9), (5, 5), (40, 40)])
def test_atrous_conv_skips_padding_taps_exactly(size):
    torch.manual_seed(1)
    conv = AtrousConv2d(4, 3, dilation=12, bias=True)
    x = torch.randn(2, 4, *size, requires_grad=True)
    reference = F.conv2d(x, conv.weight, conv.bias, padding=12, dilation=12)
    out = conv(x)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    ref_grads = torch.autograd.grad(reference.square().sum(), (x, conv.weight))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_fc_discriminator_structure_and_output():
    d = models.create_model("fc_discriminator", in_channels=16)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 64), (64, 128), (128, 256), (256, 512),
                                                                (512, 1)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) and c.bias is not None
               for c in convs)
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.2 for a in acts)
    assert isinstance(d.net[-1], nn.Conv2d)  # raw logits for BCEWithLogits
    out = d(torch.softmax(torch.randn(2, 16, 64, 128), 1))
    assert out.shape == (2, 1, 2, 4) and torch.isfinite(out).all()
    with torch.no_grad():  # no output activation: a zero last conv with bias -5 yields logits of exactly -5
        d.net[-1].weight.zero_()
        d.net[-1].bias.fill_(-5.0)
    assert torch.equal(d(torch.rand(1, 16, 64, 64)), torch.full((1, 1, 2, 2), -5.0))


def test_deeplabv3plus_tiny_trains_at_batch_1():
    torch.manual_seed(0)
    model = models.create_model("deeplabv3plus_tiny", num_classes=4).train()
    optimizer = torch.optim.SGD(models.param_groups(model, lr=0.01), lr=0.01, momentum=0.9)
    x, y = torch.randn(1, 3, 64, 128), torch.randint(0, 4, (1, 64, 128))
    before = model.aspp.image_pool[1].weight.detach().clone()
    for _ in range(2):
        optimizer.zero_grad()
        logits = F.interpolate(model(x)["out"], size=(64, 128), mode="bilinear", align_corners=True)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.aspp.image_pool[1].weight, before)


def test_tiny_deeplabv2_at_cityscapes_size_gives_129x65():
    model = models.create_model("deeplabv2_tiny", num_classes=2, multi_level=False).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 512, 1024))["out"]
    assert out.shape[-2:] == (65, 129)
