"""The OFA encoder-decoder (ResNet variant), state-dict compatible with ModelScope's `OFAModel`.

Encoder: ResNet patches first, then text tokens; each attention layer gets an absolute-position
bias (from projected, layer-normed position embeddings) plus relative-position buckets for the
text block and for the image block. Decoder: the same biases over target positions, cross
attention whose bias pairs target and source positions, and the output projection tied to the
shared token embedding. Only what visual entailment runs is implemented: no image-code targets,
no second image, no patch sampling, no incremental cache (answers are a token or two long).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixsearch.models.ofa import positions
from pixsearch.models.ofa.config import RESNET_LAYERS, OfaConfig
from pixsearch.models.ofa.layers import OfaDecoderLayer, OfaEncoderLayer
from pixsearch.models.ofa.resnet import ResNet

RESNET_CHANNELS = 1024

# Buffers rebuilt from the config; checkpoints may or may not hold them (see loading.py).
REBUILT_BUFFERS = (
    "encoder.token_rp_bucket",
    "encoder.image_rp_bucket",
    "decoder.token_rp_bucket",
    "decoder.image_rp_bucket",
    "decoder.image_position_idx",
)


@dataclass
class OfaEncoderOutput:
    """last_hidden_state [B, S, D] (S = image patches + text tokens); padding_mask [B, S] (True = pad);
    position_embedding [B, S, D], the layer-normed positions the decoder's cross bias reads."""

    last_hidden_state: torch.Tensor
    padding_mask: torch.Tensor
    position_embedding: torch.Tensor


def _position_bias(q_linear: nn.Linear, k_linear: nn.Linear, query_pos, key_pos, heads: int, scaling: float):
    """[B, T, D] x [B, S, D] position embeddings -> [B, H, T, S] attention bias."""
    batch, length, _ = query_pos.shape
    q = q_linear(query_pos).view(batch, length, heads, -1).transpose(1, 2) * scaling
    k = k_linear(key_pos).view(batch, key_pos.shape[1], heads, -1).transpose(1, 2)
    return torch.matmul(q, k.transpose(2, 3))


def _padding_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S] bool (True = pad) -> [B, 1, 1, S] additive mask, dtype-min where padded."""
    bias = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return bias.masked_fill(padding_mask, torch.finfo(dtype).min)[:, None, None, :]


class _RelativeTables(nn.Module):
    """Per-layer (or shared) relative-position tables and the bucket buffers that index them."""

    def __init__(self, config: OfaConfig, heads: int, layers: int) -> None:
        super().__init__()
        tables = 1 if config.share_attn_bias else layers
        self.share_attn_bias = config.share_attn_bias
        self.image_bucket_size = config.image_bucket_size
        image_rows = positions.image_bucket_count(config.image_bucket_size)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * config.token_bucket_size - 1, heads) for _ in range(tables)
        )
        self.image_rel_pos_table_list = nn.ModuleList(nn.Embedding(image_rows, heads) for _ in range(tables))
        buckets = positions.token_bucket_table(config.token_bucket_size)
        self.register_buffer("token_rp_bucket", buckets, persistent=False)
        self.register_buffer(
            "image_rp_bucket", positions.image_bucket_table(config.image_bucket_size), persistent=False
        )

    def token_bias(self, length: int, layer: int) -> torch.Tensor:
        """[H, length, length] relative bias between text positions."""
        table = self.token_rel_pos_table_list[0 if self.share_attn_bias else layer]
        return F.embedding(self.token_rp_bucket[:length, :length], table.weight).permute(2, 0, 1)

    def image_bias(self, position_ids: torch.Tensor, layer: int) -> torch.Tensor:
        """[H, n, n] relative bias between image patches with the given position ids [n]."""
        table = self.image_rel_pos_table_list[0 if self.share_attn_bias else layer]
        buckets = self.image_rp_bucket[position_ids][:, position_ids]
        return F.embedding(buckets, table.weight).permute(2, 0, 1)


class OfaEncoder(_RelativeTables):
    """ResNet patches and text tokens through pre-LN (Normformer) layers with position biases."""

    def __init__(self, config: OfaConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__(config, config.encoder_attention_heads, config.encoder_layers)
        dim = config.d_model
        self.config = config
        self.num_heads = config.encoder_attention_heads
        self.embed_scale = dim**0.5 if config.scale_embedding else 1.0
        self.pos_scaling = float(dim / self.num_heads * config.attn_scale_factor) ** -0.5
        self.embed_tokens = embed_tokens
        self.type_embedding = nn.Embedding(2, dim) if config.add_type_embedding else None
        self.embed_images = ResNet(RESNET_LAYERS[config.resnet_type])
        self.image_proj = nn.Linear(RESNET_CHANNELS, dim)
        self.layernorm_embedding = nn.LayerNorm(dim) if config.layernorm_embedding else None
        self.patch_layernorm_embedding = nn.LayerNorm(dim) if config.patch_layernorm_embedding else None
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, dim)
        self.embed_image_positions = nn.Embedding(config.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_q_linear = nn.Linear(dim, dim)
        self.pos_k_linear = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(OfaEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim) if config.encoder_normalize_before else None

    def _image_positions(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch position ids [n] and their raw embeddings [n, D] (interpolated from the pre-training
        grid when `interpolate_position` is set and the grid is larger)."""
        ids = positions.image_position_ids(height, width, self.image_bucket_size).to(device)
        orig = self.config.orig_patch_image_size // 16
        if not (self.config.interpolate_position and height * width > orig * orig):
            return ids, self.embed_image_positions(ids)
        old_ids = positions.image_position_ids(orig, orig, self.image_bucket_size).to(device)
        old = self.embed_image_positions(old_ids).reshape(1, orig, orig, -1).permute(0, 3, 1, 2)
        new = F.interpolate(old, size=(height, width), mode="bilinear")
        return ids, new.permute(0, 2, 3, 1).reshape(height * width, -1)

    def _embed(self, tokens: torch.Tensor, type_id: int, raw_pos: torch.Tensor, norm: nn.LayerNorm | None):
        x = self.embed_scale * tokens
        if self.config.entangle_position_embedding:
            x = x + raw_pos
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[type_id]
        return norm(x) if norm is not None else x

    def forward(
        self, input_ids: torch.Tensor, patch_images: torch.Tensor, patch_masks: torch.Tensor | None = None
    ) -> OfaEncoderOutput:
        """input_ids [B, L] (right-padded with pad_token_id); patch_images [B, 3, H, W];
        patch_masks [B] bool (False hides that row's image)."""
        batch, length = input_ids.shape
        features = self.embed_images(patch_images)
        height, width = features.shape[-2:]
        n_patches = height * width
        image_ids, image_pos = self._image_positions(height, width, input_ids.device)
        text_pos = self.embed_positions(torch.arange(length, device=input_ids.device))

        image_x = self.image_proj(features.flatten(2).transpose(1, 2))
        image_x = self._embed(image_x, 1, image_pos, self.patch_layernorm_embedding)
        text_x = self._embed(self.embed_tokens(input_ids), 0, text_pos, self.layernorm_embedding)
        x = torch.cat([image_x, text_x], dim=1)

        image_pad = torch.zeros(batch, n_patches, dtype=torch.bool, device=input_ids.device)
        if patch_masks is not None:
            image_pad = image_pad | ~patch_masks[:, None]
        padding_mask = torch.cat([image_pad, input_ids.eq(self.config.pad_token_id)], dim=1)
        has_pads = bool(padding_mask.any())
        if has_pads:
            x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))

        pos = torch.cat([self.image_pos_ln(image_pos), self.pos_ln(text_pos)], dim=0)
        pos = pos.unsqueeze(0).expand(batch, -1, -1).to(x.dtype)
        abs_bias = _position_bias(self.pos_q_linear, self.pos_k_linear, pos, pos, self.num_heads, self.pos_scaling)
        if has_pads:
            abs_bias = abs_bias + _padding_bias(padding_mask, x.dtype)
        for index, layer in enumerate(self.layers):
            bias = abs_bias.clone()
            bias[:, :, -length:, -length:] += self.token_bias(length, index)
            bias[:, :, :n_patches, :n_patches] += self.image_bias(image_ids, index)
            x = layer(x, bias)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return OfaEncoderOutput(x, padding_mask, pos)


class OfaDecoder(_RelativeTables):
    """Causal decoder over target tokens, cross-attending to the encoder; returns vocabulary logits."""

    def __init__(self, config: OfaConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__(config, config.decoder_attention_heads, config.decoder_layers)
        dim = config.d_model
        self.config = config
        self.num_heads = config.decoder_attention_heads
        self.embed_scale = dim**0.5 if config.scale_embedding else 1.0
        self.pos_scaling = float(dim / self.num_heads * config.attn_scale_factor) ** -0.5
        self.embed_tokens = embed_tokens
        self.layers = nn.ModuleList(OfaDecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm_embedding = nn.LayerNorm(dim) if config.layernorm_embedding else None
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, dim)
        # The image-position modules below serve image-code generation only; they are kept so that
        # checkpoints load without unexpected keys.
        self.embed_image_positions = nn.Embedding(config.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.self_pos_q_linear = nn.Linear(dim, dim)
        self.self_pos_k_linear = nn.Linear(dim, dim)
        self.cross_pos_q_linear = nn.Linear(dim, dim)
        self.cross_pos_k_linear = nn.Linear(dim, dim)
        self.code_layernorm_embedding = nn.LayerNorm(dim) if config.code_layernorm_embedding else None
        self.layer_norm = nn.LayerNorm(dim) if config.decoder_normalize_before else None
        self.output_projection = nn.Linear(dim, config.vocab_size, bias=False)
        if config.share_decoder_input_output_embed:
            self.output_projection.weight = embed_tokens.weight
        table = positions.decoder_image_position_table(config.code_image_size, config.image_bucket_size)
        self.register_buffer("image_position_idx", table, persistent=False)

    def forward(
        self, input_ids: torch.Tensor, encoder_out: OfaEncoderOutput, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, vocab_size] (causal; `padding_mask` [B, T] hides target pads)."""
        batch, length = input_ids.shape
        memory = encoder_out.last_hidden_state
        raw_pos = self.embed_positions(torch.arange(length, device=input_ids.device))
        tgt_pos = self.pos_ln(raw_pos).unsqueeze(0).expand(batch, -1, -1).to(memory.dtype)
        self_bias = _position_bias(
            self.self_pos_q_linear, self.self_pos_k_linear, tgt_pos, tgt_pos, self.num_heads, self.pos_scaling
        )
        cross_bias = _position_bias(
            self.cross_pos_q_linear,
            self.cross_pos_k_linear,
            tgt_pos,
            encoder_out.position_embedding,
            self.num_heads,
            self.pos_scaling,
        )
        cross_bias = cross_bias + _padding_bias(encoder_out.padding_mask, memory.dtype)
        causal = torch.full((length, length), float("-inf"), dtype=memory.dtype, device=memory.device).triu(1)
        self_bias = self_bias + causal
        if padding_mask is not None and bool(padding_mask.any()):
            self_bias = self_bias + _padding_bias(padding_mask, memory.dtype)

        x = self.embed_scale * self.embed_tokens(input_ids)
        if self.config.entangle_position_embedding and not self.config.disable_entangle:
            x = x + raw_pos
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        for index, layer in enumerate(self.layers):
            x = layer(x, memory, self_bias + self.token_bias(length, index), cross_bias)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_projection(x)


class OfaModel(nn.Module):
    """Encoder and decoder sharing one token embedding (ModelScope's `OFAModel`, inference only)."""

    def __init__(self, config: OfaConfig) -> None:
        super().__init__()
        self.config = config
        shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = OfaEncoder(config, shared)
        self.decoder = OfaDecoder(config, shared)
        # Present in some checkpoints but unused at inference; kept so they load by name.
        if not config.exclude_mlp:
            self.mlp_head = nn.Linear(config.d_model, config.mlp_dim)
        if config.temperature_init_value:
            self.temp = nn.Parameter(torch.full((), float(config.temperature_init_value)))
