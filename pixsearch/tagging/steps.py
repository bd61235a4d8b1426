"""The steps of a tagging run, each over a list of image rows: zero-shot from stored vectors, the
per-image pass (ImageNet tags, OCR, entailment checks) and the XMP sidecars."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from pixsearch.errors import BadImageError, ConfigError
from pixsearch.models.roles import Entailer, Tagger
from pixsearch.photos import load_photo
from pixsearch.storage import Library
from pixsearch.storage.annotations import (
    CONFIRMED,
    REJECTED,
    SUGGESTED,
    set_ocr_text,
    set_tag_state,
    suggest_tags,
)
from pixsearch.storage.annotations import tags_of as stored_tags
from pixsearch.storage.schema import Embedding, ImageRow
from pixsearch.tagging.ocr import ENGINE, OcrReader
from pixsearch.tagging.vocabulary import Vocabulary
from pixsearch.tagging.xmp import XmpError, read_sidecar, sidecar_path, write_sidecar
from pixsearch.tagging.zero_shot import ZeroShotTagger

log = logging.getLogger(__name__)

OCR_SOURCE = "ocr"
XMP_SOURCE = "xmp"
TEXT_TAG = "text"


@dataclass(frozen=True)
class TagProgress:
    phase: str  # "zero-shot", "images", "xmp"
    done: int
    total: int


Progress = Callable[[TagProgress], None]


@dataclass
class TagReport:
    images: int = 0
    tagged: dict[str, int] = field(default_factory=dict)  # source -> photos given at least one tag
    ocr_found: int = 0  # photos in which text was read
    checked: int = 0  # model tags the entailer judged
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (path, tag) contradicted by the entailer
    xmp_written: int = 0
    xmp_unchanged: int = 0
    xmp_imported: int = 0  # keywords from sidecars that became confirmed tags
    xmp_removed: int = 0  # keywords pixsearch wrote that a person since removed from a sidecar: now removed tags
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def count(self, source: str, tags: Sequence[object]) -> None:
        if tags:
            self.tagged[source] = self.tagged.get(source, 0) + 1


def _vector_chunks(
    library: Library, model_key: str, ids: Sequence[int], size: int
) -> Iterator[tuple[list[int], np.ndarray]]:
    for start in range(0, len(ids), size):
        chunk = list(ids[start : start + size])
        with library.session() as session:
            rows = session.execute(
                select(Embedding.image_id, Embedding.vector).where(
                    Embedding.model_key == model_key, Embedding.image_id.in_(chunk)
                )
            ).all()
        if rows:
            yield (
                [r[0] for r in rows],
                np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1),
            )


def background_vectors(library: Library, model_key: str, limit: int) -> np.ndarray:
    """An evenly spaced sample of at most `limit` of the library's stored photo vectors."""
    with library.session() as session:
        ids = (
            session.execute(
                select(Embedding.image_id).where(Embedding.model_key == model_key).order_by(Embedding.image_id)
            )
            .scalars()
            .all()
        )
    if len(ids) > limit:
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, limit).round().astype(int)]
    parts = [vectors for _ids, vectors in _vector_chunks(library, model_key, ids, 500)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def run_zero_shot(
    library: Library, tagger: ZeroShotTagger, model_key: str, rows: Sequence[ImageRow], source: str,
    report: TagReport, progress: Progress, chunk: int = 512,
) -> None:  # fmt: skip
    """Zero-shot tags from the stored vectors (no image is decoded), committed per chunk."""
    paths = {row.id: row.path for row in rows}
    done = 0
    for ids, vectors in _vector_chunks(library, model_key, list(paths), chunk):
        tags = tagger.tag_vectors(vectors)
        with library.session() as session:
            for image_id, found in zip(ids, tags, strict=True):
                suggest_tags(session, image_id, found, source)
                report.count(source, found)
        done += len(ids)
        progress(TagProgress("zero-shot", done, len(paths)))
    missing = len(paths) - done
    if missing:
        log.info("%d photos have no vector under the library's model; zero-shot skipped them", missing)


@dataclass
class ImagePass:
    """What the per-image pass runs; any of them may be None."""

    imagenet: Tagger | None = None
    imagenet_source: str = "imagenet"
    ocr: OcrReader | None = None
    entailer: Entailer | None = None
    vocabulary: Vocabulary | None = None
    contradiction: float = 0.5
    max_pixels: int = 100_000_000
    batch_size: int = 16


def _decoded(
    library: Library, rows: Sequence[ImageRow], max_pixels: int, report: TagReport
) -> list[tuple[ImageRow, Image.Image]]:
    out = []
    for row in rows:
        try:
            out.append((row, load_photo(library, row.path, max_pixels, draft=1024)))
        except BadImageError as error:
            report.skipped.append((row.path, error.reason))
    return out


def run_image_pass(
    library: Library, work: ImagePass, rows: Sequence[ImageRow], report: TagReport, progress: Progress
) -> None:
    """Decode each photo once and run the ImageNet tagger, OCR and the entailment check on it."""
    for start in range(0, len(rows), work.batch_size):
        batch = _decoded(library, rows[start : start + work.batch_size], work.max_pixels, report)
        if batch and work.imagenet is not None:
            found = work.imagenet.tag([image for _row, image in batch])
            with library.session() as session:
                for (row, _image), tags in zip(batch, found, strict=True):
                    suggest_tags(session, row.id, tags, work.imagenet_source)
                    report.count(work.imagenet_source, tags)
        for row, image in batch:
            if work.ocr is not None:
                _read_text(library, work.ocr, row, image, report)
            if work.entailer is not None:
                _verify(library, work, row, image, report)
        progress(TagProgress("images", min(start + work.batch_size, len(rows)), len(rows)))


def _read_text(library: Library, reader: OcrReader, row: ImageRow, image: Image.Image, report: TagReport) -> None:
    result = reader.read(image)
    with library.session() as session:
        set_ocr_text(session, row.id, result.text, ENGINE)
        suggest_tags(session, row.id, [(TEXT_TAG, round(result.score, 4))] if result.lines else [], OCR_SOURCE)
    report.ocr_found += bool(result.lines)


def _verify(library: Library, work: ImagePass, row: ImageRow, image: Image.Image, report: TagReport) -> None:
    """Ask the entailer about every model suggestion; drop the ones it contradicts. Confirmed tags
    (a person's) are never asked about and never dropped."""
    assert work.entailer is not None
    vocabulary = work.vocabulary or Vocabulary(())
    with library.session() as session:
        suggested = [t for t in stored_tags(session, row.id) if t.state == SUGGESTED]
    by_source: dict[str, list[tuple[str, float]]] = defaultdict(list)
    dropped_any = False
    for tag in suggested:
        verdict = work.entailer.judge(image, vocabulary.statement(tag.name))
        report.checked += 1
        if verdict.get("contradiction", 0.0) >= work.contradiction:
            report.dropped.append((row.path, tag.name))
            dropped_any = True
        else:
            by_source[tag.source].append((tag.name, tag.score if tag.score is not None else 0.0))
    if dropped_any:
        with library.session() as session:
            for source in {t.source for t in suggested}:
                # suggest_tags replaces what `source` suggested: the contradicted ones go, the rest stay
                suggest_tags(session, row.id, by_source.get(source, []), source)


def run_xmp(
    library: Library, rows: Sequence[ImageRow], report: TagReport, progress: Progress, *,
    write: bool, read: bool, naming: str, confirmed_only: bool,
) -> None:  # fmt: skip
    """Import keywords of existing sidecars as confirmed tags (`read`), then merge tags into them (`write`)."""
    for done, row in enumerate(rows, start=1):
        photo = Path(row.path)
        try:
            if read:
                _import(library, row, sidecar_path(photo, naming), report)
            if write:
                with library.session() as session:
                    tags = [t.name for t in stored_tags(session, row.id) if not confirmed_only or t.state == CONFIRMED]
                update = write_sidecar(photo, tags, naming)
                report.xmp_written += update.changed
                report.xmp_unchanged += not update.changed
        except XmpError as error:
            report.skipped.append((row.path, str(error)))
        if done % 64 == 0 or done == len(rows):
            progress(TagProgress("xmp", done, len(rows)))


def _fold(keyword: str) -> str:
    return " ".join(keyword.split()).casefold()


def _import(library: Library, row: ImageRow, path: Path, report: TagReport) -> None:
    """A sidecar's keywords become confirmed tags, except those pixsearch wrote itself; a keyword
    pixsearch wrote that is gone from the sidecar was removed by a person in another program, so
    the tag is removed here too. A person's earlier removal or confirmation in pixsearch stands."""
    sidecar = read_sidecar(path)
    present = {_fold(k) for k in sidecar.keywords}
    wanted = [k for k in sidecar.keywords if _fold(k) not in sidecar.written]
    dropped = sidecar.written - present
    if not wanted and not dropped:
        return
    with library.session() as session:
        stored = stored_tags(session, row.id, include_rejected=True)
        existing = {_fold(t.name): t for t in stored}
        for keyword in wanted:
            current = existing.get(_fold(keyword))
            if current is None or current.state == SUGGESTED:
                try:
                    set_tag_state(session, row.id, keyword, CONFIRMED, source=XMP_SOURCE)
                except ConfigError as error:  # longer than a tag may be: that keyword alone is left out
                    report.skipped.append((str(path), f"keyword not imported: {error}"))
                    continue
                report.xmp_imported += 1
        for tag in stored:
            if _fold(tag.name) in dropped and tag.state != REJECTED:
                set_tag_state(session, row.id, tag.name, REJECTED, source=XMP_SOURCE)
                report.xmp_removed += 1
