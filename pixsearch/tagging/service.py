"""Tagging a library: `TaggingService(library, ...).run(progress)`.

Order of a run: keywords of existing XMP sidecars are imported (a person put them there), zero-shot
tags are made from the stored vectors, each photo is decoded once for the ImageNet tagger, OCR and
the entailment check, and last the tags are merged into XMP sidecars. Every step commits as it goes,
so an interrupted run keeps what it finished. With `only_new` each step handles only the photos
indexed since that step last ran (the marker is kept in the library's meta table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from pixsearch.errors import ConfigError, EmptyIndexError
from pixsearch.imageio import DEFAULT_MAX_PIXELS
from pixsearch.models import ModelOptions, Role, create
from pixsearch.models.roles import DualEncoder, Entailer, Tagger
from pixsearch.models.spec import ModelSpec
from pixsearch.storage import Library
from pixsearch.storage.schema import ImageRow, ModelRow
from pixsearch.tagging.imagenet import DEFAULT_SPEC, ImageNetTagger
from pixsearch.tagging.ocr import OcrReader
from pixsearch.tagging.steps import (
    ImagePass,
    Progress,
    TagProgress,
    TagReport,
    background_vectors,
    run_image_pass,
    run_xmp,
    run_zero_shot,
)
from pixsearch.tagging.vocabulary import Vocabulary
from pixsearch.tagging.zero_shot import ZeroShotOptions, ZeroShotTagger

log = logging.getLogger(__name__)

MAX_SOURCE = 200  # TagRow.source length


@dataclass(frozen=True)
class TagOptions:
    """What a tagging run does. `zero_shot` uses the library's own dual encoder."""

    zero_shot: bool = True
    imagenet: bool = False
    ocr: bool = False
    verify: bool = False
    write_xmp: bool = False
    import_xmp: bool = False
    vocabulary_files: tuple[Path, ...] = ()
    builtin_vocabulary: bool = True  # False: only the tags of `vocabulary_files`
    zero_shot_options: ZeroShotOptions = field(default_factory=ZeroShotOptions)
    imagenet_spec: str = DEFAULT_SPEC
    entailer: str | None = None  # an Entailer spec, e.g. ofa-ve:DIR; needed by `verify`
    contradiction: float = 0.5  # drop a model tag when P(contradiction) reaches this
    xmp_naming: str = "full"
    xmp_confirmed_only: bool = False
    only_new: bool = False
    batch_size: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS

    def check(self) -> None:
        if self.verify and not self.entailer:
            raise ConfigError(
                "--verify needs an entailment model: --entailer SPEC or PIXSEARCH_ENTAILER (e.g. ofa-ve:DIR)"
            )
        if not 0.0 < self.contradiction <= 1.0:
            raise ConfigError(f"the contradiction threshold must be in (0, 1], got {self.contradiction}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        self.zero_shot_options.check()


def source_name(kind: str, spec: str) -> str:
    return f"{kind}:{spec}"[:MAX_SOURCE]


class TaggingService:
    """Tags the photos of a library. Models are built from specs unless given (tests, `index --tag`)."""

    def __init__(
        self,
        library: Library,
        options: TagOptions | None = None,
        model_options: ModelOptions | None = None,
        *,
        encoder: DualEncoder | None = None,
        entailer: Entailer | None = None,
        imagenet: Tagger | None = None,
        ocr: OcrReader | None = None,
    ) -> None:
        self.library = library
        self.options = options or TagOptions()
        self.options.check()
        self.model_options = model_options or ModelOptions()
        self._encoder = encoder
        self._entailer = entailer
        self._imagenet = imagenet
        self._ocr = ocr
        self._vocabulary: Vocabulary | None = None

    @property
    def vocabulary(self) -> Vocabulary:
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.load(self.options.vocabulary_files, self.options.builtin_vocabulary)
        return self._vocabulary

    def run(self, progress: Progress | None = None, lock_wait_s: float = 0.0) -> TagReport:
        """Run the steps the options ask for over the library's photos, holding the library's writer lock.

        Raises:
            ConfigError: bad options or vocabulary. EmptyIndexError: zero-shot on a library with no model yet.
            ModelNotFoundError, ModelLoadError: a model cannot be loaded.
            LibraryBusyError: another process is writing to the library.
        """
        with self.library.writing("pixsearch tag", lock_wait_s):
            return self._run(progress or (lambda _p: None))

    def _run(self, notify: Progress) -> TagReport:
        options = self.options
        report = TagReport()
        if options.import_xmp:
            run_xmp(self.library, self._rows("xmp-import"), report, notify, write=False, read=True,
                    naming=options.xmp_naming, confirmed_only=False)  # fmt: skip
            self._mark("xmp-import")
        if options.zero_shot:
            self._zero_shot(report, notify)
        if options.imagenet or options.ocr or options.verify:
            self._image_pass(report, notify)
        if options.write_xmp:
            # every photo: a sidecar must follow tags edited by hand too, not only new photos
            run_xmp(self.library, self._rows(None), report, notify, write=True, read=False,
                    naming=options.xmp_naming, confirmed_only=options.xmp_confirmed_only)  # fmt: skip
        with self.library.session() as session:
            report.images = len(session.execute(select(ImageRow.id)).all())
        return report

    # -- steps ------------------------------------------------------------------------------
    def _zero_shot(self, report: TagReport, notify: Progress) -> None:
        model = self._model()
        encoder = self._encoder or create(model.spec, Role.DUAL_ENCODER, self.model_options)
        cache = self.library.root / "tags" / f"zero-shot-{model.key}-{self.vocabulary.fingerprint()}.npy"
        tagger = ZeroShotTagger(encoder, self.vocabulary, self.options.zero_shot_options, cache)
        notify(TagProgress("zero-shot", 0, 0))
        background = background_vectors(self.library, model.key, self.options.zero_shot_options.background_size)
        if background.shape[0] < 2:
            log.info("zero-shot: the library holds fewer than 2 vectors; nothing to calibrate on")
            return
        tagger.calibrate(background)
        step = f"zero-shot:{model.key}"
        rows = self._rows(step)
        run_zero_shot(self.library, tagger, model.key, rows, source_name("zero-shot", model.spec), report, notify)
        self._mark(step, rows)

    def _image_pass(self, report: TagReport, notify: Progress) -> None:
        options = self.options
        steps = [
            name
            for name, on in (("imagenet", options.imagenet), ("ocr", options.ocr), ("verify", options.verify))
            if on
        ]
        work = ImagePass(
            imagenet=self._imagenet_tagger() if options.imagenet else None,
            imagenet_source=options.imagenet_spec[:MAX_SOURCE],
            ocr=(self._ocr or OcrReader()) if options.ocr else None,
            entailer=self._entailer_model() if options.verify else None,
            vocabulary=self.vocabulary if options.verify else None,
            contradiction=options.contradiction,
            max_pixels=options.max_pixels,
            batch_size=options.batch_size,
        )
        rows = self._rows(*steps)
        run_image_pass(self.library, work, rows, report, notify)
        for step in steps:
            self._mark(step, rows)

    def _imagenet_tagger(self) -> Tagger:
        if self._imagenet is None:
            self._imagenet = ImageNetTagger(ModelSpec.parse(self.options.imagenet_spec), self.model_options)
        return self._imagenet

    def _entailer_model(self) -> Entailer:
        if self._entailer is None:
            assert self.options.entailer is not None
            self._entailer = create(self.options.entailer, Role.ENTAILER, self.model_options)
        self._entailer.load()
        return self._entailer

    # -- selection ---------------------------------------------------------------------------
    def _model(self) -> ModelRow:
        with self.library.session() as session:
            model = self.library.active_model(session)
        if model is None:
            raise EmptyIndexError(f"library {self.library.root} has no photos indexed yet; run `pixsearch index` first")
        return model

    def _rows(self, *steps: str | None) -> list[ImageRow]:
        """All photos, or with only_new those indexed after the earliest marker of `steps`."""
        with self.library.session() as session:
            query = select(ImageRow).order_by(ImageRow.id)
            if self.options.only_new and steps and None not in steps:
                marks = [self.library.get_meta(session, f"tagging:{step}") for step in steps]
                if all(marks):
                    query = query.where(ImageRow.indexed_at > min(datetime.fromisoformat(m) for m in marks))
            return list(session.execute(query).scalars())

    def _mark(self, step: str, rows: list[ImageRow] | None = None) -> None:
        """Remember the newest `indexed_at` a step has handled."""
        if rows is None:
            rows = self._rows(None)
        if rows:
            with self.library.session() as session:
                previous = self.library.get_meta(session, f"tagging:{step}")
                newest = max(row.indexed_at for row in rows)
                if previous is None or datetime.fromisoformat(previous) < newest:
                    self.library.set_meta(session, f"tagging:{step}", newest.isoformat())


def tag_after_index(
    library: Library, encoder: DualEncoder, progress: Progress | None = None, options: TagOptions | None = None
) -> TagReport:
    """Zero-shot tags for the photos indexed since the last tagging, with the encoder that indexed them
    (`pixsearch index --tag`)."""
    options = options or TagOptions(only_new=True)
    return TaggingService(library, options, encoder=encoder).run(progress)
