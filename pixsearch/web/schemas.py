"""Request (`...Create`) and response (`...Public`) shapes of the JSON API."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema

from pixsearch.search import ImageHit
from pixsearch.search.results import FILTER
from pixsearch.storage.annotations import MAX_TAG_LENGTH, Tag
from pixsearch.storage.schema import ImageRow
from pixsearch.web.captions import Caption
from pixsearch.web.deps import MAX_ID

_SURROGATE = re.compile("[\ud800-\udfff]")


def plain_text(value: str | None) -> str | None:
    """Refuse text that no database can store and no tokenizer reads: a NUL, a lone surrogate.

    Raises:
        ValueError: naming the character (the 422 names the field).
    """
    if value is None:
        return None
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\x00)")
    if _SURROGATE.search(value):
        raise ValueError("must be valid Unicode (it holds a lone surrogate such as \\ud800)")
    return value


# every text a client sends (queries, captions, tags, questions, statements) is checked with this
PlainText = AfterValidator(plain_text)


# a camera's EXIF time carries no time zone (the clock on the camera said so, wherever it was): not an
# RFC 3339 date-time, which must have one, so a plain string
LocalDateTime = Annotated[
    datetime,
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO 8601 date and time as the camera's clock said it, without a time zone",
            "example": "2021-06-15T10:30:00",
        }
    ),
]


def _with_zone(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.astimezone()  # the server's clock: its local zone


# times of the server's own clock (indexed, captioned): an RFC 3339 date-time with the server's offset
ServerDateTime = Annotated[datetime, AfterValidator(_with_zone)]


class ErrorPublic(BaseModel):
    detail: str = Field(description="one-line reason")


# every route with parameters or a body: the handlers answer a bad one in this shape, not FastAPI's list
INVALID = {
    400: {"model": ErrorPublic, "description": "the body cannot be read (not UTF-8, nested too deeply)"},
    413: {"model": ErrorPublic, "description": "the body is over the server's upload limit"},
    422: {"model": ErrorPublic, "description": "a parameter or the body is invalid (the reason names it)"},
}


class HitPublic(BaseModel):
    id: int
    path: str
    score: float | None = Field(
        description="similarity to the query, or the fused score when reranked; null for a filter match"
    )
    match: Literal["similarity", "filter"] = Field(
        "similarity", description="filter: a query of filters alone matched it (it has no score)"
    )
    ranking_score: float | None = Field(
        None,
        description="what ordered the results: the reranked score, the fused score of words and keywords, else the similarity",
    )
    fused_score: float | None = Field(
        None, description="rank fusion of the vector and keyword rankings (1: first in both), when keywords matched"
    )
    relevance: float | None = Field(
        None, description="how far the query fits this photo above the background prompts (z)"
    )
    first_stage_score: float | None = Field(None, description="the similarity, when reranked")
    rerank_score: float | None = Field(None, description="the reranker's own score, when reranked")
    duplicate_ids: list[int] = Field(
        default_factory=list,
        description="near-identical results grouped under this one (each within the threshold of it)",
    )
    width: int
    height: int
    taken_at: LocalDateTime | None = None
    camera: str | None = None
    thumbnail_url: str
    page_url: str


class SearchPublic(BaseModel):
    query: str | None = None
    like: int | None = Field(None, description="the image id of a 'more like this' search")
    k: int
    offset: int
    hits: list[HitPublic]
    reranked: bool = Field(description="true only when a reranker reordered these hits")
    no_good_match: bool = Field(description="nothing scored above the server's relevance cut-off")
    best_score: float | None = Field(None, description="best score before the cut-off")
    min_score: float | None = Field(None, description="the server's relevance cut-off, if any")
    next_offset: int | None = Field(None, description="offset of the next page, when there may be one")
    notes: list[str] = Field(default_factory=list, description="why an option was ignored, etc.")
    rerank_token: str | None = Field(
        None,
        description="with rerank and defer_rerank: these are the first-stage results, and POST /api/rerank "
        "with this token answers them reranked",
    )


class RerankCreate(BaseModel):
    """A deferred rerank of a result set a search already returned."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=64, description="the rerank_token of a search response")


class CaptionPublic(BaseModel):
    image_id: int
    caption: str
    source: Literal["model", "user"]
    model: str | None = None
    created_at: ServerDateTime
    generated: bool = Field(False, description="made by this request")
    stored: bool = Field(
        True, description="kept in the library; false: made for a caller without the API key, kept in memory only"
    )


class CaptionCreate(BaseModel):
    """Empty body: the stored caption, generated first if there is none. Setting or regenerating needs the API key."""

    model_config = ConfigDict(extra="forbid")
    caption: Annotated[str | None, PlainText] = Field(
        None, min_length=1, max_length=1000, description="set this caption (needs API key)"
    )
    regenerate: bool = Field(False, description="generate again even if stored (needs API key)")

    @field_validator("caption")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("caption must not be blank")
        return value.strip() if value is not None else None


class AskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: Annotated[str, PlainText] = Field(min_length=1, max_length=300)
    top_k: int = Field(5, ge=1, le=10)
    llm: bool = Field(
        False,
        description="also have the server's language model (writer) write an answer from the caption and these answers",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be blank")
        return value.strip()


class AnswerPublic(BaseModel):
    answer: str
    probability: float


class WrittenPublic(BaseModel):
    answer: str = Field(
        description="the language model's answer; `answers` and `caption` are the evidence it was given"
    )
    caption: str = Field(description="the caption the prompt held")
    model: str = Field(description="the writer's spec")


class AskPublic(BaseModel):
    image_id: int
    question: str
    answers: list[AnswerPublic]
    model: str
    written: WrittenPublic | None = Field(None, description="present when the request asked for `llm`")


class TagPublic(BaseModel):
    tag: str
    score: float | None = Field(None, description="the model's confidence; none for a person's tag")
    source: str = Field(description="who made it: a model spec (zero-shot:..., imagenet:...), 'ocr', 'xmp', 'person'")
    state: Literal["suggested", "confirmed"] = Field(
        description="suggested by a model, or confirmed by a person (never overwritten by a model)"
    )


class TagsPublic(BaseModel):
    image_id: int
    tags: list[TagPublic]


class TagCreate(BaseModel):
    """A person's edit: `add` a new tag or `confirm` a model's suggestion (both make it confirmed)."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, PlainText] = Field(min_length=1, max_length=MAX_TAG_LENGTH)
    action: Literal["add", "confirm"] = "add"

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("tag name must not be blank")
        return value


class EntailCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statement: Annotated[str, PlainText] = Field(min_length=1, max_length=300)

    @field_validator("statement")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("statement must not be blank")
        return value.strip()


class EntailPublic(BaseModel):
    image_id: int
    statement: str
    entailment: float = Field(description="probability that the photo shows the statement is true")
    neutral: float = Field(description="probability that the photo cannot tell")
    contradiction: float = Field(description="probability that the photo shows it is false")
    label: Literal["entailment", "neutral", "contradiction"]
    model: str


class ImagePublic(BaseModel):
    id: int
    path: str
    file_name: str
    width: int
    height: int
    size: int = Field(description="file size in bytes")
    taken_at: LocalDateTime | None = None
    camera: str | None = None
    indexed_at: ServerDateTime
    caption: CaptionPublic | None = None
    tags: list[TagPublic]
    thumbnail_url: str
    preview_url: str
    page_url: str
    neighbours: list[HitPublic]


class HealthPublic(BaseModel):
    status: Literal["ok"]
    library: str
    images: int
    model: str | None
    captioner: str | None
    answerer: str | None
    entailer: str | None
    patch_scorer: str | None
    reranker: str | None
    rerank_available: bool
    writes_enabled: bool


KNN_MAX = 10_000  # clip-retrieval's front end asks for up to 10,000 (its download button)


class KnnRequest(BaseModel):
    """The body clip-retrieval's ClipClient and front end send to `/knn-service`."""

    model_config = ConfigDict(extra="ignore")
    text: Annotated[str | None, PlainText] = None
    image: str | None = Field(None, description="the query image, base64")
    image_url: Annotated[str | None, PlainText] = Field(
        None,
        description="a URL of this server's own photos (/api/images/{id}/file or /thumbnail), answered from the "
        "stored vector; any other URL only when the server allows fetching image URLs",
    )
    embedding_input: list[float] | None = None
    modality: Literal["image", "text"] = Field("image", description="which index to search")
    num_images: int = Field(40, ge=1, le=KNN_MAX, description="how many hits carry their caption and url")
    num_result_ids: int | None = Field(
        None, ge=1, le=KNN_MAX, description="how many hits (ids and similarities); default num_images"
    )
    deduplicate: bool = Field(
        False, description="keep the best of each group of near-identical photos (linked above similarity 0.94)"
    )
    indice_name: str | None = Field(None, description="the index: 'pixsearch' (GET /indices-list), or none")

    @field_validator("text", "image", "image_url", "indice_name", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("embedding_input", mode="before")
    @classmethod
    def _empty_list_is_none(cls, value: object) -> object:
        return None if value == [] else value


class KnnResult(BaseModel):
    """One hit; like clip-retrieval's back end, a key without a value is left out (never null)."""

    id: int
    similarity: float
    caption: str | SkipJsonSchema[None] = Field(None, description="the photo's caption, or the text itself")
    url: str | SkipJsonSchema[None] = Field(
        None, description="a JPEG of the photo; only the first num_images hits carry it"
    )


class MetadataRequest(BaseModel):
    """What clip-retrieval's front end asks `/metadata` for: the hits past the first page."""

    ids: Annotated[list[Annotated[int, Field(ge=0, le=MAX_ID)]], Field(max_length=KNN_MAX)]
    indice_name: str | None = None


class Metadata(BaseModel):
    caption: str | SkipJsonSchema[None] = None
    url: str


class MetadataResult(BaseModel):
    id: int
    metadata: Metadata


# -- converters ----------------------------------------------------------------------------------
def hit_public(hit: ImageHit, request: Request) -> HitPublic:
    return HitPublic(
        id=hit.image_id,
        path=hit.path,
        score=None if hit.match == FILTER else round(hit.score, 6),
        match=hit.match,  # type: ignore[arg-type]
        ranking_score=_rounded(hit.ranking_score),
        fused_score=_rounded(hit.fused_score),
        relevance=_rounded(hit.relevance),
        duplicate_ids=[member.image_id for member in hit.near_identical],
        first_stage_score=_rounded(getattr(hit, "first_stage_score", None)),
        rerank_score=_rounded(getattr(hit, "rerank_score", None)),
        width=hit.width,
        height=hit.height,
        taken_at=hit.taken_at,
        camera=hit.camera,
        thumbnail_url=str(request.url_for("image_thumbnail", image_id=hit.image_id).path),
        page_url=str(request.url_for("result_page", image_id=hit.image_id).path),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def caption_public(image_id: int, caption: Caption, generated: bool = False) -> CaptionPublic:
    return CaptionPublic(
        image_id=image_id,
        caption=caption.text,
        source=caption.source,  # type: ignore[arg-type]
        model=caption.model,
        created_at=caption.created_at,
        generated=generated,
        stored=caption.stored,
    )


def tag_public(tag: Tag) -> TagPublic:
    score = None if tag.score is None else round(float(tag.score), 6)
    return TagPublic(tag=tag.name, score=score, source=tag.source, state=tag.state)  # type: ignore[arg-type]


def image_public(
    row: ImageRow,
    request: Request,
    caption: Caption | None,
    tags: list[Tag],
    neighbours: list[ImageHit],
) -> ImagePublic:
    thumbnail = request.url_for("image_thumbnail", image_id=row.id)
    return ImagePublic(
        id=row.id,
        path=row.path,
        file_name=Path(row.path).name,
        width=row.width,
        height=row.height,
        size=row.size,
        taken_at=row.taken_at,
        camera=row.camera,
        indexed_at=row.indexed_at,
        caption=caption_public(row.id, caption) if caption else None,
        tags=[tag_public(tag) for tag in tags],
        thumbnail_url=str(thumbnail.path),
        preview_url=f"{thumbnail.path}?size=large",
        page_url=str(request.url_for("result_page", image_id=row.id).path),
        neighbours=[hit_public(hit, request) for hit in neighbours],
    )
