"""The `llm:` writer on a tiny random GPT-2 (real word-level tokenizer, real `generate`), and the
prompt that combines a caption, a question and VQA candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from images import draw

from pixsearch.answering import (
    DEFAULT_TEMPLATE,
    AnsweringOptions,
    ask,
    build_prompt,
    check_template,
    clean_answer,
    write_answer,
)
from pixsearch.errors import ConfigError, ModelNotFoundError
from pixsearch.models import registry
from pixsearch.models.roles import Role, Writer
from pixsearch.models.spec import ModelOptions, ModelSpec
from pixsearch.models.writer import CausalLmWriter
from pixsearch.models.writer_http import OpenAiWriter
from pixsearch.train.writer_lm import save_tiny_lm

WORDS = DEFAULT_TEMPLATE.split() + "a red blue green circle square what colour is the shape".split()
CHAT = (
    "{% for m in messages %}[CLS] user : {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}bot :{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), WORDS)


@pytest.fixture(scope="session")
def tiny_chat_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    directory = save_tiny_lm(tmp_path_factory.mktemp("tiny-chat-lm"), WORDS)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_writer(tiny_lm_dir: Path) -> CausalLmWriter:
    writer = registry.create(f"llm:{tiny_lm_dir}", Role.WRITER)
    writer.load()
    return writer


def test_writer_backends_are_registered() -> None:
    assert {b.name for b in registry.backends(Role.WRITER)} == {"llm", "openai-api"}
    assert isinstance(registry.create("openai-api:http://127.0.0.1:9/v1#tiny", Role.WRITER), OpenAiWriter)
    with pytest.raises(ConfigError, match="writer"):
        registry.create("llm:/nowhere", Role.ANSWERER)


def test_missing_directory_fails_with_the_spec(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="llm:"):
        registry.create(f"llm:{tmp_path / 'none'}", Role.WRITER).load()


def test_writer_completes_a_prompt_within_the_token_limit(tiny_writer: CausalLmWriter) -> None:
    assert isinstance(tiny_writer, Writer)
    prompt = build_prompt("a red circle", "what colour is the shape?", [("red", 0.7)], AnsweringOptions())
    text = tiny_writer.write(prompt, max_new_tokens=3)
    assert isinstance(text, str)
    new_tokens = tiny_writer._tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(new_tokens) <= 3


def test_long_prompts_keep_their_end(tiny_lm_dir: Path) -> None:
    writer = CausalLmWriter(ModelSpec.parse(f"llm:{tiny_lm_dir}"), ModelOptions(), 20)
    prompt = "red " * 500 + "what colour is the shape ? Answer:"
    ids = writer.encode(prompt, max_new_tokens=4)
    assert len(ids) == 20
    assert writer._tokenizer.decode(ids[-2:]) == "answer :"
    assert writer.write(prompt, max_new_tokens=2) is not None


def test_positions_bound_the_prompt(tiny_writer: CausalLmWriter) -> None:
    ids = tiny_writer.encode("red " * 1000, max_new_tokens=56)
    assert len(ids) == 256 - 56  # n_positions of the tiny model less the new tokens


def test_chat_template_wraps_the_prompt(tiny_chat_lm_dir: Path, tiny_lm_dir: Path) -> None:
    chat = registry.create(f"llm:{tiny_chat_lm_dir}", Role.WRITER)
    plain = registry.create(f"llm:{tiny_lm_dir}", Role.WRITER)
    assert chat.encode("what colour", 4) != plain.encode("what colour", 4)
    assert chat.uses_chat_template and not plain.uses_chat_template
    decoded = chat._tokenizer.decode(chat.encode("what colour", 4))
    assert decoded.startswith("[CLS] user : what colour") and decoded.endswith("bot :")
    assert isinstance(chat.write("what colour", max_new_tokens=2), str)


def test_prompt_holds_caption_question_and_candidates() -> None:
    candidates = [("red", 0.61), ("blue", 0.2), ("green", 0.1)]
    prompt = build_prompt("a red circle left of a square", "what colour is the circle?", candidates, AnsweringOptions())
    assert "a red circle left of a square" in prompt
    assert "what colour is the circle?" in prompt
    assert "- red (0.61)\n- blue (0.20)\n- green (0.10)" in prompt
    assert prompt.endswith("Answer:")


def test_prompt_is_bounded() -> None:
    options = AnsweringOptions(top_k=2, max_caption_chars=20, max_prompt_chars=520)
    candidates = [(f"answer{i}", 0.1) for i in range(9)]
    prompt = build_prompt("word " * 200, "q?", candidates, options)
    assert len(prompt) <= 520
    assert "answer0" in prompt and "answer2" not in prompt
    assert "word word word word…" in prompt
    one = len(build_prompt("a", "q?", candidates, AnsweringOptions(top_k=1)))
    tight = build_prompt("a", "q?", candidates, AnsweringOptions(max_prompt_chars=one))
    assert "answer0" in tight and "answer1" not in tight  # candidates dropped from the end to fit
    with pytest.raises(ConfigError, match="even without candidates"):
        build_prompt("a", "q?", candidates, AnsweringOptions(max_prompt_chars=100))


def test_templates_are_checked(tmp_path: Path) -> None:
    assert check_template("Q: {question}\n{candidates}\nA:")
    with pytest.raises(ConfigError, match="unknown fields"):
        check_template("{question} {image}")
    with pytest.raises(ConfigError, match="must hold"):
        check_template("{caption}")
    custom = AnsweringOptions(template="Photo: {caption}. {question} Options: {candidates} ->")
    assert build_prompt("a cat", "what?", [("cat", 1.0)], custom) == "Photo: a cat. what? Options: - cat (1.00) ->"


def test_clean_answer_takes_the_first_line() -> None:
    assert clean_answer("\n Answer: a red circle.\nQuestion: more") == "a red circle."
    assert clean_answer("   ") == ""


class Silent:
    def load(self) -> None: ...

    def close(self) -> None: ...

    def write(self, prompt: str, max_new_tokens: int = 32, timeout_s: float = 30.0) -> str:
        return ""


def test_a_blank_completion_falls_back_to_the_best_candidate() -> None:
    result = write_answer("a cat", "what?", [("cat", 0.9), ("dog", 0.1)], Silent(), AnsweringOptions())
    assert result.answer == "cat"


def test_ask_combines_captioner_answerer_and_writer(
    tiny_blip_dirs: dict[str, Path], tiny_writer: CausalLmWriter
) -> None:
    torch.manual_seed(0)
    captioner = registry.create(f"blip-caption:{tiny_blip_dirs['caption']}", Role.CAPTIONER)
    answerer = registry.create(f"blip-vqa:{tiny_blip_dirs['vqa']}", Role.ANSWERER)
    captioner.load()
    answerer.load()
    image = draw(3)
    options = AnsweringOptions(top_k=3, max_new_tokens=4)
    result = ask(image, "what colour is the shape?", answerer, captioner, tiny_writer, options)
    caption = captioner.caption([image])[0]
    candidates = answerer.answer(image, "what colour is the shape?", 3)
    assert result.caption == caption
    assert [a for a, _ in result.candidates] == [a for a, _ in candidates]
    assert " ".join(caption.split()) in result.prompt
    assert "what colour is the shape?" in result.prompt
    for answer, prob in candidates:
        assert f"- {answer} ({prob:.2f})" in result.prompt
    assert result.answer  # never blank: the writer's text, else the best candidate
    new_tokens = tiny_writer._tokenizer(result.answer, add_special_tokens=False)["input_ids"]
    assert len(new_tokens) <= 4 or result.answer == candidates[0][0]
