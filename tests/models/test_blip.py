"""BLIP backends on tiny random checkpoints, loaded through the real spec path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny_models import save_tiny_blip
from transformers import (
    BertTokenizer,
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipForQuestionAnswering,
)
from transformers.models.blip import BlipImageProcessorPil

from pixsearch.errors import ConfigError, ModelLoadError, ModelNotFoundError
from pixsearch.models import Answerer, Captioner, Reranker, Role, create
from pixsearch.models.blip_loading import SdpaTextAttention, SdpaVisionAttention

IMAGE_SIZE = 32
QUERY = "a red circle on a white background"


@pytest.fixture(scope="session")
def blip_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("blip")
    return {
        kind: save_tiny_blip(root / kind, kind, seed, IMAGE_SIZE) for seed, kind in enumerate(("itm", "caption", "vqa"))
    }


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    red = Image.new("RGB", (80, 80), "white")
    ImageDraw.Draw(red).ellipse((10, 10, 70, 70), fill="red")
    blue = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(blue).rectangle((30, 14, 66, 50), fill="blue")
    green = Image.new("RGB", (64, 96), "white")
    ImageDraw.Draw(green).polygon([(32, 10), (60, 86), (4, 86)], fill="green")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    return [red, blue, green, noise.convert("L")]


@pytest.fixture(scope="session")
def reranker(blip_dirs):
    model = create(f"blip-itm:{blip_dirs['itm']}", role=Role.RERANKER)
    model.batch_size = 3  # 4 images then span two chunks
    return model


def test_backends_satisfy_their_protocols(blip_dirs):
    assert isinstance(create(f"blip-itm:{blip_dirs['itm']}"), Reranker)
    assert isinstance(create(f"blip-caption:{blip_dirs['caption']}"), Captioner)
    assert isinstance(create(f"blip-vqa:{blip_dirs['vqa']}"), Answerer)


def test_transform_matches_blip_image_processor(reranker, blip_dirs, images):
    # BlipImageProcessor needs torchvision (absent); its PIL twin is what it falls back to without it
    processor = BlipImageProcessorPil.from_pretrained(blip_dirs["itm"])
    expected = processor(images=images, return_tensors="np")["pixel_values"]
    ours = np.stack([reranker.transform(image) for image in images])
    assert ours.shape == expected.shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_cached_feature_logits_equal_model_forward(reranker, blip_dirs, images):
    reference = BlipForImageTextRetrieval.from_pretrained(blip_dirs["itm"], attn_implementation="eager").eval()
    tokenizer = BertTokenizer.from_pretrained(blip_dirs["itm"])
    pixels = _pixels(blip_dirs["itm"], images)
    tokens = tokenizer([QUERY] * len(images), return_tensors="pt")
    with torch.no_grad():
        expected = reference(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels,
            use_itm_head=True,
        ).itm_score.numpy()
        expected_vision = reference.vision_model(pixel_values=pixels).last_hidden_state.numpy()

    features = reranker.image_features(images)
    assert isinstance(reranker._blip.model.vision_model.encoder.layers[0].self_attn, SdpaVisionAttention)
    assert isinstance(reranker._blip.model.text_encoder.encoder.layer[0].crossattention.self, SdpaTextAttention)
    np.testing.assert_allclose(np.stack([f.numpy() for f in features]), expected_vision, atol=1e-5, rtol=0)
    assert reranker._blip.model.state_dict().keys() == reference.state_dict().keys()  # the swap renames nothing
    np.testing.assert_allclose(reranker.itm_logits(QUERY, features), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(reranker.score_features(QUERY, features), expected[:, 1], atol=1e-5, rtol=0)
    assert np.ptp(expected[:, 1]) > 1e-3, "random weights should separate the images"


def test_features_are_cpu_tensors_owning_their_memory(reranker, images):
    features = reranker.image_features(images[:2])
    tokens = (IMAGE_SIZE // 8) ** 2 + 1
    for feature in features:
        assert feature.device.type == "cpu" and feature.shape == (tokens, 32)
        assert feature.untyped_storage().nbytes() == feature.numel() * feature.element_size()


def test_scores_are_float32_and_independent_of_batching(reranker, images):
    scores = reranker.score(QUERY, images)
    assert scores.dtype == np.float32 and scores.shape == (len(images),)
    one_by_one = np.concatenate([reranker.score(QUERY, [image]) for image in images])
    np.testing.assert_allclose(scores, one_by_one, atol=1e-5, rtol=0)
    assert list(np.argsort(scores)) == list(np.argsort(one_by_one))
    features = reranker.image_features(images)
    reversed_scores = reranker.score_features(QUERY, features[::-1])
    np.testing.assert_allclose(reversed_scores[::-1], scores, atol=1e-5, rtol=0)


def test_score_texts_equals_one_text_at_a_time(reranker, images):
    texts = [QUERY, "a blue square", "what color is the triangle?", "green", "a small red circle and a big square"]
    feature = reranker.image_features(images[:1])[0]
    batched = reranker.score_texts(feature, texts)  # padded to the longest text, in chunks of 3
    assert batched.dtype == np.float32 and batched.shape == (len(texts),)
    one_by_one = np.concatenate([reranker.score_features(text, [feature]) for text in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)
    assert reranker.score_texts(feature, []).shape == (0,)


def test_float16_cached_features_still_score(reranker, images):
    features = reranker.image_features(images)
    full = reranker.score_features(QUERY, features)
    half = reranker.score_features(QUERY, [f.half().numpy() for f in features])
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=5e-2)
    probs = reranker.match_probabilities(QUERY, features)
    assert probs.shape == (len(images),) and np.all((probs >= 0) & (probs <= 1))


def test_empty_and_malformed_features(reranker):
    assert reranker.score_features(QUERY, []).shape == (0,)
    assert reranker.score(QUERY, []).dtype == np.float32
    with pytest.raises(ConfigError, match=r"\[tokens, 32\]"):
        reranker.score_features(QUERY, [torch.zeros(17, 48)])


def test_load_is_idempotent_and_close_frees(blip_dirs, images):
    model = create(f"blip-itm:{blip_dirs['itm']}", role=Role.RERANKER)
    assert model._loaded is None  # the constructor loads nothing
    model.load()
    first = model._loaded.model
    model.load()
    assert model._loaded.model is first
    before = model.score(QUERY, images[:1])
    model.close()
    assert model._loaded is None
    np.testing.assert_allclose(model.score(QUERY, images[:1]), before, atol=1e-6)


def _pixels(directory: Path, images: list[Image.Image]) -> torch.Tensor:
    processor = BlipImageProcessorPil.from_pretrained(directory)
    return torch.from_numpy(processor(images=images, return_tensors="np")["pixel_values"])


def test_captions_are_deterministic_strings(blip_dirs, images):
    captioner = create(f"blip-caption:{blip_dirs['caption']}", role=Role.CAPTIONER)
    captioner.batch_size = 2
    captions = captioner.caption(images)
    assert len(captions) == len(images)
    assert all(isinstance(c, str) and c and "[" not in c for c in captions)
    assert captioner.caption(images) == captions
    assert [captioner.caption([image])[0] for image in images] == captions
    assert captioner.caption([]) == []


def test_captions_equal_eager_transformers_generate(blip_dirs, images):
    captioner = create(f"blip-caption:{blip_dirs['caption']}", role=Role.CAPTIONER)
    reference = BlipForConditionalGeneration.from_pretrained(blip_dirs["caption"], attn_implementation="eager").eval()
    settings = captioner.generation
    with torch.no_grad():
        ids = reference.generate(
            pixel_values=_pixels(blip_dirs["caption"], images[:2]),
            do_sample=False,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
        )
    tokenizer = BertTokenizer.from_pretrained(blip_dirs["caption"])
    expected = [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert captioner.caption(images[:2]) == expected


def test_vqa_returns_top_k_sorted_probabilities(blip_dirs, images):
    answerer = create(f"blip-vqa:{blip_dirs['vqa']}", role=Role.ANSWERER)
    answers = answerer.answer(images[2], "what color is the triangle?", top_k=3)
    assert len(answers) == 3
    texts = [text for text, _ in answers]
    probs = [prob for _, prob in answers]
    assert len(set(texts)) == 3 and all(isinstance(t, str) and t and "[" not in t for t in texts)
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    assert probs == sorted(probs, reverse=True)
    assert answerer.answer(images[2], "what color is the triangle?", top_k=3) == answers
    assert answerer.answer(images[2], "what color is the triangle?", top_k=1) == answers[:1]
    with pytest.raises(ConfigError):
        answerer.answer(images[2], "what color?", top_k=0)


def test_vqa_beams_equal_eager_transformers_generate(blip_dirs, images):
    answerer = create(f"blip-vqa:{blip_dirs['vqa']}", role=Role.ANSWERER)
    question = "how many shapes are in the picture?"
    reference = BlipForQuestionAnswering.from_pretrained(blip_dirs["vqa"], attn_implementation="eager").eval()
    tokens = BertTokenizer.from_pretrained(blip_dirs["vqa"])([question], return_tensors="pt")
    with torch.no_grad():
        output = reference.generate(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=_pixels(blip_dirs["vqa"], images[:1]),
            num_beams=10,
            num_return_sequences=10,
            max_new_tokens=answerer.generation.max_new_tokens,
            min_new_tokens=answerer.generation.min_new_tokens,
            length_penalty=0.0,
            early_stopping=True,
            output_scores=True,
            return_dict_in_generate=True,
        )
    # by definition: beams whose texts are equal (special tokens dropped) pool their probabilities
    expected: dict[str, float] = {}
    texts = BertTokenizer.from_pretrained(blip_dirs["vqa"]).batch_decode(output.sequences, skip_special_tokens=True)
    for text, score in zip(texts, output.sequences_scores.exp().tolist(), strict=True):
        expected[text.strip()] = expected.get(text.strip(), 0.0) + score
    answers = answerer.answer(images[0], question, top_k=5)
    assert len(answers) == min(5, len(expected))
    for text, prob in answers:
        assert prob == pytest.approx(expected[text], rel=1e-4)
    assert min(prob for _, prob in answers) >= sorted(expected.values(), reverse=True)[len(answers) - 1] * (1 - 1e-4)


@pytest.mark.parametrize("backend", ["blip-itm", "blip-caption", "blip-vqa"])
def test_missing_directory_names_the_spec(backend, tmp_path):
    spec = f"{backend}:{tmp_path / 'absent'}"
    model = create(spec)
    with pytest.raises(ModelNotFoundError, match=spec):
        model.load()


def test_wrong_role_is_a_config_error(blip_dirs):
    with pytest.raises(ConfigError, match="blip-itm"):
        create(f"blip-itm:{blip_dirs['itm']}", role=Role.CAPTIONER)


def test_checkpoint_of_another_task_lists_the_keys(blip_dirs):
    model = create(f"blip-itm:{blip_dirs['caption']}", role=Role.RERANKER)
    with pytest.raises(ModelLoadError, match=r"missing .*itm_head\.weight.*unexpected .*text_decoder"):
        model.load()


def test_checkpoint_without_weights_is_not_found(blip_dirs, tmp_path):
    directory = tmp_path / "no-weights"
    shutil.copytree(blip_dirs["itm"], directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="has no weights"):
        create(f"blip-itm:{directory}").load()


@pytest.mark.parametrize(
    ("change", "message"),
    [({"size": {"height": 48, "width": 48}}, "differs from the vision tower"), ({"resample": 0}, "resample 0")],
)
def test_preprocessor_config_that_does_not_fit_is_refused(blip_dirs, tmp_path, change, message):
    directory = tmp_path / "bad-preprocessor"
    shutil.copytree(blip_dirs["itm"], directory)
    config_path = directory / "preprocessor_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **change}))
    with pytest.raises(ModelLoadError, match=message):
        create(f"blip-itm:{directory}").load()
