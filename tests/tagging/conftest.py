"""Fixtures of the tagging tests: a small indexed library (tiny CLIP), a small vocabulary, a tiny OFA."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from images import write_folder
from sqlalchemy import select

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.storage import Library
from pixsearch.storage.schema import ImageRow

VOCABULARY = """# a small test vocabulary
[thing]
circle
square
triangle
dog
cat
car
tree
[mass]
grass
water
[scene]
beach
forest
[condition]
night = at night
"""


@pytest.fixture(scope="session")
def vocabulary_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vocabulary") / "tags.txt"
    path.write_text(VOCABULARY, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def indexed_library(tmp_path_factory: pytest.TempPathFactory, clip_spec: str) -> Path:
    """A library of 16 drawn photos indexed with the tiny CLIP (copy it before writing to it)."""
    root = tmp_path_factory.mktemp("tagging")
    write_folder(root / "photos", 16)
    library = Library.open(root / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0, batch_size=8)).run([root / "photos"])
    library.close()
    return root


@pytest.fixture
def library_copy(indexed_library: Path, tmp_path: Path) -> Callable[[], tuple[Library, Path]]:
    """make() -> (an open private copy of the indexed library, its own copy of the photos folder)."""
    opened: list[Library] = []

    def make() -> tuple[Library, Path]:
        target = tmp_path / f"copy{len(opened)}"
        shutil.copytree(indexed_library, target)
        library = Library.open(target / "library")
        with library.session() as session:  # the copy's rows still name the original photos
            for row in session.execute(select(ImageRow)).scalars():
                row.path = str(target / "photos" / Path(row.path).name)
            library.add_photo_roots(session, [target / "photos"])  # photos are read only below it
        opened.append(library)
        return library, target / "photos"

    yield make
    for library in opened:
        library.close()


@pytest.fixture(scope="session")
def tiny_ofa_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tiny_models import save_tiny_ofa

    return f"ofa-ve:{save_tiny_ofa(tmp_path_factory.mktemp('tiny-ofa') / 'ofa')}"


@pytest.fixture(scope="session")
def world_model(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic world's tiny CLIP (tests/search/world_model.py), shared with tests/search."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "search"))
    from world_model import train_world_model

    return train_world_model(tmp_path_factory.getbasetemp() / "world-model")
