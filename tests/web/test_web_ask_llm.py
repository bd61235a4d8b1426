"""POST /api/images/{id}/ask with `llm`: a language model writes the answer from the caption and the
VQA answers, in the model pool; off unless a writer is configured."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pixsearch.answering import DEFAULT_TEMPLATE
from pixsearch.errors import ConfigError
from pixsearch.train.writer_lm import save_tiny_lm
from pixsearch.web import WebOptions

KEY = "a-long-enough-key"


@pytest.fixture(scope="module")
def writer_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    words = DEFAULT_TEMPLATE.split() + "a red circle what colour".split()
    return f"llm:{save_tiny_lm(tmp_path_factory.mktemp('web-lm'), words)}"


class RecordingWriter:
    """A writer that remembers its prompts and answers with a fixed sentence."""

    def __init__(self, reply: str = "Answer: a small red circle.\nmore text") -> None:
        self.reply = reply
        self.prompts: list[tuple[str, int, float]] = []

    def load(self) -> None: ...

    def close(self) -> None: ...

    def write(self, prompt: str, max_new_tokens: int = 32, timeout_s: float = 30.0) -> str:
        self.prompts.append((prompt, max_new_tokens, timeout_s))
        return self.reply


def _url(image_ids: dict[str, int]) -> str:
    return f"/api/images/{image_ids['img_0002.png']}/ask"


def test_llm_writes_an_answer_with_its_evidence(make_client, image_ids, vqa_spec, caption_spec, writer_spec) -> None:
    client = make_client(answerer=vqa_spec, captioner=caption_spec, writer=writer_spec)
    response = client.post(_url(image_ids), json={"question": "what colour?", "top_k": 3, "llm": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert 1 <= len(body["answers"]) <= 3 and body["model"] == vqa_spec
    written = body["written"]
    assert written["model"] == writer_spec and written["answer"]
    generated = client.post(f"/api/images/{image_ids['img_0002.png']}/caption").json()
    assert written["caption"] == generated["caption"]  # the captioner's caption, the same one the page shows


def test_without_llm_the_bare_vqa_answer(make_client, image_ids, vqa_spec, caption_spec, writer_spec) -> None:
    client = make_client(answerer=vqa_spec, captioner=caption_spec, writer=writer_spec)
    body = client.post(_url(image_ids), json={"question": "what colour?"}).json()
    assert body["written"] is None and body["answers"]


def test_llm_without_a_writer_is_404(make_client, image_ids, vqa_spec) -> None:
    response = make_client(answerer=vqa_spec).post(_url(image_ids), json={"question": "what?", "llm": True})
    assert response.status_code == 404 and "no writer" in response.json()["detail"]


def test_prompt_uses_the_stored_caption_and_the_prompt_file(
    make_client, fresh_library, image_ids, vqa_spec, writer_spec, tmp_path: Path
) -> None:
    template = tmp_path / "prompt.txt"
    template.write_text("Photo: {caption}\nQ: {question}\n{candidates}\nA:", encoding="utf-8")
    client = make_client(  # a private library: this test stores a caption
        library=fresh_library, answerer=vqa_spec, writer=writer_spec, writer_prompt_file=str(template), api_key=KEY
    )
    image_id = image_ids["img_0002.png"]
    put = client.post(f"/api/images/{image_id}/caption", json={"caption": "two shapes"}, headers={"X-API-Key": KEY})
    assert put.status_code == 200
    recorder = RecordingWriter()
    client.app.state.context.models._writer._model = recorder  # as if loaded
    body = client.post(_url(image_ids), json={"question": "what colour?", "top_k": 2, "llm": True}).json()
    prompt, max_new_tokens, timeout_s = recorder.prompts[-1]
    candidates = "\n".join(f"- {a['answer']} ({a['probability']:.2f})" for a in body["answers"])
    assert prompt == f"Photo: two shapes\nQ: what colour?\n{candidates}\nA:"
    assert max_new_tokens == 32 and timeout_s == 30.0
    assert body["written"] == {"answer": "a small red circle.", "caption": "two shapes", "model": writer_spec}


def test_a_writer_that_is_down_is_503(make_client, image_ids, vqa_spec, caption_spec) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and has nobody listening now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    writer = f"openai-api:http://127.0.0.1:{port}/v1#tiny"
    client = make_client(answerer=vqa_spec, captioner=caption_spec, writer=writer)
    response = client.post(_url(image_ids), json={"question": "what?", "llm": True})
    assert response.status_code == 503 and "is not reachable" in response.json()["detail"]


def test_writer_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="writer spec 'blip-vqa:x' is a answerer backend"):
        WebOptions(writer="blip-vqa:x").check()
    bad = tmp_path / "bad.txt"
    bad.write_text("{photo}", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown fields"):
        WebOptions(writer_prompt_file=str(bad)).check()
    options = WebOptions.from_env({"PIXSEARCH_WRITER": "openai-api:http://127.0.0.1:8080/v1#m"})
    assert options.writer == "openai-api:http://127.0.0.1:8080/v1#m"


def test_the_result_page_asks_for_a_written_answer_only_with_a_writer(
    make_client, image_ids, vqa_spec, caption_spec, writer_spec
) -> None:
    page = f"/images/{image_ids['img_0002.png']}"
    with_writer = make_client(answerer=vqa_spec, captioner=caption_spec, writer=writer_spec).get(page).text
    assert 'data-llm="1"' in with_writer and 'id="written"' in with_writer and "Why this answer" in with_writer
    without = make_client(answerer=vqa_spec, captioner=caption_spec).get(page).text
    assert 'data-llm="1"' not in without
