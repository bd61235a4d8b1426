"""Per-image tensors a cross-attention reranker computes once and reuses for every query.

In a cross-attention layer the keys and values of the image tokens are projections of the image
alone: no word of the query enters them. For BLIP-base at 384 px they are most of a candidate's cost
(~16 of ~20 GFLOP), so a reranker that keeps them per image leaves each later query only the text
side to compute. They are large (BLIP-base: 12 layers x 2 x 577 tokens x 768 = 42.5 MB per image in
float32), so they live in a bounded memory tier below the vision-feature cache, never on disk. They
are kept in the model's dtype: float16 would halve them but moved a tiny mPLUG's ITM logits by 1e-3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F

from pixsearch.errors import ConfigError


@dataclass(frozen=True, eq=False)
class ImageState:
    """The query-independent tensors one reranker derived from one image's vision features.

    Each backend subclasses it, so a state handed to another model is refused by type. `tensors` are
    CPU tensors owning their memory (a cached state must not pin a whole batch).
    """

    tensors: tuple[torch.Tensor, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[n, L, heads * d] -> [n, heads, L, d] (a view)."""
    n, length, width = x.shape
    return x.view(n, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[n, heads, L, d] -> [n, L, heads * d]."""
    n, heads, length, size = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * size)


def states_in_chunks(
    features: Sequence[Any], batch: int, make: Callable[[list[Any]], list[ImageState]]
) -> list[ImageState]:
    """`make` applied to `batch` features at a time (no autograd): the states of a list of images."""
    with torch.inference_mode():
        return [
            state for start in range(0, len(features), batch) for state in make(list(features[start : start + batch]))
        ]


def attend_state(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """SDPA of query [rows, heads, L, d] over one image's keys and values [heads, T, d], shared by the rows."""
    rows = query.shape[0]
    key, value = key[None].expand(rows, -1, -1, -1), value[None].expand(rows, -1, -1, -1)
    return F.scaled_dot_product_attention(query, key, value)


def score_items(
    items: Sequence[Any],
    state_type: type[ImageState],
    make_states: Callable[[list[Any], bool], list[ImageState]],
    score: Callable[[list[ImageState]], torch.Tensor],
    batch: int,
    keep: bool,
) -> tuple[npt.NDArray[np.float32], list[ImageState | None]]:
    """Score images given as vision features or states, `batch` at a time, for backends whose pass reads
    states only: the features of a batch become states first (`make_states(features, own)`: with `own` each
    state owns its memory, as a cached one must; else they may be views of one batch), and with `keep`
    come back too.

    Raises:
        ConfigError: a state made by another kind of model.
    """
    scores: list[torch.Tensor] = []
    states: list[ImageState | None] = []
    for start in range(0, len(items), batch):
        chunk = list(items[start : start + batch])
        for item in chunk:
            if isinstance(item, ImageState) and not isinstance(item, state_type):
                raise ConfigError(
                    f"a {type(item).__name__} cannot be scored by a model whose states are {state_type.__name__}"
                )
        fresh = [i for i, item in enumerate(chunk) if not isinstance(item, ImageState)]
        made = make_states([chunk[i] for i in fresh], keep) if fresh else []
        ready = list(chunk)
        for i, state in zip(fresh, made, strict=True):
            ready[i] = state
        scores.append(score(ready).float().cpu())
        kept: list[ImageState | None] = [item if isinstance(item, ImageState) else None for item in chunk]
        if keep:
            for i, state in zip(fresh, made, strict=True):
                kept[i] = state
        states.extend(kept)
    return (torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32)), states
