"""BERT blocks as mPLUG uses them: the text encoder and the answer/caption decoder.

Module and parameter names follow ModelScope's `modeling_mplug.py`, so checkpoints load by name:
`text_encoder.{embeddings,encoder.layer.N}.*` and
`text_decoder.{bert.embeddings,bert.encoder.layer.N,cls.predictions}.*`.

Masks are additive, as in the original: padding and the causal mask use -10000 (BERT's
`get_extended_attention_mask`), masks over encoder states use the dtype's minimum
(`invert_attention_mask`). Dropout is left out: these modules only run in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pixsearch.errors import ConfigError
from pixsearch.models.mplug.config import BertSettings

KeyValue = tuple[torch.Tensor, torch.Tensor]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function a BERT `hidden_act` names ('gelu' is the exact erf GELU, as transformers' ACT2FN)."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"mPLUG: hidden_act {name!r} is not one of {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


def padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[n, L] ones/zeros -> additive [n, 1, 1, L] with -10000 where masked (BERT's self-attention mask)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * -10000.0


def memory_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[n, L] ones/zeros -> additive [n, 1, 1, L] with the dtype's minimum where masked (invert_attention_mask)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive [1, 1, L, L] mask that hides later positions (-10000), as BERT builds it for decoders."""
    allowed = torch.ones(length, length, device=device).tril().to(dtype)
    return ((1.0 - allowed) * -10000.0)[None, None]


def attend(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, head_size: int
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over [rows, heads, L, d].

    Keys and values may hold one row per group of query rows (beam search: one per item, the beams
    of an item consecutive); the matmul then broadcasts them instead of copying them per beam.
    """
    rows, groups = query.shape[0], keys.shape[0]
    if rows != groups:
        query = query.view(groups, rows // groups, *query.shape[1:])
        keys, values = keys.unsqueeze(1), values.unsqueeze(1)
        mask = mask.unsqueeze(1) if mask is not None else None
    scores = torch.matmul(query, keys.transpose(-1, -2)) / math.sqrt(head_size)
    if mask is not None:
        scores = scores + mask
    context = torch.matmul(torch.softmax(scores, dim=-1), values)
    return context.reshape(rows, *context.shape[-3:])


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        # rebuilt here, so checkpoints may have it or not
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None], persistent=False)

    def reset_after_materialise(self) -> None:
        """Rebuild the position ids after the module was moved off the meta device."""
        self.position_ids = torch.arange(self.position_embeddings.num_embeddings, device=self.position_ids.device)[None]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_ids.shape[1]:
            raise ValueError(f"mPLUG text of {length} tokens exceeds {self.position_ids.shape[1]} positions")
        token_types = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(self.position_ids[:, :length])
        return self.LayerNorm(embeddings)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertSettings, key_width: int) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ConfigError(
                f"mPLUG: hidden_size {cfg.hidden_size} is not a multiple of {cfg.num_attention_heads} heads"
            )
        self.heads = cfg.num_attention_heads
        self.head_size = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(key_width, cfg.hidden_size)
        self.value = nn.Linear(key_width, cfg.hidden_size)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_size).transpose(1, 2)

    def key_value(self, source: torch.Tensor) -> KeyValue:
        return self.split_heads(self.key(source)), self.split_heads(self.value(source))

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        source: torch.Tensor | None = None,
        kv: KeyValue | None = None,
    ) -> torch.Tensor:
        keys, values = kv if kv is not None else self.key_value(hidden if source is None else source)
        query = self.split_heads(self.query(hidden))
        context = attend(query, keys, values, mask, self.head_size)
        return context.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: BertSettings, in_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertSettings, key_width: int | None = None) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg, key_width or cfg.hidden_size)
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        source: torch.Tensor | None = None,
        kv: KeyValue | None = None,
    ) -> torch.Tensor:
        return self.output(self.self(hidden, mask, source, kv), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class BertLayer(nn.Module):
    """Self-attention, optional cross-attention to encoder states, feed-forward."""

    def __init__(self, cfg: BertSettings, cross: bool) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        if cross:
            self.crossattention = BertAttention(cfg, key_width=cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        memory_kv: KeyValue | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.attention(hidden, mask)
        if memory_kv is not None:
            hidden = self.crossattention(hidden, memory_mask, kv=memory_kv)
        return self.feed_forward(hidden)


class LayerStack(nn.Module):
    """Holds `layer` so the parameter names read `encoder.layer.N.*`."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class TextEncoder(nn.Module):
    """`text_encoder`: BERT without pooler. ids, mask [n, L] -> hidden [n, L, H]."""

    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = LayerStack([BertLayer(cfg, cross=False) for _ in range(cfg.text_encoder_layers)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids)
        mask = padding_mask(attention_mask, hidden.dtype)
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask)
        return hidden


class PredictionTransform(nn.Module):
    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class LmPredictions(nn.Module):
    """`cls.predictions`: transform, then the vocabulary projection whose bias is `bias` (stored twice)."""

    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.transform = PredictionTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.decoder.bias = self.bias  # one tensor under both checkpoint names, as in BERT

    def reset_after_materialise(self) -> None:
        """Tie the biases again: moving off the meta device makes new Parameter objects."""
        self.decoder.bias = self.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))


class LmHead(nn.Module):
    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.predictions = LmPredictions(cfg)


class DecoderBody(nn.Module):
    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = LayerStack([BertLayer(cfg, cross=True) for _ in range(cfg.text_decode_layers)])


class TextDecoder(nn.Module):
    """`text_decoder` (ModelScope's BertLMHeadModel for VQA, BertPrefixModel for captions; same weights).

    Causal self-attention over the prefix, cross-attention to `memory`. The memory's keys and values
    are computed once by `memory_kv` and reused at every step.
    """

    def __init__(self, cfg: BertSettings) -> None:
        super().__init__()
        self.bert = DecoderBody(cfg)
        self.cls = LmHead(cfg)

    def memory_kv(self, memory: torch.Tensor) -> list[KeyValue]:
        """Per layer, the cross-attention keys and values of memory [n, M, W] -> [n, heads, M, head]."""
        return [layer.crossattention.self.key_value(memory) for layer in self.bert.encoder.layer]

    def forward(
        self, input_ids: torch.Tensor, memory_kv: list[KeyValue], memory_mask_add: torch.Tensor
    ) -> torch.Tensor:
        """Logits [n, L, vocab] for prefixes input_ids [n, L].

        Args:
            input_ids: the prefixes, starting with [CLS].
            memory_kv: from `memory_kv`, one row per prefix row.
            memory_mask_add: additive mask over the memory, [n, 1, 1, M] (see `memory_mask`).
        """
        hidden = self.bert.embeddings(input_ids)
        mask = causal_mask(input_ids.shape[1], hidden.dtype, hidden.device)
        for layer, kv in zip(self.bert.encoder.layer, memory_kv, strict=True):
            hidden = layer(hidden, mask, kv, memory_mask_add)
        return self.cls.predictions(hidden)
