"""The CLIP ViT image tower as mPLUG configures it (`visual_encoder.visual.*` in the checkpoints).

mPLUG always calls it with `skip_last_layer=True`: the tokens after `ln_post`, without the CLIP
projection, so `proj` is not built (the loader drops it as unused). The position table has
(image_res / patch)^2 + 1 rows, the patch being 16 for ViT-B-16 and 14 otherwise, as ModelScope sizes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixsearch.models.mplug.config import MplugConfig


class ClipAttention(nn.Module):
    """Multi-head self-attention with the parameter names of `torch.nn.MultiheadAttention`."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, width))


class QuickGelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = ClipAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGelu())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ClipBlocks(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class ClipVisionTower(nn.Module):
    """pixels [n, 3, R, R] -> tokens [n, 1 + (R/patch)^2, width] after ln_post (CLS first)."""

    def __init__(self, config: MplugConfig) -> None:
        super().__init__()
        width, patch = config.clip_vision_width, config.clip_vision_patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(config.position_rows, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = ClipBlocks(width, config.clip_vision_layers, config.vision_heads)
        self.ln_post = nn.LayerNorm(width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        if x.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(
                f"mPLUG vision tower got {x.shape[1]} tokens but has {self.positional_embedding.shape[0]} "
                f"positions: pixels of shape {tuple(pixels.shape)} are larger than the model's image size"
            )
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x)
