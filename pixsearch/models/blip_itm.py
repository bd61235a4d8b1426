"""BLIP's image-text matching forward, shaped for reranking: all candidates in one pass, image keys and
values computed once per image.

It runs the very modules of transformers' `BlipForImageTextRetrieval` text encoder (so weights, and
int8-swapped linear layers, are used as loaded) and computes what its forward computes, with three
differences in how, none in what:
- each cross-attention layer's image keys/values can come from an `BlipKeyValues` state instead of
  being projected again (they depend on the image alone);
- with one query against k images the text runs once up to the first cross-attention and is
  broadcast, and the k candidates then run as one batch;
- the last layer computes only the [CLS] row (the ITM head reads nothing else).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pixsearch.models.image_state import ImageState, attend_state, merge_heads, split_heads

Item = Any  # a vision feature tensor [tokens, width] or a BlipKeyValues


class BlipKeyValues(ImageState):
    """One image's cross-attention keys and values for every text layer: tensors[0] is
    [layers, 2, heads, tokens, head_size] (2: keys, values)."""


class BlipItmPass:
    """The ITM logits of texts against images, on a loaded BlipForImageTextRetrieval.

    Args:
        model: the loaded model (eval mode).
    """

    def __init__(self, model: nn.Module) -> None:
        text = model.text_encoder
        self.embeddings = text.embeddings
        self.layers = list(text.encoder.layer)
        self.head = model.itm_head
        first = self.layers[0].crossattention.self
        self.heads = first.num_heads

    def states(self, features: torch.Tensor) -> list[BlipKeyValues]:
        """Keys and values of images [m, tokens, width] for every layer, one state per image."""
        out = [self._new_state(features) for _ in range(features.shape[0])]
        for n, layer in enumerate(self.layers):
            key, value = self._key_values(layer.crossattention.self, features)
            for state, k, v in zip(out, key, value, strict=True):
                state[n, 0].copy_(k)
                state[n, 1].copy_(v)
        return [BlipKeyValues((state,)) for state in out]

    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, items: Sequence[Item], keep: bool = False
    ) -> tuple[torch.Tensor, list[BlipKeyValues | None]]:
        """ITM logits [batch, 2] of row-aligned texts and images, and each image's state.

        Args:
            input_ids, attention_mask: [rows, L]; rows is 1 (one query against every image), the number
                of images, or anything when there is one image (several texts against it).
            items: per image a vision feature [tokens, width] (model dtype) or a BlipKeyValues.
            keep: return the states of the images given as features (else None for them).

        Returns:
            logits [max(rows, len(items)), 2] and, per item, its state or None.
        """
        rows, count = input_ids.shape[0], len(items)
        if not (rows == 1 or count == 1 or rows == count):
            raise ValueError(f"BLIP ITM: {rows} texts and {count} images are neither paired nor one-to-many")
        fresh = [i for i, item in enumerate(items) if not isinstance(item, BlipKeyValues)]
        image = torch.stack([items[i] for i in fresh]) if fresh else None
        new = [self._new_state(image) for _ in fresh] if keep and image is not None else []
        mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()
        hidden = self.embeddings(input_ids=input_ids)
        last = len(self.layers) - 1
        for n, layer in enumerate(self.layers):
            hidden = self._self_attention(layer.attention, hidden, mask, cls_only=n == last)
            hidden = self._cross_attention(layer.crossattention, n, hidden, items, fresh, image, new)
            hidden = layer.output(layer.intermediate(hidden), hidden)
        states: list[BlipKeyValues | None] = [item if isinstance(item, BlipKeyValues) else None for item in items]
        for i, state in zip(fresh, new, strict=False):
            states[i] = BlipKeyValues((state,))
        return self.head(hidden[:, 0]), states

    def _new_state(self, image: torch.Tensor) -> torch.Tensor:
        """Room for one of `image`'s states."""
        width = self.layers[0].crossattention.self.query.out_features
        shape = (len(self.layers), 2, self.heads, image.shape[1], width // self.heads)
        return torch.empty(shape, dtype=image.dtype)

    def _key_values(self, attention: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_heads(attention.key(image), self.heads), split_heads(attention.value(image), self.heads)

    def _self_attention(
        self, block: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None, cls_only: bool
    ) -> torch.Tensor:
        attention = block.self
        rows = hidden[:, :1] if cls_only else hidden
        query = split_heads(attention.query(rows), self.heads)
        key, value = self._key_values(attention, hidden)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return block.output(merge_heads(context), rows)

    def _cross_attention(
        self,
        block: nn.Module,
        n: int,
        hidden: torch.Tensor,
        items: Sequence[Item],
        fresh: list[int],
        image: torch.Tensor | None,
        new: list[torch.Tensor],
    ) -> torch.Tensor:
        attention = block.self
        query = split_heads(attention.query(hidden), self.heads)  # [rows, heads, L, d]
        batch = max(query.shape[0], len(items))
        query = query.expand(batch, -1, -1, -1)
        context = torch.empty_like(query)
        if image is not None:
            key, value = self._key_values(attention, image)
            for state, k, v in zip(new, key, value, strict=False):
                state[n, 0].copy_(k)
                state[n, 1].copy_(v)
            if len(items) == 1:  # one image, several texts: its keys serve every row
                key, value = key.expand(batch, -1, -1, -1), value.expand(batch, -1, -1, -1)
                context = F.scaled_dot_product_attention(query, key, value)
            else:
                context[fresh] = F.scaled_dot_product_attention(query[fresh], key, value)
        for i, item in enumerate(items):
            if isinstance(item, BlipKeyValues):
                rows = slice(None) if len(items) == 1 else slice(i, i + 1)
                kv = item.tensors[0][n]
                context[rows] = attend_state(query[rows], kv[0], kv[1])
        # the residual broadcasts a text shared by every image over the batch
        return block.output(merge_heads(context), hidden)
