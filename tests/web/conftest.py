"""Fixtures for the web tests: a library indexed with tiny CLIP, tiny BLIP caption and VQA models, apps."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import torch
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
BLIP_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] a the red blue green circle square triangle on white background "
    "what color is how many shapes are in picture ? of and yes no 1 2 3 small big photo there"
).split()


def _save_tiny_blip(model_name: str, directory: Path, seed: int) -> Path:
    """A random BLIP (hidden 32, 2 layers) saved like a checkpoint, weights redrawn so outputs vary."""
    import transformers
    from transformers import BertTokenizer, BlipConfig
    from transformers.models.blip import BlipImageProcessorPil

    special = {name: BLIP_VOCAB.index(token) for name, token in (("pad", "[PAD]"), ("dec", "[DEC]"), ("sep", "[SEP]"))}
    text = dict(
        vocab_size=len(BLIP_VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=special["pad"],
        bos_token_id=special["dec"],
        sep_token_id=special["sep"],
        eos_token_id=special["sep"],
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(
        BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif "LayerNorm" in name or "layer_norm" in name:
                param.copy_(1 + 0.2 * noise)
            else:
                param.copy_(0.1 * noise)
    model.save_pretrained(directory)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(BLIP_VOCAB) + "\n")
    BertTokenizer(vocab=str(vocab_file), bos_token="[DEC]").save_pretrained(directory)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def caption_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"blip-caption:{_save_tiny_blip('BlipForConditionalGeneration', tmp_path_factory.mktemp('blip-cap'), 1)}"


@pytest.fixture(scope="session")
def vqa_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"blip-vqa:{_save_tiny_blip('BlipForQuestionAnswering', tmp_path_factory.mktemp('blip-vqa'), 2)}"


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
