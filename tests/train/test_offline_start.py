"""Without the hub: the missing-model message says how to go on (a local folder, or the demo), and a
failed `pixsearch index` leaves no library behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pixsearch.cli import main
from pixsearch.errors import ModelNotFoundError
from pixsearch.models import Role, create

ABSENT = "pixsearch-tests/no-such-model"  # a hub id that is in no cache


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_missing_model_message_names_the_option_and_the_demo(offline: None) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        create(f"clip:{ABSENT}", Role.DUAL_ENCODER).load()
    message = str(caught.value)
    assert f"clip:{ABSENT}" in message
    assert f"hf download {ABSENT} --local-dir DIR" in message
    assert "--model clip:DIR" in message
    assert "pixsearch demo" in message


def test_unreachable_hub_message_names_the_option_and_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreachable(repo_id: str, **kwargs: object) -> str:
        raise OSError(f"cannot reach the hub for {repo_id}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelNotFoundError) as caught:
        create(f"blip-itm:{ABSENT}", Role.RERANKER).load()
    message = str(caught.value)
    assert "could not be fetched from the hub (OSError)" in message
    assert "--rerank blip-itm:DIR" in message and "pixsearch demo" in message


def test_a_folder_that_is_not_there_gets_the_same_advice() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        create("clip:/nonexistent/clip-folder", Role.DUAL_ENCODER).load()
    assert "no directory at /nonexistent/clip-folder" in str(caught.value)
    assert "--model clip:DIR" in str(caught.value) and "pixsearch demo" in str(caught.value)


def test_index_without_the_hub_leaves_no_library(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), "red").save(photos / "red.png")
    library = tmp_path / "library"
    code = main(["index", str(photos), "--library", str(library), "--model", f"clip:{ABSENT}"])
    assert code != 0
    assert "--model clip:DIR" in capsys.readouterr().err
    assert not library.exists()
