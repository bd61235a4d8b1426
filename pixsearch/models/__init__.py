"""Model roles, the backend registry and loading. No weights are loaded on import."""

from __future__ import annotations

from pixsearch.models.registry import Backend, backends, create, find_backend
from pixsearch.models.roles import (
    Answerer,
    Captioner,
    DualEncoder,
    Embedding,
    Entailer,
    PatchScorer,
    Reranker,
    Role,
    Tagger,
    Tower,
    Writer,
)
from pixsearch.models.spec import ModelOptions, ModelSpec

__all__ = [
    "Answerer",
    "Backend",
    "Captioner",
    "DualEncoder",
    "Embedding",
    "Entailer",
    "ModelOptions",
    "ModelSpec",
    "PatchScorer",
    "Reranker",
    "Role",
    "Tagger",
    "Tower",
    "Writer",
    "backends",
    "create",
    "find_backend",
]
