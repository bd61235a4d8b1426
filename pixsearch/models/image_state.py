"""Per-image tensors a cross-attention reranker computes once and reuses for every query.

In a cross-attention layer the keys and values of the image tokens are projections of the image
alone: no word of the query enters them. For BLIP-base at 384 px they are most of a candidate's cost
(~16 of ~20 GFLOP), so a reranker that keeps them per image leaves each later query only the text
side to compute. They are large (BLIP-base: 12 layers x 2 x 577 tokens x 768 = 42.5 MB per image in
float32), so they live in a bounded memory tier below the vision-feature cache, never on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def state_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype states are kept in: float16 for a float32 model (half the memory; the tensors are cast
    back when used, and on BLIP-base random weights that moved ITM logits by < 1e-3, see
    bench/query_latency.py), else the model's own dtype."""
    return torch.float16 if model_dtype == torch.float32 else model_dtype
