"""mPLUG backends: on tiny random ModelScope-layout directories, and on the conformance fixtures when present."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny_models import save_tiny_mplug

from pixsearch.errors import ConfigError, ModelLoadError, ModelNotFoundError
from pixsearch.models import registry
from pixsearch.models.mplug.backends import MplugAnswerer, MplugCaptioner, MplugDualEncoder, MplugItmReranker
from pixsearch.models.mplug.config import CAPTION, RETRIEVAL, VQA
from pixsearch.models.mplug.modeling import RUN_PARTS
from pixsearch.models.mplug.pipeline import MplugPipeline
from pixsearch.models.mplug.tokenizer import join_cjk
from pixsearch.models.preprocess import ImageTransform, transform_id
from pixsearch.models.roles import Answerer, Captioner, DualEncoder, Reranker, Role, Tower
from pixsearch.models.spec import ModelOptions, ModelSpec

FLOAT32 = ModelOptions(dtype="float32")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run many small ops: one thread is faster, and far faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mplug")
    return {task: save_tiny_mplug(root / task, task, seed) for seed, task in enumerate((RETRIEVAL, VQA, CAPTION))}


def shapes() -> list[Image.Image]:
    images = []
    for colour, size in (("red", (40, 40)), ("blue", (50, 30)), ("green", (30, 45))):
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).ellipse((5, 5, size[0] - 5, size[1] - 5), fill=colour)
        images.append(image)
    return images


@pytest.mark.parametrize(
    ("name", "cls", "role", "protocol"),
    [
        ("mplug", MplugDualEncoder, Role.DUAL_ENCODER, DualEncoder),
        ("mplug-itm", MplugItmReranker, Role.RERANKER, Reranker),
        ("mplug-vqa", MplugAnswerer, Role.ANSWERER, Answerer),
        ("mplug-caption", MplugCaptioner, Role.CAPTIONER, Captioner),
    ],
)
def test_registry_builds_each_backend_without_touching_disk(
    name: str, cls: type, role: Role, protocol: type, tiny: dict[str, Path]
) -> None:
    backend = registry.create(f"{name}:/nowhere/mplug", role)
    assert type(backend) is cls
    with pytest.raises(ModelNotFoundError, match="/nowhere/mplug"):
        backend.load()
    # (on Python 3.11 isinstance reads the protocol's properties, e.g. `dim`, which need the config files)
    task = {Role.ANSWERER: VQA, Role.CAPTIONER: CAPTION}.get(role, RETRIEVAL)
    assert isinstance(registry.create(f"{name}:{tiny[task]}", role), protocol)


def test_a_directory_of_another_task_is_refused(tiny: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="holds a image-text-retrieval model"):
        MplugAnswerer(ModelSpec("mplug-vqa", str(tiny[RETRIEVAL])), FLOAT32).load()


def test_dual_encoder_loads_towers_on_demand_and_embeds(tiny: dict[str, Path]) -> None:
    encoder = MplugDualEncoder(ModelSpec("mplug", str(tiny[RETRIEVAL])), FLOAT32)
    assert encoder.dim == 8
    assert encoder.transform == ImageTransform(32, "squash", "bicubic")
    assert encoder.preprocess_id == transform_id(ImageTransform(32, "squash", "bicubic"))
    encoder.load_towers(Tower.TEXT)
    assert encoder.model.parts == RUN_PARTS["itc-text"]
    texts = encoder.encode_texts(["a red circle", "a blue dog ?", "狗 在 跑"])
    assert texts.shape == (3, 8) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)
    images = encoder.encode_images(shapes())  # loads the image tower next to the text tower
    assert encoder.model.parts == RUN_PARTS["itc"]
    pixels = np.stack([encoder.transform(image) for image in shapes()])
    np.testing.assert_allclose(encoder.encode_pixels(pixels), images, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_texts(["a blue dog ?"])[0], texts[1], atol=1e-6)
    assert encoder.encode_texts([]).shape == (0, 8)
    with pytest.raises(ValueError, match=r"\[n, 3, 32, 32\]"):
        encoder.encode_pixels(np.zeros((1, 3, 16, 16), dtype=np.float32))
    encoder.close()
    assert encoder._model is None


def test_reranker_caches_image_features_and_scores_match_pipeline(tiny: dict[str, Path]) -> None:
    reranker = MplugItmReranker(ModelSpec("mplug-itm", str(tiny[RETRIEVAL])), FLOAT32)
    features = reranker.image_features(shapes())
    assert len(features) == 3 and all(f.shape == (5, 32) and f.device.type == "cpu" for f in features)
    scores = reranker.score_features("a red circle", features)
    assert scores.shape == (3,) and scores.dtype == np.float32
    np.testing.assert_allclose(reranker.score("a red circle", shapes()), scores, atol=1e-5)
    np.testing.assert_allclose(reranker.score_features("a red circle", features[1:2]), scores[1:2], atol=1e-5)
    assert reranker.score_features("a red circle", []).shape == (0,)
    logits = reranker.pair_logits("a red circle", features)
    assert reranker.model.parts == RUN_PARTS["itm"]
    output = MplugPipeline(RETRIEVAL, tiny[RETRIEVAL])({"image": shapes()[0], "question": "a red circle"})
    np.testing.assert_allclose(output["scores"], torch.softmax(torch.from_numpy(logits[0]), 0).numpy(), atol=1e-5)


def test_answerer_returns_the_beam_nbest_as_probabilities(tiny: dict[str, Path]) -> None:
    answerer = MplugAnswerer(ModelSpec("mplug-vqa", str(tiny[VQA])), FLOAT32)
    image = shapes()[0]
    answers = answerer.answer(image, "a red dog ?", top_k=5)
    hyps = answerer.hypotheses([image], ["a red dog ?"])[0]
    assert 1 <= len(answers) <= 3  # beam_size 3
    assert answers[0][0] == answerer.tokenizer.decode(hyps[0].ids, cjk=True)
    assert all(0.0 < p <= 1.0 for _, p in answers) and sum(p for _, p in answers) <= 1.0 + 1e-9
    assert answerer.answer(image, "a red dog ?", top_k=1) == answers[:1]
    pipeline = MplugPipeline(None, tiny[VQA])
    assert pipeline({"image": image, "question": "a red dog ?"}) == {"text": answerer.tokenizer.decode(hyps[0].ids)}
    (greedy,) = answerer.hypotheses([image], ["a red dog ?"], greedy=True)[0]
    assert greedy.ids[0] == answerer.tokenizer.cls_id and len(greedy.ids) <= 6


def test_captioner_batches_like_single_calls(tiny: dict[str, Path]) -> None:
    captioner = MplugCaptioner(ModelSpec("mplug-caption", str(tiny[CAPTION])), FLOAT32)
    batch = captioner.caption(shapes())
    assert batch == [captioner.caption([image])[0] for image in shapes()]
    assert captioner.model.parts == RUN_PARTS[CAPTION]  # no text encoder or fusion for captions
    pipeline = MplugPipeline(CAPTION, tiny[CAPTION])
    raw = [pipeline(image)["caption"] for image in shapes()]  # ModelScope's decoding: spaces between CJK
    assert batch == [join_cjk(text) for text in raw]


def test_pipeline_rejects_unknown_tasks_and_inputs(tiny: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="image-classification"):
        MplugPipeline("image-classification", tiny[VQA])
    with pytest.raises(ConfigError, match="'question'"):
        MplugPipeline(VQA, tiny[VQA])({"image": shapes()[0]})


def test_a_stray_key_in_a_tiny_checkpoint_is_named(tiny: dict[str, Path], tmp_path: Path) -> None:
    directory = save_tiny_mplug(tmp_path / "stray", RETRIEVAL, 0)
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    state["model.fusion_encoder.encoder.layer.2.surprise"] = torch.zeros(1)
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"fusion_encoder\.encoder\.layer\.2\.surprise"):
        MplugItmReranker(ModelSpec("mplug-itm", str(directory)), FLOAT32).load()


FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "mplug" / "manifest.json").is_file(), reason=f"mPLUG fixtures folder absent: {FIXTURES / 'mplug'}"
)


def fixture_images() -> list[Image.Image]:
    entries = json.loads((FIXTURES / "inputs.json").read_text())["images"]
    return [Image.open(FIXTURES / entry["file"]).convert("RGB") for entry in entries]


def fixture_texts() -> list[str]:
    return json.loads((FIXTURES / "inputs.json").read_text())["texts"]


@needs_fixtures
def test_fixture_dual_encoder_and_reranker_match_modelscope() -> None:
    source = str(FIXTURES / "mplug" / RETRIEVAL)
    ref = np.load(FIXTURES / "mplug" / f"{RETRIEVAL}.npz")
    images, texts = fixture_images(), fixture_texts()
    encoder = MplugDualEncoder(ModelSpec("mplug", source), FLOAT32)
    np.testing.assert_allclose(encoder.encode_images(images), ref["itc_image_embeds"], atol=1e-4)
    np.testing.assert_allclose(encoder.encode_texts(texts), ref["itc_text_embeds"], atol=1e-4)
    reranker = MplugItmReranker(ModelSpec("mplug-itm", source), FLOAT32)
    features = reranker.image_features(images)
    for j, text in enumerate(texts):
        rows = ref["pair_text_index"] == j
        np.testing.assert_allclose(reranker.score_features(text, features), ref["itm_logits"][rows, 1], atol=1e-4)


@needs_fixtures
def test_fixture_answerer_and_captioner_match_modelscope() -> None:
    images, texts = fixture_images(), fixture_texts()
    vqa = np.load(FIXTURES / "mplug" / f"{VQA}.npz")
    answerer = MplugAnswerer(ModelSpec("mplug-vqa", str(FIXTURES / "mplug" / VQA)), FLOAT32)
    for i, j, expected in zip(vqa["pair_image_index"], vqa["pair_text_index"], vqa["generated_text"], strict=True):
        assert answerer.answer(images[i], texts[j], top_k=3)[0][0] == str(expected)
    captions = np.load(FIXTURES / "mplug" / f"{CAPTION}.npz")["generated_text"]
    captioner = MplugCaptioner(ModelSpec("mplug-caption", str(FIXTURES / "mplug" / CAPTION)), FLOAT32)
    assert captioner.caption(images) == [str(c) for c in captions]
