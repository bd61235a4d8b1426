"""The VLE backbone: a CLIP vision tower, a DeBERTa-v2 text tower and METER-style co-attention fusion.

Parameter names follow the original iflytek/VLE `VLEModel`, so its checkpoints load as they are:
`vision_model.vision_model.*`, `text_model.{embeddings,encoder}.*`, `{text,image}_projection_layer`,
`token_type_embeddings`, `cross_modal_{text,image}_layers.N.*` and `cross_modal_{text,image}_pooler.dense`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, DebertaV2Config, DebertaV2Model
from transformers.activations import ACT2FN
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention

from pixsearch.models.vle.config import VleConfig

# token type ids the original adds to the fused streams (VCR box types 2.. are not used here)
TEXT_TOKEN_TYPE = 0
IMAGE_TOKEN_TYPE = 1


@dataclass
class VleModelOutput:
    """Fused outputs of the co-attention layers.

    pooler_output: [batch, 2 * hidden], the text pooler then the image pooler.
    text_embeds: [batch, text_len, hidden], fused text tokens.
    image_embeds: [batch, 1 + patches, hidden], fused image tokens (CLS first).
    """

    pooler_output: torch.Tensor
    text_embeds: torch.Tensor
    image_embeds: torch.Tensor


def mask_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, len] 1/0 mask -> additive [batch, 1, 1, len] bias, as transformers' extended masks are."""
    keep = mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


class _QueryKeyValue(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(hidden)), self._split(self.key(context)), self._split(self.value(context))
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.transpose(1, 2).flatten(2)


class _ResidualOutput(nn.Module):
    """dense -> add the residual -> LayerNorm (BERT's SelfOutput / Output)."""

    def __init__(self, in_width: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, config: VleConfig) -> None:
        super().__init__()
        self.self = _QueryKeyValue(config.hidden_size, config.num_attention_heads)
        self.output = _ResidualOutput(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, context_bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, context, context_bias), hidden)


class _Intermediate(nn.Module):
    def __init__(self, config: VleConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class CrossLayer(nn.Module):
    """Self-attention over one stream, cross-attention into the other, then the feed-forward block."""

    def __init__(self, config: VleConfig) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.crossattention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _ResidualOutput(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(
        self, hidden: torch.Tensor, other: torch.Tensor, own_bias: torch.Tensor, other_bias: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.attention(hidden, hidden, own_bias)
        hidden = self.crossattention(hidden, other, other_bias)
        return self.output(self.intermediate(hidden), hidden)


class Pooler(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class _PaddingQuietAttention(DisentangledSelfAttention):
    """DeBERTa attention whose padded query rows give a zero context.

    transformers 4 (which the original VLE ran on, and which wrote the published outputs) used
    XSoftmax: a fully masked row got probabilities 0, so a padding token's context was 0. transformers 5
    softmaxes that row to a uniform average over all tokens instead. Only the padding positions of
    the text stream differ, but they are outputs too, so the old behaviour is restored here.
    """

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = super().forward(hidden_states, attention_mask, *args, **kwargs)
        # attention_mask is [batch, 1, query, key]; a query row with no key left is padding
        query_live = attention_mask.bool().any(dim=-1).transpose(1, 2)  # [batch, query, 1]
        return context * query_live.to(context.dtype), probs


def _deberta(config: DebertaV2Config) -> DebertaV2Model:
    model = DebertaV2Model(config)
    for layer in model.encoder.layer:
        layer.attention.self = _PaddingQuietAttention(config)
    return model


class ClipTower(nn.Module):
    """Holds transformers' CLIPVisionModel one level down, where the original's state dict keeps it
    (`vision_model.vision_model.*`, the transformers-4 CLIPVisionModel layout)."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.vision_model = CLIPVisionModel(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """-> [batch, 1 + patches, vision_hidden] after post_layernorm, applied to every token as VLE does."""
        tower = self.vision_model
        hidden = tower(pixel_values=pixel_values).last_hidden_state
        return tower.post_layernorm(hidden)


class VleModel(nn.Module):
    """The VLE backbone (the original `VLEModel`)."""

    def __init__(self, config: VleConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_model = ClipTower(config.vision_config)
        self.text_model = _deberta(config.text_config)
        hidden = config.hidden_size
        self.text_projection_layer = nn.Linear(config.text_config.hidden_size, hidden)
        self.image_projection_layer = nn.Linear(config.vision_config.hidden_size, hidden)
        self.token_type_embeddings = nn.Embedding(config.num_token_types, hidden)
        self.cross_modal_image_layers = nn.ModuleList(CrossLayer(config) for _ in range(config.num_hidden_layers))
        self.cross_modal_text_layers = nn.ModuleList(CrossLayer(config) for _ in range(config.num_hidden_layers))
        self.cross_modal_image_pooler = Pooler(hidden)
        self.cross_modal_text_pooler = Pooler(hidden)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [batch, 3, H, W] -> the vision tower output [batch, 1 + patches, vision_hidden]."""
        dtype = self.image_projection_layer.weight.dtype
        return self.vision_model(pixel_values.to(dtype))

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [batch, len] -> DeBERTa's last hidden state [batch, len, text_hidden]."""
        out = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
        )
        return out.last_hidden_state

    def fuse(
        self, text_features: torch.Tensor, attention_mask: torch.Tensor, image_features: torch.Tensor
    ) -> VleModelOutput:
        """Run the co-attention layers over already computed tower outputs.

        Args:
            text_features: [batch, len, text_hidden] from `get_text_features`.
            attention_mask: [batch, len] 1 for real tokens, 0 for padding.
            image_features: [batch, 1 + patches, vision_hidden] from `get_image_features`.

        Returns:
            The fused streams and the concatenated poolers.
        """
        dtype = self.text_projection_layer.weight.dtype
        text = self.text_projection_layer(text_features.to(dtype))
        image = self.image_projection_layer(image_features.to(dtype))
        types = self.token_type_embeddings.weight
        text = text + types[TEXT_TOKEN_TYPE]
        image = image + types[IMAGE_TOKEN_TYPE]
        text_bias = mask_bias(attention_mask, dtype)
        image_bias = mask_bias(torch.ones(image.shape[:2], dtype=torch.long, device=image.device), dtype)
        for text_layer, image_layer in zip(self.cross_modal_text_layers, self.cross_modal_image_layers, strict=True):
            # both sides read the other's output of the previous layer, so update them together
            text, image = (
                text_layer(text, image, text_bias, image_bias),
                image_layer(image, text, image_bias, text_bias),
            )
        pooled = torch.cat([self.cross_modal_text_pooler(text), self.cross_modal_image_pooler(image)], dim=-1)
        return VleModelOutput(pooler_output=pooled, text_embeds=text, image_embeds=image)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> VleModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.get_text_features(input_ids, attention_mask, token_type_ids, position_ids)
        return self.fuse(text, attention_mask, self.get_image_features(pixel_values))
