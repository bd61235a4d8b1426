"""Rerank: cross-encoder rescoring of a candidate list, score fusion, feature caches."""

from __future__ import annotations

from pixsearch.rerank.fusion import Fusion, fuse, similarity_weight
from pixsearch.rerank.service import RerankOptions, RerankService

__all__ = ["Fusion", "RerankOptions", "RerankService", "fuse", "similarity_weight"]
