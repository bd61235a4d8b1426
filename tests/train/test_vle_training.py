"""Fine-tuning native VLE (`pixsearch train vle-vqa / vle-itm`) on tiny random checkpoints in the
published layout: the loss falls, the output folder has the input's keys, shapes and dtypes (but for
the intended growth of the VQA classifier, or a head the input lacked), it reloads to the same
outputs, a killed run resumes bit for bit, and `pixsearch eval` scores the results."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from interrupt import Interrupt, stop_at
from PIL import Image

from pixsearch.cli import main
from pixsearch.errors import ConfigError
from pixsearch.models import Role, create
from pixsearch.models.vle import Head, load_vle
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import TrainJob, TrainOptions, last_checkpoint, run_job, train
from pixsearch.train.data import load_questions
from pixsearch.train.native import NativeSetup, read_state_dict
from pixsearch.train.tiny import TinyConfig
from pixsearch.train.vle_tasks import VleVqaTask, vle_transform
from pixsearch.train.vle_tiny import build_tiny_vle

TINY = TinyConfig(image_size=32, patch_size=8, hidden=32, layers=1, heads=2)
FIXTURES = Path(os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures"))
PROCESSOR_FILES = ("spm.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vle-world")
    write_dataset(root, SynthOptions(seed=3, train=16, val=0, test=4, image_size=32))
    return root


def _texts(world: Path) -> list[str]:
    rows = [json.loads(line) for name in ("questions.jsonl", "captions.jsonl") for line in open(world / name)]
    return [row.get("question") or row["caption"] for row in rows]


@pytest.fixture(scope="module")
def pretraining_dir(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint shaped like hfl/vle-base: backbone under `vle.`, a VQA head over 3 answers,
    plus keys training never touches (other heads, an old `position_ids` buffer)."""
    directory = build_tiny_vle(
        tmp_path_factory.mktemp("vle-pre"), Head.VQA, _texts(world), TINY, seed=1, labels=["yes", "no", "maybe"]
    )
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    generator = torch.Generator().manual_seed(5)
    state["itm_score.fc.weight"] = torch.randn(2, 64, generator=generator)
    state["itm_score.fc.bias"] = torch.randn(2, generator=generator)
    state["pbc_classifier.3.weight"] = torch.randn(2, 32, generator=generator)
    state["vle.vision_model.vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    torch.save(state, directory / "pytorch_model.bin")
    return directory


def _task(directory: Path, world: Path, seed: int = 0) -> VleVqaTask:
    data = load_questions(world / "questions.jsonl", vle_transform(directory))
    return VleVqaTask(NativeSetup("vle-vqa", directory, data, 8, seed, 40))


def _held_loss(task: VleVqaTask) -> float:
    """The loss of a few fixed batches, without dropout: comparable before and after training."""
    task.model.eval()
    with torch.no_grad():
        loss = float(np.mean([float(task.step_loss(step)) for step in range(4)]))
    task.model.train()
    return loss


def test_vqa_fine_tune_lowers_the_loss_grows_the_labels_and_keeps_the_layout(
    pretraining_dir: Path, world: Path, tmp_path: Path
) -> None:
    task = _task(pretraining_dir, world)
    before = _held_loss(task)
    out = tmp_path / "out"
    train(task, out, TrainOptions(steps=40, lr=2e-3, warmup=4, checkpoint_every=100, log_every=100))
    assert _held_loss(task) < 0.7 * before

    source, saved = read_state_dict(pretraining_dir / "pytorch_model.bin"), read_state_dict(out / "pytorch_model.bin")
    assert list(saved) == list(source)  # the same keys, in the same order
    config = json.loads((out / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    answers = {json.loads(line)["answer"] for line in open(world / "questions.jsonl")}
    assert labels[:3] == ["yes", "no", "maybe"] and set(labels) == answers | {"maybe"}
    assert config["label2id"] == {label: i for i, label in enumerate(labels)}
    for key, tensor in source.items():
        grown = key.startswith("vqa_classifier.3.")
        expected = (len(labels), *tensor.shape[1:]) if grown else tensor.shape
        assert saved[key].shape == expected and saved[key].dtype == tensor.dtype, key
        if key.startswith(("itm_score.", "pbc_classifier.")) or key.endswith("position_ids"):
            assert torch.equal(saved[key], tensor), f"{key} is not trained and must be written back unchanged"
    for name in PROCESSOR_FILES:
        assert (out / name).read_bytes() == (pretraining_dir / name).read_bytes()
    # the original VLEForVQA sizes its classifier by len(config.id2label), which transformers' config reads so
    assert transformers.PretrainedConfig.from_dict(config).num_labels == saved["vqa_classifier.3.weight"].shape[0]

    # reloaded by the same spec, it answers as the model in memory
    answerer = create(f"vle-vqa:{out}", Role.ANSWERER)
    image = Image.open(world / "images" / "test" / sorted(os.listdir(world / "images" / "test"))[0]).convert("RGB")
    question = "what shape is the red one?"
    task.model.eval()
    with torch.no_grad():
        logits = task.model(**task.processor([question], [image]))[0]
    expected = torch.softmax(logits, -1)
    got = dict(answerer.answer(image, question, top_k=len(labels)))
    np.testing.assert_allclose([got[label] for label in labels], expected.numpy(), rtol=0, atol=1e-6)


def test_a_killed_run_resumes_bit_for_bit(pretraining_dir: Path, world: Path, tmp_path: Path) -> None:
    def job(output: Path) -> TrainJob:
        options = TrainOptions(steps=5, lr=1e-3, warmup=2, checkpoint_every=2, log_every=1)
        data = world / "questions.jsonl"
        return TrainJob("vle-vqa", data, output, init=str(pretraining_dir), batch_size=4, options=options)

    run_job(job(tmp_path / "whole"))

    with pytest.raises(Interrupt):
        run_job(job(tmp_path / "cut"), stop_at(4))
    checkpoint = last_checkpoint(tmp_path / "cut")
    assert checkpoint is not None and checkpoint.name == "step-00000002"
    assert create(f"vle-vqa:{checkpoint}").answer(Image.new("RGB", (32, 32)), "where is it?")  # a model folder
    torch.manual_seed(1234)  # a resumed run starts in a new process: torch's global generator is elsewhere
    assert run_job(job(tmp_path / "cut")).resumed_from == 2
    whole, cut = (read_state_dict(tmp_path / name / "pytorch_model.bin") for name in ("whole", "cut"))
    assert list(whole) == list(cut) and all(torch.equal(whole[k], cut[k]) for k in whole)
    assert (tmp_path / "whole" / "config.json").read_text() == (tmp_path / "cut" / "config.json").read_text()


def test_itm_from_scratch_adds_its_head_and_reranks_in_eval(
    world: Path, tmp_path: Path, clip_spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "itm"
    options = TrainOptions(steps=6, lr=1e-3, warmup=2, checkpoint_every=100, log_every=100)
    data, negatives = world / "captions.jsonl", world / "negatives.jsonl"
    report = run_job(TrainJob("vle-itm", data, out, tiny=TINY, negatives=negatives, batch_size=4, options=options))
    assert report.steps == 6 and np.isfinite(report.final_loss)
    saved, source = read_state_dict(out / "pytorch_model.bin"), read_state_dict(out / "init" / "pytorch_model.bin")
    assert list(saved) == list(source)
    assert all(saved[k].shape == v.shape and saved[k].dtype == v.dtype for k, v in source.items())

    # a checkpoint without an ITM head (a VQA model) gets one: the input's keys plus itm_score.fc
    vqa_only = build_tiny_vle(tmp_path / "vqa-only", Head.VQA, _texts(world), TINY)
    job = TrainJob("vle-itm", data, tmp_path / "itm2", init=str(vqa_only), batch_size=4, options=options)
    run_job(job)
    saved = read_state_dict(tmp_path / "itm2" / "pytorch_model.bin")
    added = [k for k in saved if k not in read_state_dict(vqa_only / "pytorch_model.bin")]
    assert added == ["itm_score.fc.weight", "itm_score.fc.bias"]
    assert load_vle(tmp_path / "itm2", Head.ITM)[0].itm_score.fc.weight.shape == (2, 64)

    code = main(["eval", "--data", str(data), "--model", clip_spec, "--rerank", f"vle-itm:{out}"])
    assert code == 0
    assert "R@1 text_to_image" in capsys.readouterr().out


def test_vqa_eval_and_refusals(pretraining_dir: Path, world: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vqa"
    options = TrainOptions(steps=2, lr=1e-3, warmup=1, checkpoint_every=100, log_every=100)
    run_job(TrainJob("vle-vqa", world / "questions.jsonl", out, init=str(pretraining_dir), options=options))
    code = main(["eval", "--questions", str(world / "questions.jsonl"), "--answerer", f"vle-vqa:{out}"])
    assert code == 0 and "vqa_accuracy" in capsys.readouterr().out

    bare = tmp_path / "bare"
    shutil.copytree(pretraining_dir, bare)
    state = torch.load(bare / "pytorch_model.bin", weights_only=True)
    backbone = {k.removeprefix("vle."): v for k, v in state.items() if k.startswith("vle.")}
    torch.save(backbone, bare / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="bare VLE backbone"):
        run_job(TrainJob("vle-vqa", world / "questions.jsonl", tmp_path / "x", init=str(bare), options=options))


@pytest.mark.skipif(not (FIXTURES / "vle" / "vle-vqa").exists(), reason="VLE conformance fixtures absent")
def test_checkpoint_written_by_the_original_code_fine_tunes_into_its_own_layout(world: Path, tmp_path: Path) -> None:
    source = FIXTURES / "vle" / "vle-vqa"
    options = TrainOptions(steps=2, lr=1e-3, warmup=1, checkpoint_every=100, log_every=100)
    run_job(TrainJob("vle-vqa", world / "questions.jsonl", tmp_path, init=str(source), batch_size=4, options=options))
    before, after = read_state_dict(source / "pytorch_model.bin"), read_state_dict(tmp_path / "pytorch_model.bin")
    labels = json.loads((tmp_path / "config.json").read_text())["id2label"]
    assert list(after) == list(before)
    for key, tensor in before.items():
        rows = (len(labels),) if key.startswith("vqa_classifier.3.") else tensor.shape[:1]
        assert after[key].shape == (*rows, *tensor.shape[1:]) and after[key].dtype == tensor.dtype, key
    model, _ = load_vle(tmp_path, Head.VQA)
    assert model.vqa_classifier[3].out_features == len(labels) > 10
