"""An indexing run: scan, diff, hash, apply moves and deletions, then decode and embed in
checkpointed batches. A run killed at any point loses at most the batch in flight.

Decoding and embedding run here (a pool of decode processes and the model in this process) or,
with `IndexOptions.ray`, as a Ray Data job whose results come back as shards (`indexer.shards`);
everything else, the writes included, is the same code in both cases.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixsearch.errors import LibraryError
from pixsearch.indexer import shards, writer
from pixsearch.indexer.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DecodeOptions,
    Failure,
    Hashed,
    Prepared,
    ReadOptions,
    hash_file,
    prepare,
)
from pixsearch.indexer.diff import Actions, compare_scan, resolve
from pixsearch.indexer.pool import bounded_map, default_workers, make_executor
from pixsearch.indexer.ray_job import RayOptions
from pixsearch.indexer.scan import Entry, Problem, check_roots, scan
from pixsearch.models.preprocess import stack
from pixsearch.models.roles import DualEncoder, Tower
from pixsearch.storage.ann import IndexChoice
from pixsearch.storage.library import IMAGES, Library
from pixsearch.storage.schema import ModelRow
from pixsearch.storage.vector_index import VectorIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexOptions:
    batch_size: int = 32
    workers: int | None = None  # None: one per CPU core; 0: decode in this process
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft: bool = True
    reindex: bool = False  # allow switching the library to another model
    save_every_s: float = 300.0  # write the FAISS file at least this often during a long run
    max_bytes: int = DEFAULT_MAX_BYTES  # larger files are refused before they are read
    lock_wait_s: float = 0.0  # how long to wait for another writer of the library to finish
    ray: RayOptions | None = None  # decode and embed on a Ray cluster instead of in this process
    index_choice: IndexChoice | None = None  # ask the library for this index type from now on (None: keep)


@dataclass(frozen=True)
class Progress:
    phase: str  # "scan", "hash", "embed"
    done: int
    total: int


@dataclass
class IndexReport:
    scanned: int = 0
    unchanged: int = 0
    embedded: int = 0
    touched: int = 0
    moved: int = 0
    copied: int = 0
    removed: int = 0
    skipped: list[Failure] = field(default_factory=list)
    embed_seconds: float = 0.0
    switch_missing: int = 0  # re-index: images (outside these folders) still without a vector of the new model
    recovered: int = 0  # photos merged from the shards of an interrupted Ray run

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0


ProgressCallback = Callable[[Progress], None]


class Indexer:
    """Indexes folders into a library with one dual encoder."""

    def __init__(self, library: Library, encoder: DualEncoder, options: IndexOptions | None = None) -> None:
        self.library = library
        self.encoder = encoder
        self.options = options or IndexOptions()
        self._index: VectorIndex | None = None
        self._model: ModelRow | None = None
        self._last_save = 0.0

    def run(self, roots: Sequence[Path], progress: ProgressCallback | None = None) -> IndexReport:
        """Bring the library in step with `roots`.

        Raises:
            ConfigError: a root is not a folder.
            ModelMismatchError: the library was made with another model and reindex is off.
            LibraryBusyError: another process is writing to the library.
        """
        folders = check_roots(roots)
        with self.library.writing("pixsearch index", self.options.lock_wait_s):
            return self._run(folders, progress or (lambda _p: None))

    def _run(self, folders: list[Path], notify: ProgressCallback) -> IndexReport:
        self._prepare_model()
        report = IndexReport()
        self._merge_leftover_shards(report)
        entries, problems = self._scan(folders, notify)
        report.scanned = len(entries)
        report.skipped.extend(Failure(p.path, p.reason) for p in problems)
        with self.library.session() as session:
            self.library.add_photo_roots(session, folders)
            known = writer.known_images(session, [str(f) for f in folders], self._model.key)
            by_hash = writer.vectors_by_hash(session, self._model.key)
        scanned = compare_scan(entries, known)
        report.unchanged = scanned.unchanged
        workers = default_workers() if self.options.workers is None else self.options.workers
        read = ReadOptions(
            roots=tuple(str(f) for f in folders), max_bytes=self.options.max_bytes
        )  # files are opened only below these, through no link
        with make_executor(workers) as executor:
            hashed = self._hash(executor, scanned.to_hash, read, report, notify)
            actions = resolve(hashed, known, scanned.gone, by_hash)
            self._apply(actions, report)
            self._embed(executor, actions.embed + scanned.missing_vector, read, report, notify)
        with self.library.session() as session:
            writer.replace_failures(session, [str(f) for f in folders], report.skipped)
            if self.options.reindex:
                report.switch_missing = self.library.complete_switch(session, self._model.key)
        self._save()
        return report

    # -- steps ----------------------------------------------------------------------------
    def _prepare_model(self) -> None:
        if self.options.ray is None:  # a Ray run loads the model in its actors only
            self.encoder.load_towers(Tower.IMAGE)
        with self.library.session() as session:
            self._model = self.library.use_model(
                session, str(self.encoder.spec), self.encoder.preprocess_id, self.encoder.dim, self.options.reindex
            )
            if self.options.index_choice is not None:  # built at the next save
                self.library.set_index_choice(session, self.options.index_choice)
        self._index = self.library.load_index(IMAGES, self._model)
        self._last_save = time.monotonic()

    def _scan(self, folders: list[Path], notify: ProgressCallback) -> tuple[list[Entry], list[Problem]]:
        entries: list[Entry] = []
        problems: list[Problem] = []
        for found in scan(folders, exclude=self.library.root):
            if isinstance(found, Entry):
                entries.append(found)
                if len(entries) % 1000 == 0:
                    notify(Progress("scan", len(entries), 0))
            else:
                problems.append(found)
        notify(Progress("scan", len(entries), len(entries)))
        return entries, problems

    def _hash(
        self, executor, to_hash: list[Entry], read: ReadOptions, report: IndexReport, notify: ProgressCallback
    ) -> list[Hashed]:
        hashed: list[Hashed] = []
        paths = (entry.path for entry in to_hash)
        hash_one = functools.partial(hash_file, read=read)
        for done, result in enumerate(bounded_map(executor, hash_one, paths, window=64), start=1):
            if isinstance(result, Failure):
                report.skipped.append(result)
            else:
                hashed.append(result)
            if done % 64 == 0 or done == len(to_hash):
                notify(Progress("hash", done, len(to_hash)))
        return hashed

    def _apply(self, actions: Actions, report: IndexReport) -> None:
        """Moves, copies, touches and deletions: one transaction, no model needed."""
        if not (actions.touch or actions.move or actions.copy or actions.delete):
            return
        with self.library.session() as session:
            for image_id, item in actions.touch:
                writer.touch(session, image_id, item)
            for image_id, item in actions.move:
                writer.move(session, image_id, item)
            writer.delete_images(session, actions.delete, self._index)
            session.flush()
            for source_id, item in actions.copy:
                writer.copy(session, source_id, item, self._model.key, self._index)
            if actions.delete:  # every model's vectors of those images went
                self.library.bump_all_generations(session, IMAGES)
            else:
                self.library.bump_generation(session, IMAGES, self._model.key)
            self._index.generation = self.library.generation(session, IMAGES, self._model.key)
        report.touched, report.moved = len(actions.touch), len(actions.move)
        report.copied, report.removed = len(actions.copy), len(actions.delete)

    def _embed(
        self, executor, paths: list[str], read: ReadOptions, report: IndexReport, notify: ProgressCallback
    ) -> None:
        if not paths:
            return
        decode = DecodeOptions(self.encoder.transform, self.options.max_pixels, self.options.draft, read)
        if self.options.ray is None:
            batches = self._embed_here(executor, paths, decode)
        else:
            batches = self._embed_on_ray(paths, decode)
        done = 0
        started = time.perf_counter()
        with contextlib.closing(batches):  # on an error, stop the decoders or the Ray job at once
            for batch in batches:
                report.embedded += self._store(batch)
                report.skipped.extend(batch.failures)
                done += len(batch.photos) + len(batch.failures)
                notify(Progress("embed", done, len(paths)))
                if time.monotonic() - self._last_save > self.options.save_every_s:
                    self._save()
        report.embed_seconds = time.perf_counter() - started
        notify(Progress("embed", len(paths), len(paths)))

    def _embed_here(self, executor, paths: list[str], decode: DecodeOptions) -> Iterator[shards.EmbeddedBatch]:
        prepare_one = functools.partial(prepare, options=decode)
        window = max(2 * self.options.batch_size, 8)
        for batch, failures in _batches(bounded_map(executor, prepare_one, paths, window), self.options.batch_size):
            if batch:
                with torch.inference_mode():
                    vectors = self.encoder.encode_pixels(stack([item.pixels for item in batch]))
            else:
                vectors = np.zeros((0, self.encoder.dim), dtype=np.float32)
            yield shards.EmbeddedBatch(list(batch), vectors, failures)

    def _embed_on_ray(self, paths: list[str], decode: DecodeOptions) -> Iterator[shards.EmbeddedBatch]:
        from pixsearch.indexer.ray_job import EmbedJob, embed_to_shards

        job = EmbedJob(str(self.encoder.spec), self._model.key, self._model.dim, decode, self.options.batch_size)
        folder = shards.folder_of(self.library.root)
        yield from self._shard_batches(embed_to_shards(self.options.ray, job, paths, folder))

    def _merge_leftover_shards(self, report: IndexReport) -> None:
        """Shards an interrupted Ray run wrote but did not merge: merged as if that run had finished."""
        for batch in self._shard_batches(shards.pending(shards.folder_of(self.library.root))):
            report.recovered += self._store(batch)
        if report.recovered:
            log.info("merged %d photos from the shards of an interrupted run", report.recovered)

    def _shard_batches(self, paths: Iterable[Path]) -> Iterator[shards.EmbeddedBatch]:
        """Each shard's batch; the file is deleted when the caller asks for the next one, that is, once
        it has stored this one (a run killed before that merges the shard again, harmlessly)."""
        for path in paths:
            try:
                shard = shards.read_shard(path)
            except LibraryError as error:
                log.warning("%s; discarding it (its photos are embedded again)", error)
                path.unlink(missing_ok=True)
                continue
            if shard.model_key == self._model.key:
                yield shard.batch
            else:
                log.warning("shard %s holds vectors of another model (%s); discarding it", path, shard.model_key)
            path.unlink(missing_ok=True)

    def _store(self, batch: shards.EmbeddedBatch) -> int:
        """One batch in one transaction: its new vectors, its failures and a generation bump.
        Photos already stored with the same bytes are left as they are; returns how many were stored."""
        with self.library.session() as session:
            keep = writer.not_stored(session, batch.photos, self._model.key) if batch.photos else []
            roots = self.library.photo_roots(session)  # a stray shard's rows outside them are never served
            keep = [i for i in keep if writer.under(batch.photos[i].path, roots)]
            if keep:
                photos = [batch.photos[i] for i in keep]
                writer.store_embedded(session, photos, batch.vectors[keep], self._model.key, self._index)
                self._index.generation = self.library.bump_generation(session, IMAGES, self._model.key)
            writer.record_failures(session, batch.failures)
        return len(keep)

    def _save(self) -> None:
        self.library.save_index(IMAGES, self._model.key, self._index)
        self._last_save = time.monotonic()


def _batches(results: Iterator[Prepared | Failure], size: int) -> Iterator[tuple[list[Prepared], list[Failure]]]:
    """Decoded files in batches of `size`, each with the failures met since the previous batch."""
    batch: list[Prepared] = []
    failures: list[Failure] = []
    for result in results:
        if isinstance(result, Failure):
            failures.append(result)
            continue
        batch.append(result)
        if len(batch) == size:
            yield batch, failures
            batch, failures = [], []
    if batch or failures:
        yield batch, failures
