from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixsearch.evaluation.readers import BadRowPolicy, DataSetError
from pixsearch.models import Role, create
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import TinyConfig, TrainJob, TrainOptions, last_checkpoint, run_job

TINY = TinyConfig(image_size=16, patch_size=8, hidden=32, layers=1, heads=2, projection_dim=16)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("small-world")
    write_dataset(root, SynthOptions(seed=1, train=24, val=0, test=4, image_size=32))
    return root


def _job(world: Path, output: Path, **changes) -> TrainJob:
    options = TrainOptions(steps=6, lr=1e-3, warmup=2, checkpoint_every=2, log_every=1)
    base = dict(backend="clip", data=world / "captions.jsonl", output=output, tiny=TINY, batch_size=8, options=options)
    return TrainJob(**{**base, **changes})


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_its_last_checkpoint(small_world: Path, tmp_path: Path) -> None:
    whole = run_job(_job(small_world, tmp_path / "whole"))
    assert whole.resumed_from == 0 and whole.steps == 6

    def stop_at_five(phase: str, done: int, total: int, loss: float | None) -> None:
        if phase == "train" and done == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_job(_job(small_world, tmp_path / "cut"), stop_at_five)
    checkpoint = last_checkpoint(tmp_path / "cut")
    assert checkpoint is not None and checkpoint.name == "step-00000004"
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    # a checkpoint is a complete model folder in the backend's format
    assert create(f"clip:{checkpoint}", Role.DUAL_ENCODER).encode_texts(["a red circle"]).shape == (1, 16)

    resumed = run_job(_job(small_world, tmp_path / "cut"))
    assert resumed.resumed_from == 4
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    report = json.loads((tmp_path / "cut" / "train_report.json").read_text())
    assert report["resumed_from"] == 4


def test_bad_rows_stop_before_training_or_are_skipped(small_world: Path, tmp_path: Path) -> None:
    rows = (small_world / "captions.jsonl").read_text().splitlines()
    rows.insert(3, "{broken")
    rows.insert(6, json.dumps({"image": "images/train/nowhere.png", "caption": "a lost red circle", "split": "train"}))
    data = small_world / "with_bad_rows.jsonl"
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataSetError) as error:
        run_job(_job(small_world, tmp_path / "stop", data=data, policy=BadRowPolicy.STOP))
    message = str(error.value)
    assert f"{data}, line 4: not valid JSON" in message
    assert f"{data}, line 7: {small_world / 'images' / 'train' / 'nowhere.png'}: " in message
    assert not (tmp_path / "stop" / "model.safetensors").exists()
    assert last_checkpoint(tmp_path / "stop") is None

    report = run_job(_job(small_world, tmp_path / "skip", data=data, policy=BadRowPolicy.SKIP))
    assert report.steps == 6 and (tmp_path / "skip" / "model.safetensors").exists()


def test_blip_caption_and_vqa_train_and_load(small_world: Path, tmp_path: Path) -> None:
    options = TrainOptions(steps=2, lr=1e-3, warmup=1, checkpoint_every=100)
    caption = _job(small_world, tmp_path / "cap", backend="blip-caption", options=options)
    run_job(caption)
    vqa = _job(small_world, tmp_path / "vqa", backend="blip-vqa", data=small_world / "questions.jsonl", options=options)
    run_job(vqa)
    from PIL import Image

    image = Image.open(next((small_world / "images" / "test").glob("*.png")))
    captions = create(f"blip-caption:{tmp_path / 'cap'}", Role.CAPTIONER).caption([image])
    assert len(captions) == 1 and isinstance(captions[0], str)
    answers = create(f"blip-vqa:{tmp_path / 'vqa'}", Role.ANSWERER).answer(image, "what shape is the red one?", 2)
    assert all(isinstance(a, str) and 0 <= p <= 1 for a, p in answers)
