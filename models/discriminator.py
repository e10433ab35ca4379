"""Fully convolutional output-space discriminator of AdaptSegNet.

Tsai et al., "Learning to Adapt Structured Output Space for Semantic Segmentation", CVPR 2018,
https://arxiv.org/abs/1802.10349 (their ``model/discriminator.py``; the seed's copy is identical).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model


class FCDiscriminator(nn.Module):
    """Five 4x4 stride-2 convs with bias (C -> ndf -> 2ndf -> 4ndf -> 8ndf -> 1), LeakyReLU(0.2) after the first four.

    Input: a softmax map (B, C, H, W). Output: raw logits (B, 1, ~H/32, ~W/32) for ``BCEWithLogitsLoss`` (no output
    activation, no normalisation layer). 2,778,049 parameters at C=16 and 2,781,121 at C=19 (ndf=64).
    """

    def __init__(self, *, in_channels: int, ndf: int = 64):
        super().__init__()
        if in_channels < 1 or ndf < 1:
            raise ValueError(f"in_channels={in_channels}, ndf={ndf}: both must be positive integers")
        self.in_channels = in_channels
        widths = (in_channels, ndf, ndf * 2, ndf * 4, ndf * 8)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, kernel_size=4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model(kind="discriminator", normalization=None, output_stride=32)
def fc_discriminator(*, in_channels: int, ndf: int = 64) -> FCDiscriminator:
    """AdaptSegNet FCDiscriminator on softmax maps of ``in_channels`` classes (output ~1/32 of the input)."""
    model = FCDiscriminator(in_channels=in_channels, ndf=ndf)
    model.model_name = "fc_discriminator"
    return model
