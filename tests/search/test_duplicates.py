"""Near-identical groups are tight: every member is within the threshold of its group's representative,
so a chain of photos each like the next never becomes one group."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from images import write_folder
from sqlalchemy import select

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.duplicates import find_duplicates
from pixsearch.storage import IMAGES, Library
from pixsearch.storage.schema import Embedding

log = logging.getLogger(__name__)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _chain(dim: int = 16) -> np.ndarray:
    """A ~ B ~ C ~ D: 10 degrees apart in a plane, so neighbours are 0.985 alike and A, D only 0.866."""
    angles = np.radians([0.0, 10.0, 20.0, 30.0])
    rows = np.zeros((4, dim))
    rows[:, 0], rows[:, 1] = np.cos(angles), np.sin(angles)
    return _unit(rows)


def _random_walk(count: int, dim: int = 16, step: float = 0.04, seed: int = 0) -> np.ndarray:
    """A generated library in which every photo is a small step from the one before (a burst that drifts)."""
    rng = np.random.default_rng(seed)
    rows = np.cumsum(rng.normal(0, step, (count, dim)), axis=0) + rng.normal(0, 1, dim)
    return _unit(rows)


@pytest.fixture
def library_with(tmp_path: Path, clip_spec: str):
    """library_with(vectors) -> a SearchService over a library whose stored vectors are `vectors`."""

    def make(vectors: np.ndarray) -> SearchService:
        write_folder(tmp_path / "photos", len(vectors))
        library = Library.open(tmp_path / "library")
        Indexer(library, create(clip_spec), IndexOptions(workers=0, batch_size=64)).run([tmp_path / "photos"])
        with library.session() as session:
            rows = session.execute(select(Embedding).order_by(Embedding.image_id)).scalars().all()
            padded = np.zeros((len(vectors), len(np.frombuffer(rows[0].vector, np.float32))), np.float32)
            padded[:, : vectors.shape[1]] = vectors
            for row, vector in zip(rows, padded, strict=True):
                row.vector = vector.tobytes()
            model = library.active_model(session)
            library.bump_generation(session, IMAGES, model.key)  # vectors changed: the index must follow
        return SearchService(library)

    return make


def _min_similarity_to_representative(groups) -> float:
    return min(hit.score for group in groups for hit in group)


def test_a_chain_of_alike_photos_is_not_one_group(library_with) -> None:
    service = library_with(_chain())
    threshold = float(np.cos(np.radians(12.0)))  # A~B, B~C, C~D; not A~C, nor A~D
    groups = find_duplicates(service, threshold)
    assert groups and all(len(group) < 4 for group in groups)
    assert _min_similarity_to_representative(groups) >= threshold
    assert all(group[0].score == pytest.approx(1.0) for group in groups)  # the representative comes first


def test_groups_of_a_drifting_library_stay_tight(library_with) -> None:
    vectors = _random_walk(400)
    service = library_with(vectors)
    groups = find_duplicates(service, 0.95)
    worst = _min_similarity_to_representative(groups)
    log.info("400 drifting photos: %d groups, largest %d, min member-to-representative %.3f",
             len(groups), max(map(len, groups)), worst)  # fmt: skip
    assert worst >= 0.95 and len(groups) > 1  # connected components made one group of all 400, worst 0.79
    members = [hit.image_id for group in groups for hit in group]
    assert len(members) == len(set(members))  # no photo in two groups
