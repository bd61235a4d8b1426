"""Server-rendered pages: the search page (/) and a result page per photo (/images/{id})."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from pixsearch.search.service import MAX_K
from pixsearch.web.context import WebContext
from pixsearch.web.deps import MAX_ID, ContextDep, ImageRowDep, TemplatesDep
from pixsearch.web.handlers import CLIENT_ERRORS, one_line, status_of
from pixsearch.web.querying import WebQuery, WebResults, query_vector, run_query
from pixsearch.web.routers.images import neighbours_of
from pixsearch.web.routers.search import MAX_OFFSET, MAX_QUERY_CHARS, read_upload
from pixsearch.web.schemas import PlainText, hit_public

router = APIRouter(include_in_schema=False)

K_CHOICES = (12, 24, 48, 96)
DEFAULT_K = 24
NEIGHBOURS = 12


def _blank_page(context: WebContext, q: str | None, k: int, rerank: bool) -> dict[str, Any]:
    return {
        "q": q or "",
        "k": k,
        "k_choices": sorted({*K_CHOICES, k}),
        "rerank": rerank,
        "rerank_available": context.rerank_hook is not None,
        "like": None,
        "searched": False,
        "hits": [],
        "error": None,
        "min_score": context.options.min_score,
    }


@router.get("/", response_class=HTMLResponse, name="search_page")
def search_page(
    request: Request,
    context: ContextDep,
    templates: TemplatesDep,
    q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS), PlainText] = None,
    like: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    qid: Annotated[str | None, Query(max_length=64)] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    rerank: bool = False,
):
    page = _blank_page(context, q, k, rerank)
    status = 200
    if like is not None or qid or (q or "").strip():
        try:
            if like is not None:
                page["like"] = hit_like(request, context, like)
            vector = context.query_vectors.get(qid) if qid else None
            # the page shows first-stage results at once; its script asks for the rerank (POST /api/rerank)
            query = WebQuery(text=q, like=like, vector=vector, k=k, offset=offset, rerank=rerank, defer_rerank=True)
            page.update(_results(request, query, run_query(context, query)))
        except CLIENT_ERRORS as error:
            status = status_of(error)
            page["error"] = one_line(error)
    return templates.TemplateResponse(request, "search.html", page, status_code=status)


def hit_like(request: Request, context: WebContext, image_id: int) -> dict[str, Any]:
    row = context.image_row(image_id)
    return {
        "id": row.id,
        "name": Path(row.path).name,
        "thumbnail_url": str(request.url_for("image_thumbnail", image_id=row.id).path),
        "page_url": str(request.url_for("result_page", image_id=row.id).path),
    }


def _results(request: Request, query: WebQuery, results: WebResults) -> dict[str, Any]:
    hits = [hit_public(hit, request) for hit in results.hits]
    prev_url = next_url = None
    if query.offset > 0:
        prev_url = str(request.url.include_query_params(offset=max(0, query.offset - query.k)))
    if results.more:
        next_url = str(request.url.include_query_params(offset=query.offset + query.k))
    return {
        "searched": True,
        "hits": [{**hit.model_dump(), "name": Path(hit.path).name} for hit in hits],
        "offset": query.offset,
        "no_good_match": results.no_good_match,
        "empty": results.empty,
        "best_score": results.best_score,
        "notes": results.notes,
        "reranked": results.reranked,
        "rerank_token": results.rerank_token,
        "rerank_url": str(request.url_for("rerank").path),
        "prev_url": prev_url,
        "next_url": next_url,
    }


@router.post("/", name="search_submit")
async def search_submit(
    request: Request,
    context: ContextDep,
    templates: TemplatesDep,
    q: Annotated[str | None, Form(max_length=MAX_QUERY_CHARS), PlainText] = None,
    image: Annotated[UploadFile | None, File()] = None,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = DEFAULT_K,
    rerank: Annotated[bool, Form()] = False,
):
    """The search form: words go to GET /?q=..., a photo's vector is kept so its results can be paged."""
    params: dict[str, Any] = {"k": k}
    if (q or "").strip():
        params["q"] = q.strip()
    if rerank:
        params["rerank"] = "true"
    try:
        photo = await read_upload(context, image)
        if photo is not None:
            vector = await run_in_threadpool(query_vector, context, q, photo)
            params["qid"] = context.query_vectors.put(vector)
    except CLIENT_ERRORS as error:
        page = {**_blank_page(context, q, k, rerank), "error": one_line(error)}
        return templates.TemplateResponse(request, "search.html", page, status_code=status_of(error))
    target = request.url_for("search_page").path
    return RedirectResponse(f"{target}?{urlencode(params)}", status_code=303)


@router.get("/images/{image_id}", response_class=HTMLResponse, name="result_page")
def result_page(request: Request, context: ContextDep, templates: TemplatesDep, row: ImageRowDep):
    caption = context.caption(row)
    neighbours = [hit_public(hit, request) for hit in neighbours_of(context, row.id, NEIGHBOURS)]
    page = {
        "image": row,
        "name": Path(row.path).name,
        "preview_url": f"{request.url_for('image_thumbnail', image_id=row.id).path}?size=large",
        "file_url": str(request.url_for("image_file", image_id=row.id).path),
        "caption": caption,
        "captioner": context.options.captioner,
        "answerer": context.options.answerer,
        "writer": context.options.writer,
        "entailer": context.options.entailer,
        "patch_scorer": context.options.patch_scorer,
        "heatmap_url": str(request.url_for("image_heatmap", image_id=row.id).path),
        "writes_enabled": context.options.writes_enabled,
        "tags": context.tags(row.id),
        "tags_editable": context.tags_hook is None,
        "tags_url": str(request.url_for("image_tags", image_id=row.id).path),
        "entail_url": str(request.url_for("image_entail", image_id=row.id).path),
        "neighbours": [{**hit.model_dump(), "name": Path(hit.path).name} for hit in neighbours],
        "caption_url": str(request.url_for("image_caption", image_id=row.id).path),
        "ask_url": str(request.url_for("image_ask", image_id=row.id).path),
        "like_url": f"{request.url_for('search_page').path}?{urlencode({'like': row.id})}",
    }
    return templates.TemplateResponse(request, "result.html", page)
