from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.storage import IMAGES, Library
from pixsearch.storage.schema import Embedding, ImageRow


@pytest.fixture(scope="session")
def encoder(clip_spec: str):
    return create(clip_spec)


@pytest.fixture
def library(tmp_path: Path) -> Library:
    return Library.open(tmp_path / "library")


def run_index(library: Library, encoder, folder: Path, **options):
    options.setdefault("workers", 0)
    options.setdefault("batch_size", 4)
    return Indexer(library, encoder, IndexOptions(**options)).run([folder])


def rows(library: Library) -> dict[str, tuple[int, int]]:
    """path -> (image id, embedding id)."""
    with library.session() as session:
        query = select(ImageRow.path, ImageRow.id, Embedding.id).join(Embedding, Embedding.image_id == ImageRow.id)
        return {path: (image_id, vector_id) for path, image_id, vector_id in session.execute(query)}


def assert_consistent(library: Library) -> None:
    """Every image has exactly one vector, and the saved index holds exactly those vector ids."""
    with library.session() as session:
        model = library.active_model(session)
        image_ids = session.execute(select(ImageRow.id)).scalars().all()
        vector_rows = session.execute(select(Embedding.image_id, Embedding.id)).all()
    assert sorted(image_ids) == sorted(image_id for image_id, _ in vector_rows)
    index = library.load_index(IMAGES, model)
    assert sorted(index.ids().tolist()) == sorted(vector_id for _, vector_id in vector_rows)
    assert np.unique(index.ids()).size == len(index)
