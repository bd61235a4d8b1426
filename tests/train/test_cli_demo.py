from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from pixsearch.models import create
from pixsearch.storage import Library
from pixsearch.storage.status import library_status
from pixsearch.train import demo_recipe as recipe
from pixsearch.train.cli import main
from pixsearch.train.demo import DemoOptions, photo_count


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--dir", str(root), "--no-serve", "--quick", "--threads", "1"]) == 0
    return root, out.getvalue()


def _json(out: str) -> dict:
    return json.loads(out[out.index("\n{") :])


def test_demo_says_first_what_it_does_and_uses_the_packaged_models(demo_run: tuple[Path, str]) -> None:
    root, out = demo_run
    photos = photo_count(DemoOptions(root, quick=True))
    first = out.splitlines()[0]
    assert first.startswith(f"pixsearch demo: building a synthetic library of {photos} photos with the packaged")
    assert "(about " in first and "http://127.0.0.1:8000/" in first
    status = library_status(Library.open(root / "library"))
    assert status.images == photos and status.image_vectors == photos and status.texts > 0
    shown = _json(out)
    assert shown["trained"] == {}
    assert shown["specs"] == {b: f"{b}:{recipe.PACKAGED / b}" for b in recipe.BACKENDS}
    assert shown["rerank"] == recipe.read_manifest()["rerank"]
    assert "text->image R@1 is" in out and not (root / "models").exists()


def test_second_demo_run_reuses_the_library(demo_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = demo_run
    assert main(["demo", "--dir", str(root), "--no-serve", "--quick", "--port", "8123"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pixsearch demo: reusing a synthetic library of")
    assert "http://127.0.0.1:8123/" in out and _json(out)["trained"] == {}


def test_demo_retrain_trains_the_recipe_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dir", str(tmp_path), "--no-serve", "--quick", "--retrain", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pixsearch demo: training the demo models here")
    shown = _json(out)
    assert set(shown["trained"]) == set(recipe.BACKENDS)
    assert shown["specs"]["clip"] == f"clip:{tmp_path / 'models' / 'clip'}"
    manifest = recipe.read_manifest(tmp_path / "models")
    assert manifest["files"] == recipe.digests(tmp_path / "models")
    assert all((tmp_path / "models" / b / "model.safetensors").exists() for b in recipe.BACKENDS)


def test_synth_train_eval_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["synth", str(data), "--train", "12", "--val", "0", "--test", "4", "--image-size", "32"]) == 0
    assert (data / "karpathy.json").exists()
    out = tmp_path / "clip"
    args = ["train", "clip", "--data", str(data / "karpathy.json"), "--out", str(out), "--steps", "2"]
    assert main(args + ["--batch-size", "4", "--tiny-hidden", "32", "--threads", "1"]) == 0
    assert "load it as clip:" in capsys.readouterr().out
    models = recipe.PACKAGED
    results = tmp_path / "results.json"
    eval_args = ["eval", "--data", str(data / "captions.csv"), "--model", f"clip:{out}", "--json", str(results)]
    eval_args += ["--rerank", f"blip-itm:{models / 'blip-itm'}", "--rerank-k", "4", "--sim-weight", "logit-scale"]
    eval_args += ["--captioner", f"blip-caption:{models / 'blip-caption'}"]
    eval_args += ["--answerer", f"blip-vqa:{models / 'blip-vqa'}", "--questions", str(data / "questions.jsonl")]
    assert main(eval_args) == 0
    table = capsys.readouterr().out
    assert "retrieval text_to_image R@1" in table and "vqa vqa_accuracy" in table
    saved = json.loads(results.read_text())
    assert saved["retrieval"]["images"] == len(list((data / "images" / "test").glob("*.png")))
    assert set(saved["retrieval"]["text_to_image_reranked"]) == {"R@1", "R@5", "R@10"}
    assert saved["retrieval"]["rerank_k"] == 4
    assert saved["retrieval"]["similarity_weight"] == pytest.approx(create(f"clip:{out}").logit_scale)
    assert 0 <= saved["vqa"]["vqa_accuracy"] <= 1 and saved["captioning"]["cider"] >= 0


def test_train_refuses_bad_rows_with_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "caps.csv").write_text("image,caption\nmissing.png,a red circle\n")
    args = ["train", "clip", "--data", str(tmp_path / "caps.csv"), "--out", str(tmp_path / "o"), "--split", "all"]
    assert main(args + ["--bad-rows", "stop"]) == 2
    assert f"{tmp_path / 'caps.csv'}, line 2: " in capsys.readouterr().err
