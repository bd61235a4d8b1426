"""VLE backends: behaviour on a tiny random checkpoint, and agreement with the original pipelines' outputs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from images import draw
from PIL import Image

from pixsearch.errors import ConfigError
from pixsearch.models import Answerer, PatchScorer, Reranker, Role, create
from pixsearch.models.vle import VleConfig, VleForVqa
from pixsearch.models.vle.backends import BATCH

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("PIXSEARCH_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
VLE_DIR = FIXTURES / "vle"
SENTENCES = [
    "a red circle on a white background",
    "a blue square next to a green triangle",
    "what color is the triangle?",
    "how many shapes are in the picture?",
    "there are two dogs on the grass",
    "a small photo of a big yellow house",
]
ANSWERS = ["yes", "no", "red", "blue", "green"]


def _write_spm(directory: Path) -> int:
    """Train a tiny unigram model with the DeBERTa-v3 special-token layout; returns its size."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 4),
        model_writer=model,
        vocab_size=60,
        model_type="unigram",
        hard_vocab_limit=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        minloglevel=2,
    )
    (directory / "spm.model").write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(directory / "spm.model")).get_piece_size()


def _config(vocab_size: int) -> dict:
    text = dict(
        model_type="deberta-v2", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, relative_attention=True, position_buckets=8,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", type_vocab_size=0,
        position_biased_input=False, layer_norm_eps=1e-7, pad_token_id=0,
    )  # fmt: skip
    vision = dict(
        model_type="clip_vision_model", hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=48, image_size=32, patch_size=8, hidden_act="quick_gelu",
    )  # fmt: skip
    return dict(
        model_type="vle", architectures=["VLEForPretraining"], text_config=text, vision_config=vision,
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        id2label={str(i): a for i, a in enumerate(ANSWERS)},
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pre-training style checkpoint: backbone under `vle.` plus ITM, VQA and PBC heads."""
    directory = tmp_path_factory.mktemp("tiny-vle")
    raw = _config(_write_spm(directory) + 1)
    (directory / "config.json").write_text(json.dumps(raw))
    (directory / "added_tokens.json").write_text(json.dumps({"[MASK]": raw["text_config"]["vocab_size"] - 1}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "model_max_length": 16}))
    preprocessor = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "resample": 3}
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    torch.manual_seed(0)
    state = VleForVqa(VleConfig.from_dict(json.loads(json.dumps(raw)))).state_dict()
    state.update({"itm_score.fc.weight": torch.randn(2, 32), "itm_score.fc.bias": torch.randn(2)})
    for index, shape in ((0, (16, 16)), (1, (16,)), (3, (2, 16))):
        state[f"pbc_classifier.{index}.weight"] = torch.randn(shape)
        state[f"pbc_classifier.{index}.bias"] = torch.randn(shape[0])
    torch.save(state, directory / "pytorch_model.bin")
    return directory


def test_constructor_is_cheap_and_load_is_idempotent(tiny_dir: Path) -> None:
    reranker = create(f"vle-itm:{tiny_dir}", Role.RERANKER)
    assert isinstance(reranker, Reranker) and reranker._model is None
    reranker.load()
    model = reranker.model
    reranker.load()
    assert reranker.model is model
    assert sorted(reranker.load_report.ignored_head_keys)[:2] == ["pbc_classifier.0.bias", "pbc_classifier.0.weight"]
    reranker.close()
    assert reranker._model is None
    assert reranker.score("a red circle", [draw(1)]).shape == (1,)


def test_reranker_caches_the_vision_side_and_batches_candidates(tiny_dir: Path) -> None:
    reranker = create(f"vle-itm:{tiny_dir}")
    images = [draw(seed, size=(40 + seed, 32)) for seed in range(BATCH + 3)]
    features = reranker.image_features(images)
    assert len(features) == len(images)
    assert all(f.device.type == "cpu" and tuple(f.shape) == (17, 24) for f in features)
    scores = reranker.score_features("a blue square", features)
    assert scores.dtype == np.float32 and scores.shape == (len(images),)
    # either side of the batch boundary, a candidate scores as it does alone
    for index in (0, BATCH - 1, BATCH, len(images) - 1):
        alone = reranker.score("a blue square", [images[index]])
        np.testing.assert_allclose(scores[index : index + 1], alone, rtol=0, atol=1e-5)
    assert np.ptp(scores) > 0, "different images should get different scores"


def test_reranker_score_is_the_itm_match_logit(tiny_dir: Path) -> None:
    reranker = create(f"vle-itm:{tiny_dir}")
    images, texts = [draw(3), draw(4)], ["a red circle", "a red circle"]
    with torch.inference_mode():
        logits = reranker.model(**reranker.processor(texts, images))
    np.testing.assert_allclose(reranker.score(texts[0], images), logits[:, 1].numpy(), rtol=0, atol=1e-5)


def test_reranker_edge_cases(tiny_dir: Path) -> None:
    reranker = create(f"vle-itm:{tiny_dir}")
    empty = reranker.score_features("anything", [])
    assert empty.shape == (0,) and empty.dtype == np.float32
    with pytest.raises(ValueError, match=r"\(17, 24\)"):
        reranker.score_features("anything", [torch.zeros(17, 24), torch.zeros(5, 24)])


def test_answerer_ranks_the_answer_vocabulary(tiny_dir: Path) -> None:
    answerer = create(f"vle-vqa:{tiny_dir}", Role.ANSWERER)
    assert isinstance(answerer, Answerer)
    top = answerer.answer(draw(5), "what color is the triangle?", top_k=3)
    assert len(top) == 3 and all(answer in ANSWERS for answer, _ in top)
    everything = answerer.answer(draw(5), "what color is the triangle?", top_k=50)
    assert [a for a, _ in everything] == sorted(ANSWERS, key=dict(everything).get, reverse=True)
    assert sum(p for _, p in everything) == pytest.approx(1.0, abs=1e-5)
    assert top == everything[:3]
    with pytest.raises(ConfigError, match="top_k"):
        answerer.answer(draw(5), "what?", top_k=0)


def test_patch_scorer_gives_a_probability_per_patch(tiny_dir: Path) -> None:
    scorer = create(f"vle-pbc:{tiny_dir}", Role.PATCH_SCORER)
    assert isinstance(scorer, PatchScorer)
    scores = scorer.patch_scores(draw(6, size=(50, 32)), "a green triangle")
    assert scores.shape == (4, 4) and scores.dtype == np.float32
    assert ((scores > 0) & (scores < 1)).all()


# --- agreement with the original pipelines (manifest.json) -------------------------------------------------

needs_fixtures = pytest.mark.skipif(
    not (VLE_DIR / "manifest.json").exists(), reason=f"VLE conformance fixtures folder absent: {VLE_DIR}"
)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((VLE_DIR / "manifest.json").read_text())


@pytest.fixture(scope="module")
def inputs() -> tuple[list[Image.Image], list[str]]:
    data = json.loads((FIXTURES / "inputs.json").read_text())
    return [Image.open(FIXTURES / item["file"]).convert("RGB") for item in data["images"]], data["texts"]


@needs_fixtures
def test_itm_reranker_matches_the_itm_pipeline(manifest: dict, inputs: tuple) -> None:
    images, texts = inputs
    reranker = create(f"vle-itm:{VLE_DIR / 'vle-itm'}")
    for result in manifest["heads"]["vle-itm"]["pipeline"]["results"]:
        image, text = images[result["image"]], texts[result["text"]]
        with torch.inference_mode():
            logits = reranker.model(**reranker.processor([text], [image]))[0]
        probs = torch.softmax(logits, dim=-1).numpy()
        np.testing.assert_allclose(probs, result["output"]["score"], rtol=0, atol=1e-4)
        assert ["False", "True"][int(probs.argmax())] == result["output"]["match"]
        np.testing.assert_allclose(reranker.score(text, [image]), [logits[1].item()], rtol=0, atol=1e-4)


@needs_fixtures
def test_answerer_matches_the_vqa_pipeline(manifest: dict, inputs: tuple) -> None:
    images, texts = inputs
    answerer = create(f"vle-vqa:{VLE_DIR / 'vle-vqa'}")
    for result in manifest["heads"]["vle-vqa"]["pipeline"]["results"]:
        got = answerer.answer(images[result["image"]], texts[result["text"]], top_k=5)
        assert [a for a, _ in got] == [item["answer"] for item in result["output"]]
        np.testing.assert_allclose([p for _, p in got], [i["score"] for i in result["output"]], rtol=0, atol=1e-4)


@needs_fixtures
def test_patch_scorer_matches_the_pbc_pipeline(manifest: dict, inputs: tuple) -> None:
    images, texts = inputs
    scorer = create(f"vle-pbc:{VLE_DIR / 'vle-pbc'}")
    for result in manifest["heads"]["vle-pbc"]["pipeline"]["results"]:
        got = scorer.patch_scores(images[result["image"]], texts[result["text"]])
        expected = np.asarray(result["output"]["score"], dtype=np.float32)[:, 1].reshape(4, 4)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
