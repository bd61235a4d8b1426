"""Fixtures for the web tests: a library indexed with tiny CLIP, tiny BLIP caption and VQA models, apps."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from images import draw, write_folder
from PIL import Image

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.indexer.texts import index_texts
from pixsearch.models import create
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.web import WebOptions, create_app

PHOTOS = 24
TEXTS = "a red circle\na blue square\na small green triangle\n"


@pytest.fixture(scope="session")
def caption_spec(tiny_blip_dirs: dict[str, Path]) -> str:
    return f"blip-caption:{tiny_blip_dirs['caption']}"


@pytest.fixture(scope="session")
def vqa_spec(tiny_blip_dirs: dict[str, Path]) -> str:
    return f"blip-vqa:{tiny_blip_dirs['vqa']}"


def exif_jpeg(path: Path, seed: int = 99) -> Path:
    """A JPEG with a date taken and a camera in its EXIF."""
    image = draw(seed, (96, 64))
    exif = Image.Exif()
    exif[0x010F] = "Pixcam"  # Make
    exif[0x0110] = "Pixcam One"  # Model
    exif[0x0132] = "2021:06:15 10:30:00"  # DateTime
    image.save(path, "JPEG", exif=exif.tobytes(), quality=90)
    return path


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 drawn PNGs, a copy of the first (a duplicate for deduplication), and an EXIF JPEG."""
    folder = tmp_path_factory.mktemp("web") / "photos"
    paths = write_folder(folder, PHOTOS)
    shutil.copy(paths[0], folder / "copy_of_img_0000.png")
    exif_jpeg(folder / "camera.jpg")
    return folder


@pytest.fixture(scope="session")
def library_dir(photos: Path, clip_spec: str) -> Path:
    root = photos.parent / "library"
    library = Library.open(root)
    encoder = create(clip_spec)
    Indexer(library, encoder, IndexOptions(workers=0, batch_size=8)).run([photos])
    texts = photos.parent / "captions.txt"
    texts.write_text(TEXTS, encoding="utf-8")
    index_texts(library, encoder, texts)
    library.close()
    return root


@pytest.fixture(scope="session")
def image_ids(library_dir: Path) -> dict[str, int]:
    """file name -> image id."""
    from sqlalchemy import select

    from pixsearch.storage.schema import ImageRow

    library = Library.open(library_dir)
    with library.session() as session:
        ids = {Path(path).name: image_id for image_id, path in session.execute(select(ImageRow.id, ImageRow.path))}
    library.close()
    return ids


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(library_dir: Path) -> Iterator[AppFactory]:
    """make_client(library=..., rerank_hook=..., raise_server_exceptions=..., **web options) -> a started TestClient."""
    clients: list[TestClient] = []

    def factory(
        library: Path | None = None, rerank_hook=None, tags_hook=None, raise_server_exceptions=True, **options
    ) -> TestClient:
        settings = Settings(library=library or library_dir)
        # tiny random models: scores carry no relevance and vectors are near-identical, so these tests
        # search by vectors alone; tests/web/test_web_query_language.py covers the hybrid options
        for name, value in (("cutoff_z", None), ("duplicate_threshold", None), ("keyword_weight", 0.0)):
            options.setdefault(name, value)
        app = create_app(settings, WebOptions(**options), rerank_hook=rerank_hook, tags_hook=tags_hook)
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


@pytest.fixture
def png_bytes() -> Callable[[int], bytes]:
    def encode(seed: int) -> bytes:
        buffer = io.BytesIO()
        draw(seed).save(buffer, "PNG")
        return buffer.getvalue()

    return encode


def iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@pytest.fixture
def fresh_library(library_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the indexed library (same photos), for tests that write captions or thumbnails."""
    target = tmp_path / "library"
    shutil.copytree(library_dir, target, ignore=shutil.ignore_patterns("captions.json", "thumbs"))
    return target


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real headless Chromium (skips when none is installed)")


@pytest.fixture(scope="session")
def tiny_ofa_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tiny_models import save_tiny_ofa

    return f"ofa-ve:{save_tiny_ofa(tmp_path_factory.mktemp('tiny-ofa') / 'ofa')}"
