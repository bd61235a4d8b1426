"""Storage: SQL metadata, schema versions, FAISS index files and the stored vectors."""

from __future__ import annotations

from pixsearch.storage.library import IMAGES, TEXTS, Library, model_key
from pixsearch.storage.vector_index import VectorIndex

__all__ = ["IMAGES", "TEXTS", "Library", "VectorIndex", "model_key"]
