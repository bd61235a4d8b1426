"""The result page's models (Captioner, Answerer, Entailer, Writer): built on first use, run in a bounded worker pool.

Generation takes from tens of milliseconds (tiny models) to seconds (BLIP-base on a CPU). It runs
in its own small ThreadPoolExecutor, never on the event loop and never in the thread pool that
serves searches, so a slow caption does not hold up a search. At most `max_pending` jobs wait or
run at once; past that the server answers 503 "busy" instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from PIL import Image

from pixsearch.models import registry
from pixsearch.models.roles import Answerer, Captioner, Entailer, PatchScorer, Role, Writer
from pixsearch.models.spec import ModelOptions
from pixsearch.rerank.heatmap import heatmap_png

log = logging.getLogger(__name__)

T = TypeVar("T")


class RoleNotConfigured(LookupError):
    """The server was started without a model for this role."""


class ModelsBusy(RuntimeError):
    """Too many model jobs are waiting already."""


class _Lazy:
    """One model of one role: created and loaded once, on first use, under a lock."""

    def __init__(self, spec: str | None, role: Role, options: ModelOptions) -> None:
        self.spec = spec
        self.role = role
        self.options = options
        self._model: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self.spec is None:
            raise RoleNotConfigured(f"no {self.role} model is configured on this server")
        with self._lock:
            if self._model is None:
                model = registry.create(self.spec, self.role, self.options)
                log.info("loading %s %s", self.role, self.spec)
                model.load()
                self._model = model
            return self._model

    def close(self) -> None:
        with self._lock:
            if self._model is not None:
                self._model.close()
                self._model = None


class ModelPool:
    def __init__(
        self,
        captioner: str | None,
        answerer: str | None,
        options: ModelOptions,
        workers: int = 1,
        max_pending: int = 8,
        entailer: str | None = None,
        patch_scorer: str | None = None,
        writer: str | None = None,
    ) -> None:
        self._captioner = _Lazy(captioner, Role.CAPTIONER, options)
        self._answerer = _Lazy(answerer, Role.ANSWERER, options)
        self._entailer = _Lazy(entailer, Role.ENTAILER, options)
        self._patch_scorer = _Lazy(patch_scorer, Role.PATCH_SCORER, options)
        self._writer = _Lazy(writer, Role.WRITER, options)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixsearch-model")
        self._slots = threading.BoundedSemaphore(max_pending)

    @property
    def captioner_spec(self) -> str | None:
        return self._captioner.spec

    @property
    def answerer_spec(self) -> str | None:
        return self._answerer.spec

    @property
    def entailer_spec(self) -> str | None:
        return self._entailer.spec

    async def caption(self, load: Callable[[], Image.Image]) -> str:
        """Caption the image `load()` returns (called in the worker, so file reading is off the loop too).

        Raises:
            RoleNotConfigured, ModelsBusy, and what loading or the model raises.
        """
        if self._captioner.spec is None:
            raise RoleNotConfigured("no captioner is configured on this server")

        def job() -> str:
            image = load()  # first: a file that may not be read loads no model
            model: Captioner = self._captioner.get()
            return model.caption([image])[0]

        return await self._run(job)

    async def answer(self, load: Callable[[], Image.Image], question: str, top_k: int) -> list[tuple[str, float]]:
        if self._answerer.spec is None:
            raise RoleNotConfigured("no answerer (VQA model) is configured on this server")

        def job() -> list[tuple[str, float]]:
            image = load()
            model: Answerer = self._answerer.get()
            return model.answer(image, question, top_k)

        return await self._run(job)

    async def entail(self, load: Callable[[], Image.Image], statement: str) -> dict[str, float]:
        """Probabilities that the photo entails, is neutral to, or contradicts `statement`."""
        if self._entailer.spec is None:
            raise RoleNotConfigured("no entailer (statement checker) is configured on this server")

        def job() -> dict[str, float]:
            image = load()
            model: Entailer = self._entailer.get()
            return model.judge(image, statement)

        return await self._run(job)

    async def heatmap(self, load: Callable[[], Image.Image], text: str) -> bytes:
        """A PNG of the photo with the patches that match `text` in red (VLE's patch-box head)."""
        if self._patch_scorer.spec is None:
            raise RoleNotConfigured("no patch scorer (vle-pbc:) is configured on this server")

        def job() -> bytes:
            image = load()
            model: PatchScorer = self._patch_scorer.get()
            return heatmap_png(image, model.patch_scores(image, text))

        return await self._run(job)

    async def write(self, prompt: str, max_new_tokens: int, timeout_s: float) -> str:
        """The writer's (language model's) completion of `prompt`, in the same bounded pool."""
        if self._writer.spec is None:
            raise RoleNotConfigured("no writer (language model) is configured on this server")

        def job() -> str:
            model: Writer = self._writer.get()
            return model.write(prompt, max_new_tokens, timeout_s)

        return await self._run(job)

    async def _run(self, job: Callable[[], T]) -> T:
        if not self._slots.acquire(blocking=False):
            raise ModelsBusy("the caption, question and statement models are busy; try again in a moment")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        finally:
            self._slots.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._captioner.close()
        self._answerer.close()
        self._entailer.close()
        self._patch_scorer.close()
        self._writer.close()
