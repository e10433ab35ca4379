"""DeepLabV3+ on a torchvision ResNet at output stride 16, as in jfzhang95/pytorch-deeplab-xception (the seed's copy).

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018,
https://arxiv.org/abs/1802.02611 (ASPP with image pooling: Chen et al., "Rethinking Atrous Convolution",
https://arxiv.org/abs/1706.05587).

Two deliberate differences from the published code, both documented where they are made:

* layer4 multi-grid. torchvision's ``resnet101(replace_stride_with_dilation=[False, False, True])`` dilates layer4's
  three blocks by 1, 2, 2; the published network uses 2 * (1, 2, 4) = 2, 4, 8. :func:`set_multigrid` sets those on
  the blocks' 3x3 convs (dilation and padding; no parameter changes).
* Image-pooling branch. The published branch is conv -> BatchNorm -> ReLU on the pooled 1x1 map; in training that
  BatchNorm normalises over the batch alone, so batch 1 raises "Expected more than 1 value per channel" (seed defect
  S9, V3P issues #11/#41/#143) and batch 2 turns every channel into +-1. Here the branch is a 1x1 conv **with bias**
  and ReLU, no normalisation: it works at any batch size and in both modes. This replaces the BN's 512 affine
  parameters by 256 biases, so the model has 59,342,768 parameters at 16 classes (published: 59,343,024) and
  59,343,539 at 19 (published: 59,343,795).
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import Bottleneck, ResNet, conv1x1, resnet101

from ._atrous import AtrousConv2d
from ._registry import register_model
from .pretrained import finish_model

MULTI_GRID = (1, 2, 4)


def set_multigrid(layer4: nn.Sequential, *, base_dilation: int = 2, grid: Sequence[int] = MULTI_GRID) -> None:
    """Set the 3x3 convs of layer4's blocks to dilation ``base_dilation * grid[i]`` (padding = dilation)."""
    if len(layer4) != len(grid):
        raise ValueError(f"layer4 has {len(layer4)} blocks but the multi-grid {tuple(grid)} has {len(grid)} entries")
    for block, unit in zip(layer4, grid):
        rate = base_dilation * unit
        block.conv2.dilation = (rate, rate)
        block.conv2.padding = (rate, rate)


class _SmallResNet(nn.Module):
    """torchvision-layout ResNet trunk (stride on the 3x3 conv) with a configurable base width.

    torchvision's ``ResNet`` fixes the stem at 64 channels; the tiny CPU variant needs 16. Same attribute names as
    torchvision (``conv1, bn1, relu, maxpool, layer1..layer4``), so the two trunks are interchangeable.
    """

    def __init__(self, *, layers: Sequence[int], base_width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = base_width
        stages = []
        for i, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 1))):
            planes = base_width * 2 ** i
            out = planes * Bottleneck.expansion
            downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
            stage = [Bottleneck(inplanes, planes, stride, downsample)]
            stage += [Bottleneck(out, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
            inplanes = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _resnet101_trunk() -> ResNet:
    trunk = resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
    del trunk.avgpool, trunk.fc  # the classifier is not part of the backbone (its weights are skipped by rule)
    return trunk


def _conv_bn_relu(cin: int, cout: int, *, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    conv = (nn.Conv2d(cin, cout, 1, bias=False) if kernel_size == 1 else
            AtrousConv2d(cin, cout, dilation=dilation, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPPv3(nn.Module):
    """ASPP of DeepLabV3: a 1x1 branch, one 3x3 branch per rate, and image pooling; concat -> 1x1 -> BN/ReLU/dropout.

    The image-pooling branch has no normalisation (see the module docstring): batch 1 trains.
    """

    def __init__(self, in_channels: int, *, channels: int = 256, rates: Sequence[int] = (6, 12, 18),
                 dropout: float = 0.5):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels)]
            + [_conv_bn_relu(in_channels, channels, kernel_size=3, dilation=r) for r in self.rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1, bias=True),
                                        nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            nn.Conv2d(channels * (len(self.branches) + 1), channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DecoderV3Plus(nn.Module):
    """DeepLabV3+ decoder: project low-level features to ``low_level_channels``, fuse with upsampled ASPP output."""

    def __init__(self, *, low_level_in: int, aspp_channels: int, num_classes: int, low_level_channels: int = 48,
                 channels: int = 256):
        super().__init__()
        self.low_level_proj = _conv_bn_relu(low_level_in, low_level_channels)
        self.fuse = nn.Sequential(
            _conv_bn_relu(aspp_channels + low_level_channels, channels, kernel_size=3), nn.Dropout(0.5),
            _conv_bn_relu(channels, channels, kernel_size=3), nn.Dropout(0.1))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low_level_proj(low)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([high, low], dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: ResNet trunk (OS16, multi-grid layer4), ASPP on layer4, decoder with layer1 low-level features.

    ``forward(x)`` returns ``{"out": logits}`` at stride 4 (the decoder's resolution, ceil(H/4) x ceil(W/4)); there is
    no auxiliary head. Upsampling to the label size is the caller's job (bilinear, ``align_corners=True``).
    Every BatchNorm trains (the published setting, ``freeze_bn=False``).
    """

    backbone_prefix = "backbone."

    def __init__(self, *, backbone: nn.Module, num_classes: int, low_level_in: int, high_level_in: int,
                 aspp_rates: Sequence[int] = (6, 12, 18), aspp_channels: int = 256, low_level_channels: int = 48,
                 decoder_channels: int = 256):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: expected a positive integer")
        self.num_classes = num_classes
        self.multi_level = False
        self.backbone = backbone
        self.aspp = ASPPv3(high_level_in, channels=aspp_channels, rates=aspp_rates)
        self.decoder = DecoderV3Plus(low_level_in=low_level_in, aspp_channels=aspp_channels,
                                     num_classes=num_classes, low_level_channels=low_level_channels,
                                     channels=decoder_channels)
        for module in (self.aspp, self.decoder):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)

    def head_module_names(self) -> tuple[str, ...]:
        return ("aspp", "decoder")

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.aspp.parameters()
        yield from self.decoder.parameters()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        low = b.layer1(x)
        high = b.layer4(b.layer3(b.layer2(low)))
        return {"out": self.decoder(self.aspp(high), low)}


_V3P_KW = dict(kind="segmentation", normalization="imagenet", output_stride=16, logits_stride=4,
               multi_level_capable=False)


@register_model(**_V3P_KW)
def deeplabv3plus_resnet101(*, num_classes: int = 19, weights: str | os.PathLike | None = None) -> DeepLabV3Plus:
    """DeepLabV3+ ResNet-101 (OS16, layer4 dilations 2/4/8, ASPP 6/12/18), ImageNet-normalised input.

    Args:
        num_classes: output channels.
        weights: torchvision ImageNet ResNet-101 weights (a file or ``"imagenet"`` for torch's hub cache) or a
            dastudy checkpoint, loaded by :func:`models.pretrained.load_weights`.

    59,342,768 parameters at 16 classes (the published 59,343,024 less the image-pooling BN's 512, plus 256 biases).
    """
    trunk = _resnet101_trunk()
    set_multigrid(trunk.layer4)
    model = DeepLabV3Plus(backbone=trunk, num_classes=num_classes, low_level_in=256, high_level_in=2048)
    return finish_model(model, name="deeplabv3plus_resnet101", weights=weights)


@register_model(**_V3P_KW)
def deeplabv3plus_tiny(*, num_classes: int = 19, weights: str | os.PathLike | None = None) -> DeepLabV3Plus:
    """DeepLabV3+ structure for CPU work: one bottleneck per stage, base width 16, ASPP/decoder at 64 ch (low 12)."""
    trunk = _SmallResNet(layers=(1, 1, 1, 1), base_width=16)
    set_multigrid(trunk.layer4, grid=(1,))
    model = DeepLabV3Plus(backbone=trunk, num_classes=num_classes, low_level_in=64, high_level_in=512,
                          aspp_channels=64, low_level_channels=12, decoder_channels=64)
    return finish_model(model, name="deeplabv3plus_tiny", weights=weights)
