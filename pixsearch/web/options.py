"""What the web server adds to `Settings`: model specs per role, the API key, limits. Validated at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pixsearch.answering import read_template
from pixsearch.errors import ConfigError
from pixsearch.models.registry import find_backend
from pixsearch.models.roles import Role
from pixsearch.models.spec import ModelSpec
from pixsearch.search.relevance import DEFAULT_PROMPTS, DEFAULT_Z_MIN, Background, read_prompts

DEFAULT_MAX_UPLOAD = 20_000_000  # 20 MB: any camera JPEG, far below a memory problem

_ENV_PREFIX = "PIXSEARCH_"


@dataclass(frozen=True)
class WebOptions:
    """Options of `pixsearch serve`; read with `from_env` (PIXSEARCH_CAPTIONER, PIXSEARCH_ENTAILER, PIXSEARCH_API_KEY, ...).

    A role whose spec is None hides its box on the pages and answers 404 in the API.
    `api_key` None disables every request that changes the library.
    `min_score` None turns the "no good match" cut-off off (scores of random test models mean nothing).
    """

    captioner: str | None = None
    answerer: str | None = None
    entailer: str | None = None  # checks statements about a photo (ofa-ve:...)
    patch_scorer: str | None = None  # which parts of a photo match the words (vle-pbc:...)
    writer: str | None = None  # writes answers from caption + VQA answers (llm:..., openai-api:...)
    writer_prompt_file: str | None = None  # replaces the writer's prompt template (see pixsearch.answering)
    reranker: str | None = None
    api_key: str | None = None
    allow_image_url: bool = False
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    min_score: float | None = None
    # word queries: a photo is kept when the words fit it this many spreads better than the background
    # prompts do (see pixsearch.search.relevance; None: off). PIXSEARCH_BACKGROUND names a file of
    # prompts, one a line, for a model that knows another world than everyday photos.
    cutoff_z: float | None = DEFAULT_Z_MIN
    background: tuple[str, ...] = DEFAULT_PROMPTS
    keyword_weight: float = 1.0  # weight of keyword matches fused with the vector ranking (0: vectors only)
    duplicate_threshold: float | None = 0.95  # collapse near-identical results (None: show all)
    thumbnail_size: int = 256
    preview_size: int = 1024
    model_workers: int = 1
    max_pending_model_jobs: int = 8
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WebOptions:
        """Read PIXSEARCH_<FIELD> variables; `overrides` that are not None win over them.

        Raises:
            ConfigError: a variable does not parse, or a value is out of range (names it).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(_ENV_PREFIX + field.name.upper())
            if raw is not None and raw.strip() != "":
                values[field.name] = _parse(field.name, raw.strip())
        values.update({key: value for key, value in overrides.items() if value is not None})
        if isinstance(values.get("cors_origins"), list):
            values["cors_origins"] = tuple(values["cors_origins"])
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        """Raises ConfigError naming the bad value; model specs are checked without loading anything."""
        for name, role in (
            ("captioner", Role.CAPTIONER),
            ("answerer", Role.ANSWERER),
            ("entailer", Role.ENTAILER),
            ("patch_scorer", Role.PATCH_SCORER),
            ("reranker", Role.RERANKER),
            ("writer", Role.WRITER),
        ):
            spec = getattr(self, name)
            if spec is not None:
                _check_spec(name, spec, role)
        if self.writer_prompt_file is not None:
            read_template(Path(self.writer_prompt_file))
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("the API key must be at least 8 characters long")
        if self.max_upload_bytes < 1024:
            raise ConfigError(f"max upload bytes must be at least 1024, got {self.max_upload_bytes}")
        for name in ("thumbnail_size", "preview_size"):
            if not 16 <= getattr(self, name) <= 4096:
                raise ConfigError(f"{name.replace('_', ' ')} must be between 16 and 4096, got {getattr(self, name)}")
        if not 1 <= self.model_workers <= 16:
            raise ConfigError(f"model workers must be between 1 and 16, got {self.model_workers}")
        Background(self.background)  # at least 3 prompts
        if self.max_pending_model_jobs < 1:
            raise ConfigError(f"max pending model jobs must be at least 1, got {self.max_pending_model_jobs}")

    def with_(self, **changes: Any) -> WebOptions:
        return replace(self, **changes)

    @property
    def writes_enabled(self) -> bool:
        return self.api_key is not None


def _check_spec(name: str, spec: str, role: Role) -> None:
    backend = find_backend(ModelSpec.parse(spec).backend)
    if backend.role != role:
        raise ConfigError(f"{name} spec {spec!r} is a {backend.role} backend; a {role} is needed")


_INTS = {"max_upload_bytes", "thumbnail_size", "preview_size", "model_workers", "max_pending_model_jobs"}


def _parse(name: str, raw: str) -> Any:
    variable = _ENV_PREFIX + name.upper()
    if name in _INTS:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not an integer") from None
    if name == "background":
        return read_prompts(Path(raw))
    if name in {"cutoff_z", "duplicate_threshold"} and raw.lower() in {"off", "none"}:
        return None
    if name in {"min_score", "cutoff_z", "keyword_weight", "duplicate_threshold"}:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not a number") from None
    if name == "allow_image_url":
        if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
            raise ConfigError(f"{variable}={raw!r} is not a yes/no value")
        return raw.lower() in {"1", "true", "yes", "on"}
    if name == "cors_origins":
        return tuple(origin.strip() for origin in raw.split(",") if origin.strip())
    return raw
