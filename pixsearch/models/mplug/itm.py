"""mPLUG's ITM over many candidates: the image's query-independent projections kept per image.

`FusionEncoder.forward` computes, for each fusion layer, either text->image cross-attention or one
self-attention over [image; text] (see fusion.py). Until the first such joint layer the image
stream is the image embedding itself, so the keys/values every cross layer takes from it, and the
queries/keys/values of its rows in that joint layer, depend on the image alone: `MplugImageState`
holds them. After the joint layer the image has heard the text and everything is per query.

`MplugItmPass` computes what `MplugModel.itm_logits` computes (the same modules, the same masks),
with the text run once for all candidates up to the first cross-attention, every candidate in one
batch, attention through SDPA, and in the last layer only the text [CLS] row the ITM head reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pixsearch.models.image_state import ImageState, attend_state, merge_heads, split_heads
from pixsearch.models.mplug.bert import memory_mask, padding_mask


class MplugImageState(ImageState):
    """tensors: the image embedding [T, H] (when a joint layer follows), then per fusion layer up to the
    first joint one its image keys and values ([heads, T, d] each; for the joint layer queries, keys, values)."""


class MplugItmPass:
    """ITM logits of one text against many images on a loaded MplugModel (fusion and itm_head built)."""

    def __init__(self, model: nn.Module) -> None:
        fusion = model.fusion_encoder
        self.layers = list(fusion.encoder.layer.values())
        self.joint = [n != 0 and n % fusion.stride == 0 for n in range(len(self.layers))]
        first_joint = self.joint.index(True) if any(self.joint) else None
        self.cached = len(self.layers) if first_joint is None else first_joint + 1  # layers read from a state
        self.keeps_image = first_joint is not None and first_joint < len(self.layers) - 1
        self.heads = self.layers[0].attention.self.heads
        self.head = model.itm_head

    def states(self, image: torch.Tensor, own: bool = True) -> list[MplugImageState]:
        """The states of images [m, T, H]; with `own` each owns its memory (to be cached), else they are
        views of one batch (scored and dropped)."""
        parts: list[torch.Tensor] = [image] if self.keeps_image else []
        for n in range(self.cached):
            layer = self.layers[n]
            block = layer.attention.self if self.joint[n] else layer.crossattention.self
            projections = (block.query, block.key, block.value) if self.joint[n] else (block.key, block.value)
            parts.extend(split_heads(projection(image), self.heads) for projection in projections)
        return [MplugImageState(tuple(p[i].clone() if own else p[i] for p in parts)) for i in range(image.shape[0])]

    def logits(self, text: torch.Tensor, attention: torch.Tensor, items: Sequence[Any]) -> torch.Tensor:
        """ITM logits [k, 2] of one text (its encoder output [1, L, H] and mask [1, L]) against k states."""
        text_mask = padding_mask(attention, text.dtype)
        count, last = len(items), len(self.layers) - 1
        hidden = text
        image: torch.Tensor | None = None
        for n, layer in enumerate(self.layers):
            cls_only = n == last
            if n < self.cached and not self.joint[n]:
                hidden = self._cross_from_states(layer, n, hidden, text_mask, items, cls_only)
            elif n < self.cached:
                image, hidden = self._joint_from_states(layer, n, hidden, text_mask, items, cls_only)
            else:
                assert image is not None
                hidden, image = self._after_joint(layer, n, hidden, text_mask, image, cls_only)
            hidden = hidden.expand(count, -1, -1) if hidden.shape[0] != count else hidden
        return self.head(hidden[:, 0])

    def _self_attention(self, block: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, rows: slice) -> torch.Tensor:
        """BertAttention over `hidden`, output only for the query `rows`."""
        part = hidden[:, rows]
        attention = block.self
        query = split_heads(attention.query(part), self.heads)
        key, value = split_heads(attention.key(hidden), self.heads), split_heads(attention.value(hidden), self.heads)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return block.output(merge_heads(context), part)

    def _offset(self, n: int) -> int:
        """Where layer n's tensors start in a state."""
        start = 1 if self.keeps_image else 0
        return start + sum(3 if self.joint[i] else 2 for i in range(n))

    def _cross_from_states(self, layer, n, hidden, text_mask, items, cls_only) -> torch.Tensor:
        hidden = self._self_attention(layer.attention, hidden, text_mask, _rows(cls_only))
        query = split_heads(layer.crossattention.self.query(hidden), self.heads)
        query = query.expand(len(items), -1, -1, -1)
        start = self._offset(n)
        context = torch.cat(
            [attend_state(query[i : i + 1], *item.tensors[start : start + 2]) for i, item in enumerate(items)]
        )
        hidden = layer.crossattention.output(merge_heads(context), hidden)
        return layer.feed_forward(hidden)

    def _joint_from_states(self, layer, n, hidden, text_mask, items, cls_only):
        attention = layer.attention
        text = hidden.expand(len(items), -1, -1) if hidden.shape[0] != len(items) else hidden
        query_text = split_heads(attention.self.query(text[:, :1] if cls_only else text), self.heads)
        key_text, value_text = (
            split_heads(attention.self.key(text), self.heads),
            split_heads(attention.self.value(text), self.heads),
        )
        start = self._offset(n)
        images, contexts = [], []
        for i, item in enumerate(items):
            query_image, key_image, value_image = (t.to(text.dtype) for t in item.tensors[start : start + 3])
            key = torch.cat([key_image[None], key_text[i : i + 1]], dim=2)
            value = torch.cat([value_image[None], value_text[i : i + 1]], dim=2)
            mask = F.pad(text_mask[:1], (key_image.shape[1], 0))  # image tokens are never masked
            query = query_text[i : i + 1] if cls_only else torch.cat([query_image[None], query_text[i : i + 1]], dim=2)
            contexts.append(F.scaled_dot_product_attention(query, key, value, attn_mask=mask))
            if not cls_only:
                images.append(item.tensors[0].to(text.dtype))
        if cls_only:
            rows = text[:, :1]
            return None, layer.feed_forward(attention.output(merge_heads(torch.cat(contexts)), rows))
        both = torch.cat([torch.stack(images), text], dim=1)
        both = layer.feed_forward(attention.output(merge_heads(torch.cat(contexts)), both))
        image = torch.stack(images)
        tokens = image.shape[1]
        return image + both[:, :tokens], both[:, tokens:]

    def _after_joint(self, layer, n, hidden, text_mask, image, cls_only):
        image_mask = memory_mask(torch.ones(image.shape[:2], device=image.device), hidden.dtype)
        if not self.joint[n]:
            hidden = self._self_attention(layer.attention, hidden, text_mask, _rows(cls_only))
            block = layer.crossattention.self
            query = split_heads(block.query(hidden), self.heads)
            key, value = split_heads(block.key(image), self.heads), split_heads(block.value(image), self.heads)
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=image_mask)
            return layer.feed_forward(layer.crossattention.output(merge_heads(context), hidden)), image
        mask = torch.cat([image_mask, text_mask.expand(image.shape[0], -1, -1, -1)], dim=3)
        tokens = image.shape[1]
        rows = slice(tokens, tokens + 1) if cls_only else slice(None)
        both = layer.feed_forward(self._self_attention(layer.attention, torch.cat([image, hidden], dim=1), mask, rows))
        if cls_only:
            return both, image
        return both[:, tokens:], image + both[:, :tokens]


def _rows(cls_only: bool) -> slice:
    return slice(0, 1) if cls_only else slice(None)
