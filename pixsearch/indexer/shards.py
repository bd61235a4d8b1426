"""Vector shards: batches of embedded photos kept as files until a library's writer merges them.

A Ray job (`indexer.ray_job`) streams its results back to the driver, which writes each batch to
`<library>/shards/` and then merges it in one transaction, deleting the file after the commit.
A driver killed between the two leaves the file behind; the next run of any kind merges it before
it scans. Merging skips photos already stored with the same bytes (`writer.not_stored`), so a shard
merged twice, or after its photos were indexed again, changes nothing.

A shard is an `.npz` file: `vectors` float32[n, d], and `meta`, a JSON text with the model key,
the photos' rows (path, content hash, size, mtime, size in pixels, EXIF date and camera) and the
files that failed. Only numpy is needed to read one: a library left with shards by a Ray job can be
finished by a plain `pixsearch index`.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pixsearch.atomic import TMP_SUFFIX, write_atomic
from pixsearch.errors import LibraryError
from pixsearch.indexer.decode import Failure, PhotoFacts

log = logging.getLogger(__name__)

FOLDER = "shards"
SUFFIX = ".npz"
FORMAT = 1


@dataclass
class EmbeddedBatch:
    """Photos with their vectors (row i of `vectors` is `photos[i]`'s), and the files that failed."""

    photos: list[PhotoFacts]
    vectors: npt.NDArray[np.float32]
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class Shard:
    model_key: str
    batch: EmbeddedBatch


def folder_of(library_root: Path) -> Path:
    return Path(library_root) / FOLDER


def write_shard(path: Path, model_key: str, batch: EmbeddedBatch) -> Path:
    """Write `batch` to `path` atomically (a reader sees the whole shard or none)."""
    vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(batch.photos):
        raise ValueError(f"shard {path}: {len(batch.photos)} photos but vectors of shape {vectors.shape}")
    meta = {
        "format": FORMAT,
        "model_key": model_key,
        "photos": [_photo_row(photo) for photo in batch.photos],
        "failures": [[failure.path, failure.reason] for failure in batch.failures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda handle: np.savez(handle, vectors=vectors, meta=np.array(json.dumps(meta))))
    return path


def read_shard(path: Path) -> Shard:
    """Raises:
    LibraryError: the file is not a shard this version can read (the message names it and why).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            vectors = np.ascontiguousarray(data["vectors"], dtype=np.float32)
            meta = json.loads(str(data["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, this version reads {FORMAT}")
        photos = [_photo_of(row) for row in meta["photos"]]
        failures = [Failure(str(p), str(reason)) for p, reason in meta["failures"]]
        if vectors.ndim != 2 or vectors.shape[0] != len(photos):
            raise ValueError(f"{len(photos)} photos but vectors of shape {vectors.shape}")
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:
        raise LibraryError(f"shard {path} is unreadable: {error}") from error
    return Shard(str(meta["model_key"]), EmbeddedBatch(photos, vectors, failures))


def pending(folder: Path) -> list[Path]:
    """The shards waiting in `folder`, oldest name first; temp files of a killed writer are removed.

    Call only with the library's writer lock held: no one else writes here then.
    """
    if not folder.is_dir():
        return []
    for leftover in folder.glob(f".*{TMP_SUFFIX}"):
        log.info("removing %s, left by an interrupted run", leftover)
        leftover.unlink(missing_ok=True)
    return sorted(folder.glob(f"*{SUFFIX}"))


def _photo_row(photo: PhotoFacts) -> list:
    taken = photo.taken_at.isoformat() if photo.taken_at else None
    return [photo.path, photo.content_hash, photo.size, photo.mtime, photo.width, photo.height, taken, photo.camera]


def _photo_of(row: list) -> PhotoFacts:
    path, content_hash, size, mtime, width, height, taken, camera = row
    return PhotoFacts(
        str(path),
        str(content_hash),
        int(size),
        float(mtime),
        int(width),
        int(height),
        datetime.fromisoformat(taken) if taken else None,
        None if camera is None else str(camera),
    )
