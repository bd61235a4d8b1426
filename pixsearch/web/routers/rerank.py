"""Deferred reranking: POST /api/rerank reorders a result set a search already returned."""

from __future__ import annotations

from fastapi import APIRouter, Request

from pixsearch.web.deps import ContextDep
from pixsearch.web.querying import rerank_later
from pixsearch.web.routers.search import search_public
from pixsearch.web.schemas import INVALID, ErrorPublic, RerankCreate, SearchPublic

router = APIRouter(prefix="/api", tags=["search"])


@router.post(
    "/rerank",
    response_model=SearchPublic,
    responses={
        **INVALID,
        400: {"model": ErrorPublic, "description": "no reranker is configured on this server"},
        404: {"model": ErrorPublic, "description": "the token is unknown or has expired"},
    },
)
def rerank(request: Request, context: ContextDep, body: RerankCreate) -> SearchPublic:
    """The photos of an earlier words search (its `rerank_token`, from `rerank=true&defer_rerank=true`),
    reordered by the cross-attention reranker: its top k by the fused score, the rest below in their order."""
    query, results = rerank_later(context, body.token)
    return search_public(request, query, results, context.options.min_score)
