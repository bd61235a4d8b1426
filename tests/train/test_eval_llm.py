"""`pixsearch eval --llm`: the answers a language model writes from the caption and the VQA answers,
scored beside the bare VQA answers on the same questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixsearch.answering import DEFAULT_TEMPLATE
from pixsearch.cli import main
from pixsearch.train import demo_recipe as recipe
from pixsearch.train.writer_lm import save_tiny_lm


def test_eval_scores_written_answers_beside_the_bare_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["synth", str(data), "--train", "4", "--val", "0", "--test", "3", "--image-size", "32"]) == 0
    lm = save_tiny_lm(tmp_path / "lm", DEFAULT_TEMPLATE.split() + "red green blue circle square triangle".split())
    models = recipe.PACKAGED
    results = tmp_path / "results.json"
    args = ["eval", "--questions", str(data / "questions.jsonl"), "--json", str(results), "--threads", "1"]
    args += ["--answerer", f"blip-vqa:{models / 'blip-vqa'}", "--captioner", f"blip-caption:{models / 'blip-caption'}"]
    assert main([*args, "--llm", f"llm:{lm}"]) == 0
    table = capsys.readouterr().out
    assert "vqa_llm written_accuracy" in table and "vqa_llm vqa_accuracy" in table
    saved = json.loads(results.read_text())
    written = saved["vqa_llm"]
    assert written["questions"] == len(
        [q for q in map(json.loads, (data / "questions.jsonl").open()) if q.get("split") == "test"]
    )
    assert written["vqa_accuracy"] == pytest.approx(saved["vqa"]["vqa_accuracy"])  # the same questions, bare
    assert 0 <= written["written_accuracy"] <= 1 and written["llm"] == f"llm:{lm}"


def test_llm_needs_a_captioner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--answerer", "blip-vqa:x", "--questions", "q.jsonl", "--llm", "llm:y"]) == 2
    assert "--llm writes answers from a caption and VQA answers" in capsys.readouterr().err
