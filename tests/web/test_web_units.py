"""Web options, the caption store, the model pool and the server factory, without HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from pixsearch.errors import ConfigError, UnknownBackendError
from pixsearch.settings import Settings
from pixsearch.storage import Library, keywords
from pixsearch.storage.schema import ImageRow
from pixsearch.web import WebOptions, create_app
from pixsearch.web.captions import MODEL, USER, CaptionStore, import_legacy_json
from pixsearch.web.models import ModelPool, ModelsBusy, RoleNotConfigured
from pixsearch.web.options import DEFAULT_MAX_UPLOAD
from pixsearch.web.server import _is_loopback, make_server


def test_options_from_the_environment() -> None:
    env = {
        "PIXSEARCH_CAPTIONER": "blip-caption:/models/cap",
        "PIXSEARCH_ANSWERER": "blip-vqa:Salesforce/blip-vqa-base",
        "PIXSEARCH_API_KEY": "0123456789",
        "PIXSEARCH_ALLOW_IMAGE_URL": "yes",
        "PIXSEARCH_MAX_UPLOAD_BYTES": "5000",
        "PIXSEARCH_MIN_SCORE": "0.2",
        "PIXSEARCH_CORS_ORIGINS": "http://localhost:3005, https://example.org",
        "PIXSEARCH_RERANKER": "",
    }
    options = WebOptions.from_env(env, thumbnail_size=128)
    assert options.captioner == "blip-caption:/models/cap" and options.answerer.startswith("blip-vqa:")
    assert options.reranker is None and options.api_key == "0123456789" and options.writes_enabled
    assert options.allow_image_url is True and options.max_upload_bytes == 5000 and options.min_score == 0.2
    assert options.cors_origins == ("http://localhost:3005", "https://example.org") and options.thumbnail_size == 128
    defaults = WebOptions.from_env({})
    assert defaults.api_key is None and not defaults.writes_enabled and not defaults.allow_image_url
    assert defaults.max_upload_bytes == DEFAULT_MAX_UPLOAD and defaults.min_score is None


@pytest.mark.parametrize(
    "env, words",
    [
        ({"PIXSEARCH_MAX_UPLOAD_BYTES": "lots"}, "not an integer"),
        ({"PIXSEARCH_MIN_SCORE": "high"}, "not a number"),
        ({"PIXSEARCH_ALLOW_IMAGE_URL": "perhaps"}, "yes/no"),
        ({"PIXSEARCH_CAPTIONER": "blip-vqa:x"}, "captioner"),
        ({"PIXSEARCH_ANSWERER": "nonsense"}, "backend:source"),
        ({"PIXSEARCH_API_KEY": "short"}, "8 characters"),
        ({"PIXSEARCH_MAX_UPLOAD_BYTES": "10"}, "1024"),
        ({"PIXSEARCH_THUMBNAIL_SIZE": "5000"}, "thumbnail size"),
        ({"PIXSEARCH_MODEL_WORKERS": "0"}, "model workers"),
    ],
)
def test_bad_options_fail_at_start_up(env, words) -> None:
    with pytest.raises(ConfigError, match=words):
        WebOptions.from_env(env)


def test_create_app_checks_everything_first(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackendError, match="known backends"):
        create_app(Settings(library=tmp_path / "lib"), WebOptions(reranker="nope:x"))
    with pytest.raises(ConfigError, match="batch size"):
        create_app(Settings(library=tmp_path / "lib", batch_size=0))
    assert not (tmp_path / "lib").exists()  # nothing was created before the checks passed


def _one_image_library(root: Path) -> Library:
    library = Library.open(root)
    with library.session() as session:
        session.add(ImageRow(path="/p/a.jpg", content_hash="ab" * 16, size=1, mtime=0, width=1, height=1,
                             indexed_at=datetime.now()))  # fmt: skip
    return library


def test_caption_store_keeps_captions_in_the_database(tmp_path: Path) -> None:
    library = _one_image_library(tmp_path / "lib")
    row = SimpleNamespace(id=1, content_hash="ab" * 16)
    store = CaptionStore(library)
    assert store.get(row, "blip-caption:x") is None
    made = store.put(row, "a dog", MODEL, "blip-caption:x")
    assert made.is_current("blip-caption:x") and not made.is_current("blip-caption:y") and not made.is_current(None)
    again = CaptionStore(library)
    assert again.get(row, "blip-caption:x") == made and again.get(row, "blip-caption:y") is None
    mine = store.put(row, "my dog", USER, None)
    assert mine.source == USER and mine.is_current(None)
    assert again.get(row, "blip-caption:x") == mine and again.get(row, None) == mine  # a person's caption wins
    with library.session() as session:  # and the keyword index finds it
        assert keywords.search(session, keywords.KeywordQuery(include=("dog",)), 5) != []
    assert list((tmp_path / "lib").glob("captions*")) == []


def test_a_remembered_caption_is_shown_but_never_stored(tmp_path: Path) -> None:
    library = _one_image_library(tmp_path / "lib")
    row = SimpleNamespace(id=1, content_hash="ab" * 16)
    store = CaptionStore(library, remembered=2)
    kept = store.remember(row, "a cat", "blip-caption:x")
    assert not kept.stored and store.get(row, "blip-caption:x") == kept
    assert store.get(row, "blip-caption:y") is None and CaptionStore(library).get(row, "blip-caption:x") is None
    assert store.get(SimpleNamespace(id=1, content_hash="cd" * 16), "blip-caption:x") is None  # other bytes
    for other in (2, 3):  # the oldest goes first
        store.remember(SimpleNamespace(id=other, content_hash="ab" * 16), "x", "blip-caption:x")
    assert store.get(row, "blip-caption:x") is None


def test_an_old_caption_file_moves_into_the_database(tmp_path: Path) -> None:
    library = _one_image_library(tmp_path / "lib")
    old = {
        "version": 1,
        "captions": {
            "ab" * 16: {"text": "by hand", "source": USER, "model": None, "created_at": "2024-01-01T00:00:00+00:00"},
            "cd" * 16: {"text": "no such image", "source": MODEL, "model": "m:x", "created_at": "2024-01-01"},
        },
    }
    (tmp_path / "lib" / "captions.json").write_text(json.dumps(old))
    assert import_legacy_json(library) == 1
    assert CaptionStore(library).get(SimpleNamespace(id=1), None).text == "by hand"
    assert (tmp_path / "lib" / "captions.json.imported").exists() and not (tmp_path / "lib" / "captions.json").exists()
    assert import_legacy_json(library) == 0  # once only


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": 99, "captions": {}}), "[]"])
def test_a_broken_old_caption_file_is_left_alone(tmp_path: Path, content: str) -> None:
    library = _one_image_library(tmp_path / "lib")
    path = tmp_path / "lib" / "captions.json"
    path.write_text(content)
    assert import_legacy_json(library) == 0
    assert path.read_text() == content


class _SlowCaptioner:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def load(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def caption(self, images) -> list[str]:
        self.started.set()
        assert self.release.wait(10)
        return ["done"] * len(images)


def test_model_pool_is_bounded_and_off_the_event_loop() -> None:
    pool = ModelPool("blip-caption:/unused", None, options=None, workers=1, max_pending=1)  # type: ignore[arg-type]
    slow = _SlowCaptioner()
    pool._captioner._model = slow  # as if already loaded
    image = Image.new("RGB", (8, 8))

    async def scenario() -> tuple[str, str]:
        first = asyncio.create_task(pool.caption(lambda: image))
        await asyncio.to_thread(slow.started.wait, 10)  # the loop stays free while the model works
        with pytest.raises(ModelsBusy):
            await pool.caption(lambda: image)
        with pytest.raises(RoleNotConfigured, match="answerer"):
            await pool.answer(lambda: image, "why?", 3)
        slow.release.set()
        return await first, await pool.caption(lambda: image)

    try:
        assert asyncio.run(scenario()) == ("done", "done")
    finally:
        pool.close()
    assert slow.closed


def test_server_binds_to_loopback_by_default(tmp_path: Path) -> None:
    server = make_server(Settings(library=tmp_path / "lib"))
    assert server.config.host == "127.0.0.1" and server.config.port == 8000
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("example.org")
