"""Searching: GET /api/search (words or "more like this"), POST /api/search (words and/or a photo)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from pixsearch.search.service import MAX_K
from pixsearch.web.context import WebContext
from pixsearch.web.deps import MAX_ID, ContextDep
from pixsearch.web.limits import PayloadTooLarge
from pixsearch.web.querying import WebQuery, WebResults, run_query
from pixsearch.web.schemas import ErrorPublic, PlainText, SearchPublic, hit_public

router = APIRouter(prefix="/api", tags=["search"])

MAX_OFFSET = 100_000
DEFER = (
    "with rerank: answer at once with the first-stage order and a rerank_token; POST /api/rerank then "
    "answers the same photos reranked (no waiting for the reranker before seeing results)"
)
MAX_QUERY_CHARS = 500

ERRORS = {
    400: {"model": ErrorPublic, "description": "bad query, k or offset"},
    404: {"model": ErrorPublic, "description": "'like' names no image"},
    409: {"model": ErrorPublic, "description": "nothing indexed yet"},
    413: {"model": ErrorPublic, "description": "upload too large"},
    422: {"model": ErrorPublic, "description": "invalid parameter (named), or the upload is not an image"},
}


async def read_upload(context: WebContext, upload: UploadFile | None) -> Image.Image | None:
    """The uploaded photo decoded, or None when no file was sent.

    Raises:
        PayloadTooLarge: over the upload limit. BadImageError: not a usable image.
    """
    if upload is None or (not upload.filename and not upload.size):
        return None
    limit = context.options.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"upload is over the limit of {limit} bytes")
    if not data:
        return None
    name = upload.filename or "uploaded image"
    return await run_in_threadpool(context.query_image, data, name)


def search_public(request: Request, query: WebQuery, results: WebResults, min_score: float | None) -> SearchPublic:
    return SearchPublic(
        query=(query.text or "").strip() or None,
        like=query.like,
        k=query.k,
        offset=query.offset,
        hits=[hit_public(hit, request) for hit in results.hits],
        reranked=results.reranked,
        no_good_match=results.no_good_match,
        best_score=None if results.best_score is None else round(results.best_score, 6),
        min_score=min_score,
        next_offset=query.offset + query.k if results.more else None,
        notes=results.notes,
        rerank_token=results.rerank_token,
    )


@router.get("/search", response_model=SearchPublic, responses=ERRORS)
def search(
    request: Request,
    context: ContextDep,
    q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description="words to search for"), PlainText] = None,
    like: Annotated[int | None, Query(ge=1, le=MAX_ID, description="'more like this': an image id")] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    rerank: Annotated[bool, Query(description="rerank with the cross-attention model, when configured")] = False,
    defer_rerank: Annotated[bool, Query(description=DEFER)] = False,
) -> SearchPublic:
    """Photos matching words (`q`), or photos like a stored one (`like`), best first."""
    query = WebQuery(text=q, like=like, k=k, offset=offset, rerank=rerank, defer_rerank=defer_rerank)
    return search_public(request, query, run_query(context, query), context.options.min_score)


@router.post("/search", response_model=SearchPublic, responses=ERRORS)
async def search_upload(
    request: Request,
    context: ContextDep,
    text: Annotated[str | None, Form(max_length=MAX_QUERY_CHARS, description="words to search for"), PlainText] = None,
    image: Annotated[UploadFile | None, File(description="a photo to search with")] = None,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Form(ge=0, le=MAX_OFFSET)] = 0,
    rerank: Annotated[bool, Form()] = False,
    defer_rerank: Annotated[bool, Form(description=DEFER)] = False,
) -> SearchPublic:
    """Photos matching words, a photo, or both (multipart form)."""
    photo = await read_upload(context, image)
    query = WebQuery(text=text, image=photo, k=k, offset=offset, rerank=rerank, defer_rerank=defer_rerank)
    results = await run_in_threadpool(run_query, context, query)
    return search_public(request, query, results, context.options.min_score)
