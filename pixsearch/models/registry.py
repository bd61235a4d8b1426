"""Backends registered by name. Importing this module imports no model code: each entry names
the module and class that implement it, imported when the backend is first created."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pixsearch.errors import ConfigError, UnknownBackendError
from pixsearch.models.roles import Role
from pixsearch.models.spec import ModelOptions, ModelSpec


@dataclass(frozen=True)
class Backend:
    name: str
    role: Role
    target: str  # "module:Class"; the class is built as Class(spec, options)
    summary: str


_BACKENDS: tuple[Backend, ...] = (
    Backend("clip", Role.DUAL_ENCODER, "pixsearch.models.hf_dual:ClipEncoder", "transformers CLIPModel"),
    Backend("siglip", Role.DUAL_ENCODER, "pixsearch.models.hf_dual:SiglipEncoder", "transformers SiglipModel"),
    Backend(
        "chinese-clip",
        Role.DUAL_ENCODER,
        "pixsearch.models.hf_dual:ChineseClipEncoder",
        "transformers ChineseCLIPModel",
    ),
    Backend(
        "mplug",
        Role.DUAL_ENCODER,
        "pixsearch.models.mplug.backends:MplugDualEncoder",
        "native mPLUG, contrastive towers",
    ),
    Backend(
        "blip-itm",
        Role.RERANKER,
        "pixsearch.models.blip:BlipItmReranker",
        "transformers BlipForImageTextRetrieval, ITM head",
    ),
    Backend("vle-itm", Role.RERANKER, "pixsearch.models.vle.backends:VleItmReranker", "native VLE, ITM head"),
    Backend("mplug-itm", Role.RERANKER, "pixsearch.models.mplug.backends:MplugItmReranker", "native mPLUG, ITM head"),
    Backend(
        "blip-caption",
        Role.CAPTIONER,
        "pixsearch.models.blip:BlipCaptioner",
        "transformers BlipForConditionalGeneration",
    ),
    Backend(
        "mplug-caption",
        Role.CAPTIONER,
        "pixsearch.models.mplug.backends:MplugCaptioner",
        "native mPLUG captioning (zh and en)",
    ),
    Backend("blip-vqa", Role.ANSWERER, "pixsearch.models.blip:BlipAnswerer", "transformers BlipForQuestionAnswering"),
    Backend("vle-vqa", Role.ANSWERER, "pixsearch.models.vle.backends:VleAnswerer", "native VLE, VQA head"),
    Backend(
        "vle-pbc",
        Role.PATCH_SCORER,
        "pixsearch.models.vle.backends:VlePatchBoxClassifier",
        "native VLE, patch-box head",
    ),
    Backend("mplug-vqa", Role.ANSWERER, "pixsearch.models.mplug.backends:MplugAnswerer", "native mPLUG VQA"),
    Backend(
        "st-text",
        Role.TEXT_ENCODER,
        "pixsearch.models.st_text:SentenceTransformerTextEncoder",
        "sentence-transformers text model into a CLIP image space (multilingual queries)",
    ),
    Backend(
        "imagenet",
        Role.TAGGER,
        "pixsearch.tagging.imagenet:ImageNetTagger",
        "EfficientNet-Lite0 ImageNet-1k, packaged weights",
    ),
    Backend("ofa-ve", Role.ENTAILER, "pixsearch.models.ofa.backends:OfaEntailer", "native OFA visual entailment"),
    Backend(
        "llm", Role.WRITER, "pixsearch.models.writer:CausalLmWriter", "transformers causal LM (chat template if any)"
    ),
    Backend(
        "openai-api",
        Role.WRITER,
        "pixsearch.models.writer_http:OpenAiWriter",
        "OpenAI-compatible /v1/chat/completions server (Ollama, llama.cpp, vLLM); spec URL#MODEL",
    ),
)


def backends(role: Role | None = None) -> list[Backend]:
    """The registered backends, optionally only those of one role."""
    return [b for b in _BACKENDS if role is None or b.role == role]


def find_backend(name: str) -> Backend:
    for backend in _BACKENDS:
        if backend.name == name:
            return backend
    known = ", ".join(b.name for b in _BACKENDS)
    raise UnknownBackendError(f"unknown model backend {name!r}; known backends: {known}")


def create(spec: ModelSpec | str, role: Role | None = None, options: ModelOptions | None = None) -> Any:
    """Build (but do not load) the model a spec names.

    Raises:
        ConfigError: malformed spec, or a backend of another role than `role`.
        UnknownBackendError: the backend is not registered.
    """
    spec = ModelSpec.parse(spec) if isinstance(spec, str) else spec
    backend = find_backend(spec.backend)
    if role is not None and backend.role != role:
        fitting = ", ".join(b.name for b in backends(role))
        raise ConfigError(
            f"model spec {spec} is a {backend.role} backend, but a {role} is needed here; {role} backends: {fitting}"
        )
    module_name, _, class_name = backend.target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(spec, options or ModelOptions())
