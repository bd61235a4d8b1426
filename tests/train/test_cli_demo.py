from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixsearch.storage import Library
from pixsearch.storage.status import library_status
from pixsearch.train.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--dir", str(root), "--no-serve", "--quick", "--threads", "1"]) == 0
    return root


def test_demo_builds_everything_and_reuses_it(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = library_status(Library.open(demo_dir / "library"))
    assert status.images > 0 and status.image_vectors == status.images and status.texts > 0
    for backend in ("clip", "blip-itm", "blip-caption", "blip-vqa"):
        assert (demo_dir / "models" / backend / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["demo", "--dir", str(demo_dir), "--no-serve", "--quick", "--port", "8123"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/" in out
    assert json.loads(out[out.index("{") :])["trained"] == {}  # second run: every model cached


def test_synth_train_eval_commands(demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["synth", str(data), "--train", "12", "--val", "0", "--test", "4", "--image-size", "32"]) == 0
    assert (data / "karpathy.json").exists()
    out = tmp_path / "clip"
    args = ["train", "clip", "--data", str(data / "karpathy.json"), "--out", str(out), "--steps", "2"]
    assert main(args + ["--batch-size", "4", "--tiny-hidden", "32", "--threads", "1"]) == 0
    assert "load it as clip:" in capsys.readouterr().out
    models = demo_dir / "models"
    results = tmp_path / "results.json"
    eval_args = ["eval", "--data", str(data / "captions.csv"), "--model", f"clip:{out}", "--json", str(results)]
    eval_args += ["--rerank", f"blip-itm:{models / 'blip-itm'}", "--rerank-k", "4", "--sim-weight", "10"]
    eval_args += ["--captioner", f"blip-caption:{models / 'blip-caption'}"]
    eval_args += ["--answerer", f"blip-vqa:{models / 'blip-vqa'}", "--questions", str(data / "questions.jsonl")]
    assert main(eval_args) == 0
    table = capsys.readouterr().out
    assert "retrieval text_to_image R@1" in table and "vqa vqa_accuracy" in table
    saved = json.loads(results.read_text())
    assert saved["retrieval"]["images"] == len(list((data / "images" / "test").glob("*.png")))
    assert set(saved["retrieval"]["text_to_image_reranked"]) == {"R@1", "R@5", "R@10"}
    assert saved["retrieval"]["rerank_k"] == 4
    assert 0 <= saved["vqa"]["vqa_accuracy"] <= 1 and saved["captioning"]["cider"] >= 0


def test_train_refuses_bad_rows_with_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "caps.csv").write_text("image,caption\nmissing.png,a red circle\n")
    args = ["train", "clip", "--data", str(tmp_path / "caps.csv"), "--out", str(tmp_path / "o"), "--split", "all"]
    assert main(args + ["--bad-rows", "stop"]) == 2
    assert f"{tmp_path / 'caps.csv'}, line 2: " in capsys.readouterr().err
