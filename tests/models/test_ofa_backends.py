"""The `ofa-ve` backend on a tiny random OFA directory, loaded through the real spec path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from tiny_models import save_tiny_ofa

from pixsearch.errors import ConfigError, ModelLoadError, ModelNotFoundError
from pixsearch.models import Entailer, ModelOptions, Role, create
from pixsearch.models.ofa.backends import OfaEntailer

OPTIONS = ModelOptions(dtype="float32")
STATEMENTS = ["a red circle", "two birds", "What colour is the square?", "no no no", ""]


def _write_tiny_ofa(folder: Path) -> Path:
    return save_tiny_ofa(folder)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny_ofa(tmp_path_factory.mktemp("tiny-ofa"))


@pytest.fixture(scope="module")
def entailer(tiny_dir: Path) -> OfaEntailer:
    backend = create(f"ofa-ve:{tiny_dir}", role=Role.ENTAILER, options=OPTIONS)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def image() -> Image.Image:
    picture = Image.new("RGB", (50, 40), "white")
    ImageDraw.Draw(picture).ellipse((5, 5, 30, 30), fill="red")
    return picture


def test_registry_builds_an_entailer_without_loading() -> None:
    backend = create("ofa-ve:/nowhere/ofa-model", role=Role.ENTAILER, options=OPTIONS)
    assert isinstance(backend, OfaEntailer) and isinstance(backend, Entailer)
    with pytest.raises(ModelNotFoundError):
        backend.load()


def test_judge_gives_a_distribution_over_the_three_relations(entailer: OfaEntailer, image: Image.Image) -> None:
    for statement in STATEMENTS:
        probs = entailer.judge(image, statement)
        assert set(probs) == {"entailment", "neutral", "contradiction"}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        traverse = entailer.analyze(image, statement).traverse
        by_answer = dict(zip(entailer.engine.answers, traverse.probs.tolist(), strict=True))
        assert probs["entailment"] == pytest.approx(by_answer["yes"], abs=1e-6)
        assert probs["neutral"] == pytest.approx(by_answer["maybe"], abs=1e-6)
        assert probs["contradiction"] == pytest.approx(by_answer["no"], abs=1e-6)


def test_labels_are_only_ever_the_three_answers(entailer: OfaEntailer, image: Image.Image) -> None:
    # the tiny BPE splits some answers into several tokens, which the trie must handle
    assert max(len(tokens) for tokens in entailer.engine.answer_tokens) > 1
    for statement in STATEMENTS:
        for gen_type in ("generation", "traverse"):
            assert entailer.pipeline_label(image, statement, gen_type) in {"yes", "no", "maybe"}


def test_pipeline_output_follows_modelscope(entailer: OfaEntailer, image: Image.Image) -> None:
    assert entailer.default_gen_type == "traverse"  # this directory's configuration.json
    default = entailer.pipeline_output(image, "a red circle")
    assert isinstance(default["labels"], str) and 0.0 < default["scores"] <= 1.0
    generated = entailer.pipeline_output(image, "a red circle", "generation")
    assert len(generated["labels"]) == 1 and generated["scores"] == [1.0]
    with pytest.raises(ConfigError):
        entailer.pipeline_output(image, "a red circle", "sampling")


def test_load_is_idempotent_and_close_frees(tiny_dir: Path, image: Image.Image) -> None:
    backend = OfaEntailer(create(f"ofa-ve:{tiny_dir}", options=OPTIONS).spec, OPTIONS)
    backend.load()
    engine = backend.engine
    backend.load()
    assert backend.engine is engine
    backend.close()
    assert backend._engine is None
    assert set(backend.judge(image, "a dog")) == {"entailment", "neutral", "contradiction"}


def _copy_with_state(tiny_dir: Path, target: Path, edit) -> Path:
    shutil.copytree(tiny_dir, target)
    state = torch.load(target / "pytorch_model.bin", weights_only=True)
    edit(state)
    torch.save(state, target / "pytorch_model.bin")
    return target


def test_a_stray_key_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    folder = _copy_with_state(
        tiny_dir, tmp_path / "stray", lambda s: s.update({"decoder.extra_head.weight": torch.ones(3)})
    )
    with pytest.raises(ModelLoadError, match=r"unexpected keys: decoder\.extra_head\.weight"):
        OfaEntailer(create(f"ofa-ve:{folder}", options=OPTIONS).spec, OPTIONS).load()


def test_tied_embedding_stored_once_loads(tiny_dir: Path, tmp_path: Path, image: Image.Image) -> None:
    def keep_one(state: dict) -> None:
        del state["decoder.embed_tokens.weight"], state["decoder.output_projection.weight"]

    folder = _copy_with_state(tiny_dir, tmp_path / "tied", keep_one)
    backend = create(f"ofa-ve:{folder}", options=OPTIONS)
    model = backend.engine.model
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight


def test_unsupported_configuration_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "zh"
    shutil.copytree(tiny_dir, folder)
    task = json.loads((folder / "configuration.json").read_text())
    task["model"]["language"] = "zh"
    (folder / "configuration.json").write_text(json.dumps(task))
    with pytest.raises(ModelLoadError, match="language"):
        create(f"ofa-ve:{folder}", options=OPTIONS).load()
