"""The OpenAPI document as client generators read it.

FastAPI describes an uploaded file the OpenAPI 3.1 way only (`contentMediaType`); generators such as
openapi-python-client and openapi-generator know a file by `format: binary`, and without it type the
upload as text, so a generated client cannot send a photo. Both are given here. Routes that read their
JSON body themselves (clip-retrieval's, whose clients send no JSON content type) declare it with
`json_body`, and its schema is added to the document's components under the model's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

OCTET_STREAM = "application/octet-stream"
BINARY = {"type": "string", "format": "binary"}


def binary_content(*media_types: str, description: str) -> dict[str, Any]:
    """A 200 response declaration: the bytes of one of `media_types` (schema: a binary string)."""
    return {"description": description, "content": {kind: {"schema": dict(BINARY)} for kind in media_types}}


def _mark_files(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("contentMediaType") == OCTET_STREAM:
            node.setdefault("format", "binary")
        for value in node.values():
            _mark_files(value)
    elif isinstance(node, list):
        for value in node:
            _mark_files(value)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its JSON body itself: the body is `model` (see `install`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install(app: FastAPI, bodies: tuple[type[BaseModel], ...] = ()) -> Callable[[], dict[str, Any]]:
    """Make `app.openapi()` build (once) the document with uploads marked `format: binary` and the
    schemas of `bodies` (request bodies routes read themselves, declared with `json_body`) in it."""

    build = app.openapi  # FastAPI's own, which keeps its result in app.openapi_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = build().setdefault("components", {}).setdefault("schemas", {})
            for model in bodies:
                schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
            _mark_files(schemas)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    return openapi
