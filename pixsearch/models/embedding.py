"""The one place embeddings are checked and L2-normalised."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from pixsearch.models.roles import Embedding


def to_embedding(vectors: torch.Tensor | npt.NDArray[np.floating], source: str = "model") -> Embedding:
    """Convert [n, d] vectors to a contiguous float32 array with unit-norm rows.

    Raises:
        ValueError: when the array is not 2-D or holds non-finite values (the message names `source`).
    """
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to(device="cpu", dtype=torch.float32).numpy()
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{source} returned vectors of shape {array.shape}; expected [n, d]")
    if not np.isfinite(array).all():
        raise ValueError(f"{source} returned non-finite values in a [{array.shape[0]}, {array.shape[1]}] batch")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)
