"""OFA's image stem: the first three stages of a Bottleneck ResNet (stride 16, 1024 channels out).

Widths are fixed (64 -> 256 -> 512 -> 1024) whatever the `resnet_type`; only the number of blocks
per stage changes. Module names match ModelScope's `ResNet` so checkpoints load as they are.
BatchNorm runs in eval mode with the stored running statistics.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), plus the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(shortcut + out)


class ResNet(nn.Module):
    """conv 7x7/2 -> BN -> ReLU -> maxpool 3x3/2 -> three Bottleneck stages (strides 1, 2, 2)."""

    def __init__(self, blocks: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        stages = []
        for width, count, stride in zip((64, 128, 256), blocks, (1, 2, 2), strict=True):
            layers = [Bottleneck(channels, width, stride)]
            channels = width * Bottleneck.expansion
            layers += [Bottleneck(channels, width) for _ in range(1, count)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> features [B, 1024, H/16, W/16]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))
