"""`pixsearch ask`: the bare VQA answers, and an answer written by a tiny causal LM with its evidence."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from images import draw

from pixsearch.answering import DEFAULT_TEMPLATE
from pixsearch.cli import main
from pixsearch.train.writer_lm import save_tiny_lm


@pytest.fixture(scope="module")
def lm_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    words = DEFAULT_TEMPLATE.split() + "a red circle what colour".split()
    return f"llm:{save_tiny_lm(tmp_path_factory.mktemp('ask-lm'), words)}"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    draw(5).save(path)
    return path


@pytest.fixture
def common(tmp_path: Path, tiny_blip_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name in ("PIXSEARCH_ANSWERER", "PIXSEARCH_CAPTIONER", "PIXSEARCH_WRITER"):
        monkeypatch.delenv(name, raising=False)
    return ["--library", str(tmp_path / "lib"), "--answerer", f"blip-vqa:{tiny_blip_dirs['vqa']}", "--json"]


def test_without_llm_the_vqa_answers(photo: Path, common: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", str(photo), "what colour?", "--top-k", "3", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["question"] == "what colour?" and len(out["answers"]) == 3
    probs = [a["probability"] for a in out["answers"]]
    assert probs == sorted(probs, reverse=True)


def test_llm_writes_the_answer_with_its_evidence(
    photo: Path, common: list[str], lm_spec: str, tiny_blip_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    captioner = f"blip-caption:{tiny_blip_dirs['caption']}"
    args = ["ask", str(photo), "what colour?", "--llm", lm_spec, "--captioner", captioner, "--show-prompt", *common]
    assert main([*args, "--top-k", "2", "--max-new-tokens", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"]
    assert len(out["candidates"]) == 2
    assert out["models"]["writer"] == lm_spec
    assert "what colour?" in out["prompt"] and " ".join(out["caption"].split()) in out["prompt"]
    for candidate in out["candidates"]:
        assert f"- {candidate['answer']} ({candidate['probability']:.2f})" in out["prompt"]


def test_prompt_file_replaces_the_template(
    photo: Path,
    common: list[str],
    lm_spec: str,
    tiny_blip_dirs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    template = tmp_path / "prompt.txt"
    template.write_text("Q: {question}\nA:", encoding="utf-8")
    captioner = f"blip-caption:{tiny_blip_dirs['caption']}"
    args = ["ask", str(photo), "what colour?", "--llm", lm_spec, "--captioner", captioner, "--show-prompt"]
    assert main([*args, "--prompt-file", str(template), *common]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"] == "Q: what colour?\nA:"


def test_errors_become_exit_codes(
    photo: Path, common: list[str], lm_spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", str(photo), "q", "--llm", lm_spec, *common]) == 2
    assert "--llm needs a captioner" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("{image}", encoding="utf-8")
    assert (
        main(["ask", str(photo), "q", "--llm", lm_spec, "--captioner", "x:y", "--prompt-file", str(bad), *common]) == 2
    )
    assert "unknown fields" in capsys.readouterr().err
    refused = "openai-api:http://127.0.0.1:9/v1"  # discard port: nobody listens
    assert main(["ask", str(photo), "q", "--llm", refused, "--captioner", lm_spec, *common]) == 2
    assert "is a writer backend, but a captioner is needed" in capsys.readouterr().err


def test_a_writer_that_is_down_is_named(
    photo: Path, common: list[str], tiny_blip_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and has nobody listening now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    captioner = f"blip-caption:{tiny_blip_dirs['caption']}"
    llm = f"openai-api:http://127.0.0.1:{port}/v1#tiny"
    assert main(["ask", str(photo), "q", "--llm", llm, "--captioner", captioner, "--timeout", "5", *common]) == 3
    assert f"language model at http://127.0.0.1:{port}/v1/chat/completions is not reachable" in capsys.readouterr().err
