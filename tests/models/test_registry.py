from __future__ import annotations

import pytest

from pixsearch.errors import ConfigError, ModelNotFoundError, UnknownBackendError
from pixsearch.models import ModelSpec, Role, backends, create
from pixsearch.models.hub import resolve_source


def test_spec_parses_backend_and_source() -> None:
    spec = ModelSpec.parse("clip:openai/clip-vit-base-patch32")
    assert (spec.backend, spec.source) == ("clip", "openai/clip-vit-base-patch32")
    assert str(spec) == "clip:openai/clip-vit-base-patch32"


@pytest.mark.parametrize("text", ["clip", "clip:", ":dir", ""])
def test_malformed_spec_is_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="backend:source"):
        ModelSpec.parse(text)


def test_unknown_backend_lists_known_ones() -> None:
    with pytest.raises(UnknownBackendError) as info:
        create("nope:x")
    message = str(info.value)
    for name in ("clip", "siglip", "chinese-clip", "blip-itm", "vle-itm", "mplug", "ofa-ve"):
        assert name in message


def test_wrong_role_is_rejected() -> None:
    with pytest.raises(ConfigError, match="dual-encoder"):
        create("blip-itm:/nowhere", role=Role.DUAL_ENCODER)


def test_every_role_has_a_backend() -> None:
    for role in (Role.DUAL_ENCODER, Role.RERANKER, Role.CAPTIONER, Role.ANSWERER, Role.ENTAILER):
        assert backends(role), role


def test_constructor_loads_nothing(tmp_path) -> None:
    # the directory does not exist: building must still succeed, loading must fail clearly
    encoder = create(f"clip:{tmp_path / 'missing'}")
    with pytest.raises(ModelNotFoundError) as info:
        encoder.encode_texts(["a dog"])
    assert f"clip:{tmp_path / 'missing'}" in str(info.value)


def test_missing_hub_model_fails_fast_offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError) as info:
        resolve_source(ModelSpec.parse("clip:someone/no-such-model"))
    message = str(info.value)
    assert "clip:someone/no-such-model" in message and "local" in message and "DIR" in message


def test_directory_missing_required_file(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_source(ModelSpec.parse(f"clip:{tmp_path}"), required=("config.json",))


def test_modelscope_ids_point_to_modelscope() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_source(ModelSpec.parse("mplug-vqa:damo/mplug_visual-question-answering_coco_large_en"))
    assert "modelscope download" in str(info.value) and "mplug-vqa:DIR" in str(info.value)
