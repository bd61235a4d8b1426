"""clip-retrieval's back-end endpoints, so its ClipClient and its front end can use a pixsearch library.

Its clients post JSON without a JSON content type (`requests.post(data=json.dumps(...))`, and the
front end's `fetch` with a string body), so the body is read and parsed here whatever the type.
Its front end runs on another origin: allow that origin with PIXSEARCH_CORS_ORIGINS.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from pixsearch.errors import ConfigError
from pixsearch.web.context import WebContext
from pixsearch.web.deps import ContextDep
from pixsearch.web.knn_query import INDEX_NAME, KnnHit, check_index_name, knn_vector, nearest, texts_of
from pixsearch.web.openapi import json_body
from pixsearch.web.schemas import (
    ErrorPublic,
    KnnRequest,
    KnnResult,
    Metadata,
    MetadataRequest,
    MetadataResult,
)

router = APIRouter(tags=["clip-retrieval"])

BAD_BODY = {"model": ErrorPublic, "description": "the body is not a JSON object"}
BAD_INDEX = {"model": ErrorPublic, "description": "indice_name names no index of this server"}


def _json_body(raw: bytes, model: type[BaseModel]) -> Any:
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"body is not valid JSON ({error})") from None
    except RecursionError:
        raise ConfigError("body is not valid JSON here (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError("body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None


def _image_url(request: Request, image_id: int) -> str:
    return f"{request.url_for('image_thumbnail', image_id=image_id)}?size=large"


def _image_metadata(context: WebContext, request: Request, image_ids: list[int]) -> dict[int, Metadata]:
    """Caption (when there is one) and image URL of the photos that exist, by id."""
    rows = context.image_rows(image_ids)
    captions = context.captions.texts(list(rows.values()), context.options.captioner)
    return {image_id: Metadata(caption=captions.get(image_id), url=_image_url(request, image_id)) for image_id in rows}


def _answer(context: WebContext, request: Request, query: KnnRequest) -> list[KnnResult]:
    check_index_name(query.indice_name)
    hits = nearest(context, knn_vector(context, query, str(request.base_url)), query)
    described: list[KnnHit] = hits[: query.num_images]
    if query.modality == "text":
        texts = texts_of(context, [hit.id for hit in described])
        return [KnnResult(id=hit.id, similarity=hit.similarity, caption=texts.get(hit.id)) for hit in described]
    metadata = _image_metadata(context, request, [hit.id for hit in described])
    results = []
    for number, hit in enumerate(hits):
        meta = metadata.get(hit.id) if number < query.num_images else None
        fields = meta.model_dump(exclude_none=True) if meta else {}
        results.append(KnnResult(id=hit.id, similarity=hit.similarity, **fields))
    return results


@router.post(
    "/knn-service",
    response_model=list[KnnResult],
    response_model_exclude_none=True,
    openapi_extra=json_body(KnnRequest),
    responses={
        400: {"model": ErrorPublic, "description": "no query or several, bad base64, bad embedding, not JSON"},
        403: {"model": ErrorPublic, "description": "image_url of another server, while fetching URLs is off"},
        404: {"model": ErrorPublic, "description": "indice_name names no index, or image_url no photo, here"},
        409: {"model": ErrorPublic, "description": "nothing of that modality indexed yet"},
        413: {"model": ErrorPublic, "description": "the image is over the upload limit"},
        422: {"model": ErrorPublic, "description": "a field of the wrong type, or the image does not decode"},
    },
)
async def knn_service(request: Request, context: ContextDep) -> list[KnnResult]:
    """Nearest neighbours of a text, an image (base64 or URL) or an embedding, in clip-retrieval's shape.

    `modality` "image" searches the photos: `num_result_ids` hits, the first `num_images` with `url`
    (a JPEG of the photo) and `caption` (its stored caption, when it has one); `/metadata` gives the
    rest. "text" searches the library's text collections: `num_images` hits, `caption` is the text.
    """
    query = _json_body(await request.body(), KnnRequest)
    return await run_in_threadpool(_answer, context, request, query)


@router.get("/indices-list", response_model=list[str])
def indices_list() -> list[str]:
    """The index names clip-retrieval's front end offers; a pixsearch server serves one library."""
    return [INDEX_NAME]


@router.post(
    "/metadata",
    response_model=list[MetadataResult],
    response_model_exclude_none=True,
    openapi_extra=json_body(MetadataRequest),
    responses={400: BAD_BODY, 404: BAD_INDEX, 422: {"model": ErrorPublic, "description": "ids not a list of ids"}},
)
async def metadata(request: Request, context: ContextDep) -> list[MetadataResult]:
    """Caption and image URL of photos by id, as clip-retrieval's front end asks for the hits past the
    first page (ids of no photo are left out)."""
    query = _json_body(await request.body(), MetadataRequest)
    check_index_name(query.indice_name)
    found = await run_in_threadpool(_image_metadata, context, request, query.ids)
    return [MetadataResult(id=image_id, metadata=found[image_id]) for image_id in query.ids if image_id in found]
