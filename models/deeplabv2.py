"""DeepLabV2 on a caffe-style ResNet, as AdaptSegNet's ``DeeplabMulti`` (two heads: conv4 aux, conv5 main).

DeepLabV2: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and
Fully Connected CRFs", TPAMI 2018, https://arxiv.org/abs/1606.00915. Multi-level heads: Tsai et al., "Learning to
Adapt Structured Output Space for Semantic Segmentation", CVPR 2018, https://arxiv.org/abs/1802.10349.

Layer names follow the reference (``conv1, bn1, layer1..layer4, layer5, layer6``, blocks ``conv1/bn1/conv2/bn2/
conv3/bn3/downsample.0/.1``, heads ``conv2d_list.N``) so the DeepLab init file and published checkpoints map 1:1.
"""
from __future__ import annotations

import os
from typing import Iterator, Literal, Sequence

import torch
import torch.nn as nn

from ._atrous import AtrousConv2d
from ._registry import register_model
from .pretrained import finish_model

BNPolicy = Literal["frozen", "stem_frozen"]
BN_POLICIES = ("frozen", "stem_frozen")
FULL_ASPP = (6, 12, 18, 24)


class CaffeBottleneck(nn.Module):
    """ResNet bottleneck in the caffe layout: the stride sits on the first 1x1 conv, the 3x3 conv has stride 1."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ASPPv2(nn.Module):
    """DeepLabV2 classifier: a sum of parallel 3x3 dilated convs (with bias, padding = dilation), one per rate.

    ``dilations=(6, 12, 18, 24)`` is the ASPP of the DeepLabV2 paper (and ADVENT). ``(6, 12)`` reproduces the network
    published by AdaptSegNet, MaxSquare and the seed project: their ``Classifier_Module.forward`` returns inside its
    loop, after the first two branches (AdaptSegNet issues #20/#60). Only two convs are built here; the published
    checkpoints carry all four branches' weights, of which the d=18 and d=24 ones are dead, and
    :func:`models.pretrained.load_weights` skips them by the named rule ``dead_aspp_branches``.
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int]):
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        self.conv2d_list = nn.ModuleList(
            AtrousConv2d(in_channels, num_classes, dilation=d, bias=True) for d in self.dilations)
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)  # biases keep PyTorch's default init, as in the reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """DeepLabV2 (caffe ResNet, output stride 8) with an optional auxiliary head on layer3 (``multi_level``).

    ``forward(x)`` returns ``{"out": logits}`` (main head ``layer6`` on layer4) plus ``"aux"`` (head ``layer5`` on
    layer3) when ``multi_level``; both at stride 8: a 1024x512 input gives 129x65 logits (the stem max-pool uses
    ``ceil_mode=True``). Upsampling to the label size is the caller's job (bilinear, ``align_corners=True``).

    ``bn_policy``: ``"frozen"`` sets ``requires_grad=False`` on every BatchNorm affine parameter (AdaptSegNet,
    ADVENT); ``"stem_frozen"`` freezes only the stem ``bn1`` (MaxSquare, the seed). Running statistics follow
    ``train()``/``eval()`` in both, as in those codebases.
    """

    backbone_prefix = ""  # where torchvision/DeepLab-init backbone keys live in this model's state dict

    def __init__(self, *, num_classes: int, layers: Sequence[int] = (3, 4, 23, 3), base_width: int = 64,
                 multi_level: bool = True, aspp_dilations: Sequence[int] = FULL_ASPP, bn_policy: BNPolicy = "frozen"):
        super().__init__()
        if bn_policy not in BN_POLICIES:
            raise ValueError(f"bn_policy={bn_policy!r}: allowed are {BN_POLICIES}")
        if not aspp_dilations or any(int(d) <= 0 for d in aspp_dilations):
            raise ValueError(f"aspp_dilations={tuple(aspp_dilations)!r}: expected positive integers, "
                             f"e.g. {FULL_ASPP} (full ASPP) or (6, 12) (the published AdaptSegNet head)")
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: expected a positive integer")
        self.num_classes = num_classes
        self.multi_level = bool(multi_level)
        self.aspp_dilations = tuple(int(d) for d in aspp_dilations)
        self.bn_policy = bn_policy

        self.inplanes = base_width
        self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = self._make_layer(base_width, layers[0])
        self.layer2 = self._make_layer(base_width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(base_width * 4, layers[2], dilation=2)
        self.layer4 = self._make_layer(base_width * 8, layers[3], dilation=4)
        c3, c4 = base_width * 4 * CaffeBottleneck.expansion, base_width * 8 * CaffeBottleneck.expansion
        self.layer5 = ASPPv2(c3, num_classes, self.aspp_dilations) if self.multi_level else None
        self.layer6 = ASPPv2(c4, num_classes, self.aspp_dilations)
        del self.inplanes

        for module in self.backbone_modules():
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, 0.01)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        self._apply_bn_policy()

    def _make_layer(self, planes: int, blocks: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out_channels = planes * CaffeBottleneck.expansion
        downsample = None
        # The reference forces a projection on dilated stages; it exists anyway because channels change.
        if stride != 1 or self.inplanes != out_channels or dilation in (2, 4):
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        layers = [CaffeBottleneck(self.inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
        self.inplanes = out_channels
        layers += [CaffeBottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _apply_bn_policy(self) -> None:
        frozen = [self.bn1] if self.bn_policy == "stem_frozen" else [
            m for module in self.backbone_modules() for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in frozen:
            bn.weight.requires_grad_(False)
            bn.bias.requires_grad_(False)

    def backbone_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def head_modules(self) -> list[nn.Module]:
        return [m for m in (self.layer5, self.layer6) if m is not None]

    def head_module_names(self) -> tuple[str, ...]:
        return ("layer5", "layer6")

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.backbone_modules():
            yield from module.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.head_modules():
            yield from module.parameters()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x3 = self.layer3(x)
        out = {"out": self.layer6(self.layer4(x3))}
        if self.layer5 is not None:
            out["aux"] = self.layer5(x3)
        return out


_V2_KW = dict(kind="segmentation", normalization="caffe", output_stride=8, multi_level_capable=True)


@register_model(**_V2_KW)
def deeplabv2_resnet101(*, num_classes: int = 19, multi_level: bool = True,
                        aspp_dilations: Sequence[int] = FULL_ASPP, bn_policy: BNPolicy = "frozen",
                        weights: str | os.PathLike | None = None) -> DeepLabV2:
    """DeepLabV2 ResNet-101 (AdaptSegNet DeeplabMulti), output stride 8, caffe-normalised input.

    Args:
        num_classes: output channels of both heads.
        multi_level: build the auxiliary head ``layer5`` on layer3 (returned as ``"aux"``).
        aspp_dilations: ``(6, 12, 18, 24)`` is the correct ASPP; ``(6, 12)`` is the published AdaptSegNet/MaxSquare/
            seed network (its early-return bug kept only two branches).
        bn_policy: ``"frozen"`` (AdaptSegNet/ADVENT) or ``"stem_frozen"`` (MaxSquare/seed).
        weights: a weight file (or ``"deeplab_init"``) loaded by :func:`models.pretrained.load_weights`.

    With all four branches and ``multi_level=True`` it has 44,601,560 parameters at 19 classes and 44,269,760 at 16.
    """
    model = DeepLabV2(num_classes=num_classes, layers=(3, 4, 23, 3), multi_level=multi_level,
                      aspp_dilations=aspp_dilations, bn_policy=bn_policy)
    return finish_model(model, name="deeplabv2_resnet101", weights=weights)


@register_model(**_V2_KW)
def deeplabv2_resnet50(*, num_classes: int = 19, multi_level: bool = True,
                       aspp_dilations: Sequence[int] = FULL_ASPP, bn_policy: BNPolicy = "frozen",
                       weights: str | os.PathLike | None = None) -> DeepLabV2:
    """DeepLabV2 ResNet-50 (blocks 3,4,6,3), otherwise as deeplabv2_resnet101; no published init file fits it."""
    model = DeepLabV2(num_classes=num_classes, layers=(3, 4, 6, 3), multi_level=multi_level,
                      aspp_dilations=aspp_dilations, bn_policy=bn_policy)
    return finish_model(model, name="deeplabv2_resnet50", weights=weights)


@register_model(**_V2_KW)
def deeplabv2_tiny(*, num_classes: int = 19, multi_level: bool = True,
                   aspp_dilations: Sequence[int] = FULL_ASPP, bn_policy: BNPolicy = "frozen",
                   weights: str | os.PathLike | None = None) -> DeepLabV2:
    """DeepLabV2 structure for CPU work: one bottleneck per stage, base width 16 (layer3/layer4: 256/512 ch)."""
    model = DeepLabV2(num_classes=num_classes, layers=(1, 1, 1, 1), base_width=16, multi_level=multi_level,
                      aspp_dilations=aspp_dilations, bn_policy=bn_policy)
    return finish_model(model, name="deeplabv2_tiny", weights=weights)
