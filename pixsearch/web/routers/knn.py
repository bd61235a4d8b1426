"""clip-retrieval's back-end endpoints, so its ClipClient and its front end can use a pixsearch library.

Its clients post JSON without a JSON content type (`requests.post(data=json.dumps(...))`, and the
front end's `fetch` with a string body), so the body is read and parsed here whatever the type.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from pixsearch.errors import ConfigError
from pixsearch.web.context import WebContext
from pixsearch.web.deps import MAX_ID, ContextDep
from pixsearch.web.knn_query import knn_vector, search_images, search_texts
from pixsearch.web.schemas import ErrorPublic, KnnRequest, KnnResult

router = APIRouter(tags=["clip-retrieval"])

INDEX_NAME = "pixsearch"


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


def _answer(context: WebContext, request: Request, query: KnnRequest) -> list[KnnResult]:
    vector = knn_vector(context, query)
    if query.modality == "text":
        hits = search_texts(context, vector, query)
        return [KnnResult(id=hit.text_id, similarity=hit.score, caption=hit.text) for hit in hits]
    hits = search_images(context, vector, query)
    rows = context.image_rows([hit.image_id for hit in hits])
    results = []
    for hit in hits:
        caption = context.caption(rows[hit.image_id]) if hit.image_id in rows else None
        results.append(
            KnnResult(
                id=hit.image_id,
                similarity=hit.score,
                caption=caption.text if caption else None,
                url=_image_url(request, hit.image_id),
            )
        )
    return results


@router.post(
    "/knn-service",
    response_model=list[KnnResult],
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": KnnRequest.model_json_schema()}}}
    },
    responses={
        400: {"model": ErrorPublic, "description": "no query or several, bad base64, bad embedding"},
        403: {"model": ErrorPublic, "description": "image_url sent while fetching URLs is off"},
        422: {"model": ErrorPublic, "description": "a field of the wrong type, or the image does not decode"},
    },
)
async def knn_service(request: Request, context: ContextDep) -> list[KnnResult]:
    """Nearest neighbours of a text, an image (base64) or an embedding, in clip-retrieval's shape.

    `modality` "image" searches the photos (`url` is a JPEG of the photo, `caption` its stored caption);
    "text" searches the library's text collections (`caption` is the text).
    """
    query = _json_body(await request.body(), KnnRequest)
    return await run_in_threadpool(_answer, context, request, query)


@router.get("/indices-list", response_model=list[str])
def indices_list() -> list[str]:
    """The index names clip-retrieval's front end offers; a pixsearch server serves one library."""
    return [INDEX_NAME]


class MetadataRequest(BaseModel):
    ids: Annotated[list[Annotated[int, Field(ge=0, le=MAX_ID)]], Field(max_length=1000)]
    indice_name: str | None = None


class MetadataResult(BaseModel):
    id: int
    metadata: dict[str, str | None]


@router.post(
    "/metadata",
    response_model=list[MetadataResult],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": MetadataRequest.model_json_schema()}},
        }
    },
    responses={
        400: {"model": ErrorPublic, "description": "the body is not a JSON object"},
        422: {"model": ErrorPublic, "description": "ids missing or not a list of image ids"},
    },
)
async def metadata(request: Request, context: ContextDep) -> list[MetadataResult]:
    """Caption and image URL of image ids, as clip-retrieval's front end asks for them."""
    query = _json_body(await request.body(), MetadataRequest)
    rows = await run_in_threadpool(context.image_rows, query.ids)
    results = []
    for image_id in query.ids:
        row = rows.get(image_id)
        if row is not None:
            caption = context.caption(row)
            url = _image_url(request, image_id)
            results.append(
                MetadataResult(id=image_id, metadata={"caption": caption.text if caption else None, "url": url})
            )
    return results
