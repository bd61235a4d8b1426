"""VLE's ITM over many candidates: the first co-attention layer's image-side work kept per image.

VLE's co-attention (METER) updates both streams in every layer, each from the other's previous
output, so after layer 0 the image stream has heard the query and nothing more is per image. What
layer 0 does with the image alone is: project it (`image_projection_layer` plus its token type),
give the text layer its cross-attention keys/values, run the image layer's self-attention, and
project that to the queries of the image layer's cross-attention. `VleImageState` holds those.

`VleItmPass` computes what `VleForItm` computes from tower outputs (`VleModel.fuse` then the head),
with the text's layer-0 self-attention run once for all candidates, every candidate in one batch,
and in the last layer only the two [CLS] rows the poolers read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pixsearch.models.image_state import ImageState, attend_state, merge_heads, split_heads
from pixsearch.models.vle.modeling import IMAGE_TOKEN_TYPE, TEXT_TOKEN_TYPE, mask_bias


class VleImageState(ImageState):
    """tensors: layer 0's text cross-attention keys and values of the image ([heads, T, d] each), the image
    layer's self-attention output [T, H] and its cross-attention queries [heads, T, d]."""


def _attend(block: nn.Module, hidden: torch.Tensor, context: torch.Tensor, bias, rows: slice) -> torch.Tensor:
    """An `_Attention` block whose output is computed for the query `rows` of `hidden` only."""
    part = hidden[:, rows]
    qkv = block.self
    batch = max(part.shape[0], context.shape[0])
    query = split_heads(qkv.query(part), qkv.heads).expand(batch, -1, -1, -1)
    key = split_heads(qkv.key(context), qkv.heads).expand(batch, -1, -1, -1)
    value = split_heads(qkv.value(context), qkv.heads).expand(batch, -1, -1, -1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
    return block.output(merge_heads(out), part)


def _layer(layer: nn.Module, hidden, other, own_bias, other_bias, rows: slice) -> torch.Tensor:
    hidden = _attend(layer.attention, hidden, hidden, own_bias, rows)
    hidden = _attend(layer.crossattention, hidden, other, other_bias, slice(None))
    return layer.output(layer.intermediate(hidden), hidden)


class VleItmPass:
    """ITM logits of one text against many images on a loaded VleForItm."""

    def __init__(self, model: nn.Module) -> None:
        self.vle = model.vle
        self.head = model.itm_score

    def states(self, features: torch.Tensor, own: bool = True) -> list[VleImageState]:
        """States of vision-tower outputs [m, T, vision width]; with `own` each owns its memory (to be
        cached), else they are views of one batch (scored and dropped)."""
        vle = self.vle
        image = vle.image_projection_layer(features) + vle.token_type_embeddings.weight[IMAGE_TOKEN_TYPE]
        text_cross = vle.cross_modal_text_layers[0].crossattention.self
        image_layer = vle.cross_modal_image_layers[0]
        attended = _attend(image_layer.attention, image, image, None, slice(None))
        parts = (
            split_heads(text_cross.key(image), text_cross.heads),
            split_heads(text_cross.value(image), text_cross.heads),
            attended,
            split_heads(image_layer.crossattention.self.query(attended), image_layer.crossattention.self.heads),
        )
        return [VleImageState(tuple(p[i].clone() if own else p[i] for p in parts)) for i in range(features.shape[0])]

    def logits(self, text_features: torch.Tensor, attention: torch.Tensor, items: Sequence[VleImageState]):
        """ITM logits [k, 2] of one text (DeBERTa output [1, L, text width], mask [1, L]) against k states."""
        vle = self.vle
        text = vle.text_projection_layer(text_features) + vle.token_type_embeddings.weight[TEXT_TOKEN_TYPE]
        text_bias = mask_bias(attention, text.dtype)
        layers = list(zip(vle.cross_modal_text_layers, vle.cross_modal_image_layers, strict=True))
        text, image = self._first_layer(text, text_bias, items, cls_only=len(layers) == 1)
        for n, (text_layer, image_layer) in enumerate(layers[1:], start=1):
            rows = slice(0, 1) if n == len(layers) - 1 else slice(None)
            text, image = (
                _layer(text_layer, text, image, text_bias, None, rows),
                _layer(image_layer, image, text, None, text_bias, rows),
            )
        pooled = torch.cat([vle.cross_modal_text_pooler(text), vle.cross_modal_image_pooler(image)], dim=-1)
        return self.head(pooled)

    def _first_layer(self, text, text_bias, items, cls_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        vle = self.vle
        text_layer, image_layer = vle.cross_modal_text_layers[0], vle.cross_modal_image_layers[0]
        rows = slice(0, 1) if cls_only else slice(None)
        # text side: self-attention shared by every candidate, cross-attention to each image's keys/values
        shared = _attend(text_layer.attention, text, text, text_bias, rows)
        qkv = text_layer.crossattention.self
        query = split_heads(qkv.query(shared), qkv.heads)
        context = torch.cat([attend_state(query, *item.tensors[:2]) for item in items])
        hidden = text_layer.crossattention.output(merge_heads(context), shared)
        new_text = text_layer.output(text_layer.intermediate(hidden), hidden)
        # image side: each image's cached queries against the text's keys/values
        qkv = image_layer.crossattention.self
        key, value = split_heads(qkv.key(text), qkv.heads), split_heads(qkv.value(text), qkv.heads)
        attended = torch.stack([item.tensors[2][rows].to(text.dtype) for item in items])
        queries = torch.stack([item.tensors[3][:, rows].to(text.dtype) for item in items])
        count = len(items)
        out = F.scaled_dot_product_attention(
            queries, key.expand(count, -1, -1, -1), value.expand(count, -1, -1, -1), attn_mask=text_bias
        )
        hidden = image_layer.crossattention.output(merge_heads(out), attended)
        return new_text, image_layer.output(image_layer.intermediate(hidden), hidden)
