"""The `ofa-ve` backend on a tiny random OFA directory, loaded through the real spec path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from tokenizers import ByteLevelBPETokenizer

from pixsearch.errors import ConfigError, ModelLoadError, ModelNotFoundError
from pixsearch.models import Entailer, ModelOptions, Role, create
from pixsearch.models.ofa.backends import OfaEntailer
from pixsearch.models.ofa.config import OfaConfig
from pixsearch.models.ofa.modeling import OfaModel
from pixsearch.models.ofa.tokenizer import NUM_BINS, NUM_CODES

OPTIONS = ModelOptions(dtype="float32")
CORPUS = [
    "a red circle on a white background",
    "a blue square next to a green triangle",
    "there are two birds in the sky",
    "the dog is not sleeping",
    ' does the image describe " a photo of a cat "?',
]
STATEMENTS = ["a red circle", "two birds", "What colour is the square?", "no no no", ""]


def _write_tiny_ofa(folder: Path) -> Path:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 3,
        vocab_size=300,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        show_progress=False,
    )
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["<mask>"] = len(vocab)  # BART keeps <mask> last
    (folder / "vocab.json").write_text(json.dumps(vocab))
    config = {
        "vocab_size": len(vocab) + NUM_CODES + NUM_BINS,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 48,
        "resnet_type": "resnet18",
        "token_bucket_size": 8,
        "image_bucket_size": 4,
        "max_position_embeddings": 64,
        "code_image_size": 32,
    }
    (folder / "config.json").write_text(json.dumps(config))
    task = {
        "task": "visual-entailment",
        "model": {
            "type": "ofa",
            "beam_search": {"beam_size": 3, "max_len_b": 16, "min_len": 1, "no_repeat_ngram_size": 3},
            "max_src_length": 24,
            "prompt_type": "prev_output",
            "gen_type": "traverse",
            "patch_image_size": 32,
            "answer2label": "answer2label.json",
        },
    }
    (folder / "configuration.json").write_text(json.dumps(task))
    (folder / "answer2label.json").write_text(json.dumps({"no": 0, "yes": 1, "maybe": 2}))
    torch.manual_seed(0)
    model = OfaModel(OfaConfig.from_dict(config))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


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
