"""Unit vectors clustered like real image embeddings, and text-like queries that sit apart from them.

Image embeddings of a dual encoder fill a narrow cone (a shared mean direction), in clusters of very
different sizes, each spread more along some axes than others. Text embeddings sit in another cone
(the modality gap): a text's cosine to its best-matching photos is ~0.3, not the ~0.8 between
photos of one thing. Used by the index tests and by bench/ann.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Clustered:
    vectors: npt.NDArray[np.float32]  # [n, d] unit rows
    centres: npt.NDArray[np.float32]  # [clusters, d] unit rows
    labels: npt.NDArray[np.int64]  # [n] cluster of each vector
    image_mean: npt.NDArray[np.float32]  # [d] the images' shared direction
    text_offset: npt.NDArray[np.float32]  # [d] the texts' shared direction


def _unit(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)


def clustered(
    n: int, dim: int = 512, clusters: int | None = None, seed: int = 0, chunk: int = 65536, vectors: bool = True
) -> Clustered:
    """`n` unit vectors in `clusters` anisotropic gaussian clusters (sizes Zipf-like) around a shared direction.
    `vectors=False`: the clusters only (queries of a set made before, without making its vectors again)."""
    rng = np.random.default_rng(seed)
    clusters = clusters or max(8, n // 300)
    image_mean = _unit(rng.standard_normal(dim))
    text_offset = rng.standard_normal(dim)
    text_offset = _unit(text_offset - (text_offset @ image_mean) * image_mean)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(dim) / 16.0)).astype(np.float32)  # a few strong axes, a long tail
    spectrum /= np.sqrt((spectrum**2).mean())
    centres = _unit(0.9 * image_mean + rng.standard_normal((clusters, dim)) * spectrum / np.sqrt(dim))
    sizes = 1.0 / (1.0 + np.arange(clusters)) ** 0.7
    labels = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    spreads = rng.uniform(0.45, 0.8, size=clusters).astype(np.float32)  # some clusters tight, some loose
    axes = np.stack([rng.permutation(spectrum) for _ in range(min(clusters, 64))])  # each cluster its own long axes
    points = np.empty((n if vectors else 0, dim), dtype=np.float32)
    for start in range(0, len(points), chunk):
        part = labels[start : start + chunk]
        noise = rng.standard_normal((len(part), dim), dtype=np.float32) * axes[part % len(axes)]
        points[start : start + chunk] = _unit(centres[part] + noise * (spreads[part, None] / np.sqrt(dim)))
    return Clustered(points, centres, labels.astype(np.int64), image_mean, text_offset)


def text_queries(data: Clustered, count: int, seed: int = 1) -> npt.NDArray[np.float32]:
    """`count` text-like queries: each aims at one cluster, from the texts' side of the modality gap."""
    rng = np.random.default_rng(seed)
    dim = data.centres.shape[1]
    sizes = np.bincount(data.labels, minlength=len(data.centres)).astype(np.float64)
    aims = rng.choice(len(data.centres), size=count, p=sizes / sizes.sum())
    # the part of a cluster's direction that tells it from the others (texts do not share the images' mean)
    specific = _unit(data.centres[aims] - (data.centres[aims] @ data.image_mean)[:, None] * data.image_mean)
    noise = rng.standard_normal((count, dim)).astype(np.float32) / np.sqrt(dim)
    return _unit(0.26 * specific + 0.18 * data.image_mean + 0.8 * data.text_offset + 0.5 * noise)


def image_queries(data: Clustered, count: int, seed: int = 2) -> npt.NDArray[np.float32]:
    """`count` photo-like queries: stored vectors moved a little (a new photo of a known thing)."""
    rng = np.random.default_rng(seed)
    picks = data.vectors[rng.choice(len(data.vectors), size=count, replace=False)]
    return _unit(picks + rng.standard_normal(picks.shape).astype(np.float32) * (0.3 / np.sqrt(picks.shape[1])))
