"""mPLUG's fusion encoder: text attends to the image, with skip connections every `stride_layer` layers.

ModelScope builds `num_hidden_layers` fusion layers but runs only the last `fusion_layers` of them;
counting from the first one that runs (n = 0, 1, ...), a layer with n == 0 or n % stride_layer != 0
runs text self-attention then cross-attention to the image. The others run one self-attention over
the concatenated [image; text] tokens; their image outputs are added to the image stream (the
"skip connection"), their text outputs continue. Only the layers that run are built here, under
their original indices (`fusion_encoder.encoder.layer.<i>`); the loader drops the others as unused.
"""

from __future__ import annotations

import torch
from torch import nn

from pixsearch.models.mplug.bert import BertAttention, BertIntermediate, BertSelfOutput, memory_mask, padding_mask
from pixsearch.models.mplug.config import BertSettings


class FusionLayer(nn.Module):
    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.crossattention = BertAttention(cfg, key_width=cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)

    def cross(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.attention(text, text_mask)
        return self.feed_forward(self.crossattention(hidden, image_mask, source=image))

    def joint(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.attention(torch.cat([image, text], dim=1), torch.cat([image_mask, text_mask], dim=3))
        hidden = self.feed_forward(hidden)
        return hidden[:, : image.shape[1]], hidden[:, image.shape[1] :]


class FusionLayers(nn.Module):
    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.layer = nn.ModuleDict({str(i): FusionLayer(cfg) for i in range(cfg.fusion_start, cfg.num_hidden_layers)})


class FusionEncoder(nn.Module):
    """`fusion_encoder`: (text [n, L, H], text mask [n, L], image [n, M, W]) -> (image states, text states)."""

    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.stride = cfg.stride_layer
        self.encoder = FusionLayers(cfg)

    def forward(
        self, text: torch.Tensor, text_attention: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_mask = padding_mask(text_attention, text.dtype)
        image_mask = memory_mask(torch.ones(image.shape[:2], device=image.device), text.dtype)
        for n, layer in enumerate(self.encoder.layer.values()):
            if n == 0 or n % self.stride != 0:
                text = layer.cross(text, text_mask, image, image_mask)
            else:
                # ModelScope adds in place to the caller's tensor; a new tensor keeps cached image states intact
                image_update, text = layer.joint(text, text_mask, image, image_mask)
                image = image + image_update
        return image, text
