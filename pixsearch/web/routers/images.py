"""One photo: its facts, thumbnails, original file, caption, tags, questions and statements about it.

Files are found only through the image's library row (by id), never from a path in the URL, and
opened only through `WebContext.open_file`: regular files below the library's photo folders, no links.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pixsearch.answering import DEFAULT_TEMPLATE, AnsweringOptions, build_prompt, final_answer, read_template
from pixsearch.errors import EmptyIndexError, NotFoundError
from pixsearch.search import ImageHit
from pixsearch.storage.annotations import CONFIRMED, MAX_TAG_LENGTH, REJECTED, set_tag_state
from pixsearch.storage.schema import ImageRow
from pixsearch.web.captions import MODEL, USER
from pixsearch.web.context import WebContext
from pixsearch.web.deps import ApiKeyDep, ContextDep, ImageRowDep, check_write, may_write
from pixsearch.web.models import RoleNotConfigured
from pixsearch.web.openapi import binary_content
from pixsearch.web.querying import WebQuery, run_query
from pixsearch.web.responses import OpenFileResponse, content_disposition
from pixsearch.web.schemas import (
    INVALID,
    AnswerPublic,
    AskCreate,
    AskPublic,
    CaptionCreate,
    CaptionPublic,
    EntailCreate,
    EntailPublic,
    ErrorPublic,
    ImagePublic,
    PlainText,
    TagCreate,
    TagsPublic,
    WrittenPublic,
    caption_public,
    image_public,
    tag_public,
)

router = APIRouter(prefix="/api/images", tags=["images"], responses=INVALID)

NOT_FOUND = {
    404: {
        "model": ErrorPublic,
        "description": "no such image, or its file is gone or may not be served (a link, not a regular file, "
        "outside the library's photo folders)",
    }
}
MODEL_ERRORS = {
    **NOT_FOUND,
    503: {"model": ErrorPublic, "description": "the model cannot be loaded, or is busy"},
}
WRITE_ERRORS = {
    **NOT_FOUND,
    401: {"model": ErrorPublic, "description": "the change needs the API key"},
    403: {"model": ErrorPublic, "description": "changes are off on this server"},
}
# formats a browser shows as a picture; anything else is sent as a download, never rendered
_INLINE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif"}
_CACHE = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


def neighbours_of(context: WebContext, image_id: int, count: int) -> list[ImageHit]:
    """Up to `count` nearest stored images; none when the image has no vector (yet) or count is 0."""
    if count == 0:
        return []
    try:
        return run_query(context, WebQuery(like=image_id, k=count)).hits
    except (NotFoundError, EmptyIndexError):
        return []


@router.get("/{image_id}", response_model=ImagePublic, responses=NOT_FOUND)
def get_image(
    request: Request,
    context: ContextDep,
    row: ImageRowDep,
    neighbours: Annotated[int, Query(ge=0, le=100, description="how many nearest neighbours to include")] = 8,
) -> ImagePublic:
    """Facts, stored caption, tags and nearest neighbours of one photo."""
    return image_public(
        row, request, context.caption(row), context.tags(row.id), neighbours_of(context, row.id, neighbours)
    )


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    responses={**NOT_FOUND, 200: binary_content("image/jpeg", description="a JPEG")},
)
def image_thumbnail(
    context: ContextDep,
    row: ImageRowDep,
    size: Annotated[Literal["small", "large"], Query(description="small for grids, large for the result page")] = (
        "small"
    ),
) -> Response:
    """A JPEG fitting in the thumbnail (small) or preview (large) size; made once, then served from disk."""
    pixels = context.options.thumbnail_size if size == "small" else context.options.preview_size
    return Response(context.thumbnail(row, pixels), media_type="image/jpeg", headers=_CACHE)


@router.get(
    "/{image_id}/file",
    response_class=Response,
    responses={
        **NOT_FOUND,
        200: binary_content(
            *sorted(_INLINE_TYPES | {"application/octet-stream"}),
            description="the file; a format a browser would not show as a picture comes as a download",
        ),
    },
)
def image_file(context: ContextDep, row: ImageRowDep) -> Response:
    """The original file, as it is in the library."""
    name = Path(row.path).name
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = media_type in _INLINE_TYPES
    return OpenFileResponse(
        context.open_file(row),
        media_type=media_type if inline else "application/octet-stream",
        headers={
            "Content-Disposition": content_disposition("inline" if inline else "attachment", name),
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.post(
    "/{image_id}/caption",
    response_model=CaptionPublic,
    responses={
        **MODEL_ERRORS,
        401: {"model": ErrorPublic, "description": "setting or regenerating needs the API key"},
        403: {"model": ErrorPublic, "description": "changes are off on this server"},
    },
)
async def image_caption(
    context: ContextDep,
    row: ImageRowDep,
    key: ApiKeyDep,
    body: Annotated[CaptionCreate | None, Body()] = None,
) -> CaptionPublic:
    """The photo's caption: the stored one, else generated now by the captioner.

    A generated caption is stored in the library only for a caller with the API key; anyone else sees
    it (`stored` false) and the server keeps it in memory for a while, but nothing is written.
    With `{"caption": "..."}` sets it, with `{"regenerate": true}` makes it again; both need the API key.
    """
    body = body or CaptionCreate()
    if body.caption is not None or body.regenerate:
        check_write(context, key)
    if body.caption is not None:
        caption = await run_in_threadpool(context.captions.put, row, body.caption, USER, None)
        return caption_public(row.id, caption)
    shown = None if body.regenerate else await run_in_threadpool(context.caption, row)
    writer = may_write(context, key)
    if shown is not None and (shown.stored or not writer):
        return caption_public(row.id, shown)
    if shown is not None:  # made earlier for a caller who may not write: this one may, so keep it
        caption = await run_in_threadpool(context.captions.put, row, shown.text, MODEL, shown.model)
        return caption_public(row.id, caption)
    spec = context.options.captioner
    if spec is None:
        raise RoleNotConfigured("no captioner is configured on this server")
    text = await context.models.caption(lambda: context.read_image(row))
    if writer:
        caption = await run_in_threadpool(context.captions.put, row, text, MODEL, spec)
    else:
        caption = context.captions.remember(row, text, spec)
    return caption_public(row.id, caption, generated=True)


@router.post("/{image_id}/ask", response_model=AskPublic, responses=MODEL_ERRORS)
async def image_ask(context: ContextDep, row: ImageRowDep, body: AskCreate) -> AskPublic:
    """Answer a question about the photo: the most likely answers with their probabilities.

    With `"llm": true` the server's writer (language model) also writes an answer from the photo's
    caption (the stored one, else the captioner's), the question and these answers; 404 without a writer.
    """
    if body.llm and context.options.writer is None:
        raise RoleNotConfigured("no writer (language model) is configured on this server")
    answers = await context.models.answer(lambda: context.read_image(row), body.question, body.top_k)
    written = await _written(context, row, body.question, answers) if body.llm else None
    return AskPublic(
        image_id=row.id,
        question=body.question,
        answers=[AnswerPublic(answer=text, probability=float(prob)) for text, prob in answers],
        model=context.options.answerer or "",
        written=written,
    )


async def _written(
    context: WebContext, row: ImageRow, question: str, answers: list[tuple[str, float]]
) -> WrittenPublic:
    """The writer's answer, run in the model pool (so a slow language model never holds up a search)."""
    stored = await run_in_threadpool(context.caption, row)
    caption = stored.text if stored is not None else await context.models.caption(lambda: context.read_image(row))
    prompt_file = context.options.writer_prompt_file
    template = await run_in_threadpool(read_template, Path(prompt_file)) if prompt_file else DEFAULT_TEMPLATE
    options = AnsweringOptions(top_k=len(answers) or 1, template=template)
    prompt = build_prompt(caption, question, answers, options)
    completion = await context.models.write(prompt, options.max_new_tokens, options.timeout_s)
    return WrittenPublic(answer=final_answer(completion, answers), caption=caption, model=context.options.writer or "")


@router.post("/{image_id}/entail", response_model=EntailPublic, responses=MODEL_ERRORS)
async def image_entail(context: ContextDep, row: ImageRowDep, body: EntailCreate) -> EntailPublic:
    """Check a statement against the photo: probabilities that the photo entails it, says nothing
    about it (neutral), or contradicts it."""
    verdict = await context.models.entail(lambda: context.read_image(row), body.statement)
    probs = {name: float(verdict.get(name, 0.0)) for name in ("entailment", "neutral", "contradiction")}
    return EntailPublic(
        image_id=row.id,
        statement=body.statement,
        label=max(probs, key=probs.__getitem__),  # type: ignore[arg-type]
        model=context.options.entailer or "",
        **probs,
    )


@router.get(
    "/{image_id}/heatmap",
    response_class=Response,
    responses={
        200: binary_content("image/png", description="a PNG: the photo, matching patches in red"),
        **MODEL_ERRORS,
    },
)
async def image_heatmap(
    context: ContextDep,
    row: ImageRowDep,
    q: Annotated[str, Query(min_length=1, max_length=500, description="the words to locate in the photo"), PlainText],
) -> Response:
    """Which parts of the photo match the words: the photo with matching patches in red (PNG)."""
    png = await context.models.heatmap(lambda: context.read_image(row), q)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


# -- tags -----------------------------------------------------------------------------------------
def _tags(context: WebContext, image_id: int) -> TagsPublic:
    return TagsPublic(image_id=image_id, tags=[tag_public(tag) for tag in context.tags(image_id)])


def _set_tag(context: WebContext, image_id: int, name: str, state: str) -> TagsPublic:
    with context.library.session() as session:
        set_tag_state(session, image_id, name, state)
    return _tags(context, image_id)


@router.get("/{image_id}/tags", response_model=TagsPublic, responses=NOT_FOUND)
def image_tags(context: ContextDep, row: ImageRowDep) -> TagsPublic:
    """The photo's tags: confirmed ones first, then a model's suggestions by score."""
    return _tags(context, row.id)


@router.post("/{image_id}/tags", response_model=TagsPublic, responses=WRITE_ERRORS)
def add_image_tag(context: ContextDep, row: ImageRowDep, key: ApiKeyDep, body: TagCreate) -> TagsPublic:
    """Add a tag, or confirm a model's suggestion; either way a model never overwrites it. Needs the API key."""
    check_write(context, key)
    return _set_tag(context, row.id, body.name, CONFIRMED)


@router.delete("/{image_id}/tags/{name}", response_model=TagsPublic, responses=WRITE_ERRORS)
def remove_image_tag(
    context: ContextDep,
    row: ImageRowDep,
    key: ApiKeyDep,
    name: Annotated[str, PathParam(min_length=1, max_length=MAX_TAG_LENGTH), PlainText],
) -> TagsPublic:
    """Remove a tag: it is hidden, and no model adds it again. Needs the API key."""
    check_write(context, key)
    return _set_tag(context, row.id, name, REJECTED)
