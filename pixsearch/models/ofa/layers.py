"""OFA transformer blocks: attention with an additive position bias and per-head scales, and the
encoder and decoder layers with optional Normformer norms. Names match ModelScope's modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from pixsearch.models.ofa.config import OfaConfig


class OfaAttention(nn.Module):
    """Multi-head attention whose scores get an additive bias (positions and masks together).

    Queries are scaled by (head_dim * scale_factor)^-0.5, and each head's output is multiplied by
    a learned `c_attn` before the output projection.
    """

    def __init__(self, embed_dim: int, num_heads: int, scale_factor: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = float(self.head_dim * scale_factor) ** -0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.c_attn = nn.Parameter(torch.ones(num_heads))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, keys_values: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, D] attends to keys_values [B, S, D]; bias broadcasts to [B, H, T, S]."""
        batch, length, dim = hidden.shape
        query = self._heads(self.q_proj(hidden) * self.scaling)
        key = self._heads(self.k_proj(keys_values))
        value = self._heads(self.v_proj(keys_values))
        scores = torch.matmul(query, key.transpose(-1, -2)) + bias
        weights = F.softmax(scores, dim=-1)
        out = torch.matmul(weights, value) * self.c_attn[:, None, None]
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class _Block(nn.Module):
    """What encoder and decoder layers share: the FFN and the residual wiring."""

    def __init__(self, config: OfaConfig, ffn_dim: int, normalize_before: bool) -> None:
        super().__init__()
        dim = config.d_model
        self.normalize_before = normalize_before
        self.activation_fn = ACT2FN[config.activation_function]
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.ffn_layer_norm = nn.LayerNorm(ffn_dim) if config.normformer else None
        self.final_layer_norm = nn.LayerNorm(dim)
        if config.use_gamma_feature:
            self.weight_ffn = nn.Parameter(torch.full((dim,), float(config.gamma)))

    def _residual(
        self,
        x: torch.Tensor,
        pre_norm: nn.LayerNorm,
        sublayer,
        mid_norm: nn.LayerNorm | None,
        gamma: torch.Tensor | None,
    ) -> torch.Tensor:
        # pre-LN: norm -> sublayer -> (Normformer mid norm) -> (gamma) -> + residual; post-LN norms after the sum
        h = pre_norm(x) if self.normalize_before else x
        h = sublayer(h)
        if mid_norm is not None:
            h = mid_norm(h)
        if gamma is not None:
            h = gamma * h
        x = x + h
        return x if self.normalize_before else pre_norm(x)

    def _ffn(self, h: torch.Tensor) -> torch.Tensor:
        h = self.activation_fn(self.fc1(h))
        if self.ffn_layer_norm is not None:
            h = self.ffn_layer_norm(h)
        return self.fc2(h)

    def _ffn_residual(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(x, self.final_layer_norm, self._ffn, None, getattr(self, "weight_ffn", None))


class OfaEncoderLayer(_Block):
    def __init__(self, config: OfaConfig) -> None:
        super().__init__(config, config.encoder_ffn_dim, config.encoder_normalize_before)
        dim = config.d_model
        self.self_attn = OfaAttention(dim, config.encoder_attention_heads, config.attn_scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn_mid_layer_norm = nn.LayerNorm(dim) if config.normformer else None
        if config.use_gamma_feature:
            self.weight_self_attn = nn.Parameter(torch.full((dim,), float(config.gamma)))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, S, D]; bias [B, H, S, S] = position bias + padding mask."""
        x = self._residual(
            x,
            self.self_attn_layer_norm,
            lambda h: self.self_attn(h, h, bias),
            self.self_attn_mid_layer_norm,
            getattr(self, "weight_self_attn", None),
        )
        return self._ffn_residual(x)


class OfaDecoderLayer(_Block):
    def __init__(self, config: OfaConfig) -> None:
        super().__init__(config, config.decoder_ffn_dim, config.decoder_normalize_before)
        dim, heads = config.d_model, config.decoder_attention_heads
        self.self_attn = OfaAttention(dim, heads, config.attn_scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn_mid_layer_norm = nn.LayerNorm(dim) if config.normformer else None
        self.cross_attn = OfaAttention(dim, heads, config.attn_scale_factor)
        self.cross_attn_layer_norm = nn.LayerNorm(dim)
        self.cross_attn_mid_layer_norm = nn.LayerNorm(dim) if config.normformer else None
        if config.use_gamma_feature:
            self.weight_self_attn = nn.Parameter(torch.full((dim,), float(config.gamma)))
            self.weight_cross_attn = nn.Parameter(torch.full((dim,), float(config.gamma)))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, self_bias: torch.Tensor, cross_bias: torch.Tensor
    ) -> torch.Tensor:
        """x [B, T, D], memory [B, S, D]; self_bias [., H, T, T] and cross_bias [B, H, T, S] include the masks."""
        x = self._residual(
            x,
            self.self_attn_layer_norm,
            lambda h: self.self_attn(h, h, self_bias),
            self.self_attn_mid_layer_norm,
            getattr(self, "weight_self_attn", None),
        )
        x = self._residual(
            x,
            self.cross_attn_layer_norm,
            lambda h: self.cross_attn(h, memory, cross_bias),
            self.cross_attn_mid_layer_norm,
            getattr(self, "weight_cross_attn", None),
        )
        return self._ffn_residual(x)
