"""Fine-tuning native OFA visual entailment (`pixsearch train ofa-ve`) on a tiny random ModelScope
folder and on the conformance fixture (written by ModelScope, stored in float16): the loss is the
answer's traverse-mode score and falls, the output has exactly the input's keys, shapes and dtypes,
it reloads to the same probabilities, a killed run resumes bit for bit, `pixsearch eval` scores it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from interrupt import Interrupt, stop_at
from PIL import Image
from tiny_models import save_tiny_ofa

from pixsearch.cli import main
from pixsearch.evaluation.readers import BadRowPolicy, DataSetError, read_statements
from pixsearch.models import Role, create
from pixsearch.models.ofa.pipeline import OfaVisualEntailment
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import TrainJob, TrainOptions, last_checkpoint, run_job, train
from pixsearch.train.data import load_statements
from pixsearch.train.native import MASTER_WEIGHTS, NativeSetup, read_state_dict
from pixsearch.train.ofa_tasks import OfaVeTask, ofa_transform

FIXTURES = Path(os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures"))
OFA_FIXTURE = FIXTURES / "ofa" / "visual-entailment"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic world with a statements file: true captions (yes), captions with one swap (no),
    and a statement about a thing the scene may or may not hold (maybe)."""
    root = tmp_path_factory.mktemp("ofa-world")
    write_dataset(root, SynthOptions(seed=4, train=12, val=0, test=4, image_size=32))
    rows = []
    for line in open(root / "negatives.jsonl"):
        row = json.loads(line)
        base = {"image": row["image"], "split": row["split"]}
        rows += [
            {**base, "statement": row["caption"], "label": "yes"},
            {**base, "statement": row["negative"], "label": "contradiction"},
            {**base, "hypothesis": "the shapes were drawn by a child", "label": "neutral"},
        ]
    (root / "statements.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ofa(tmp_path_factory.mktemp("ofa-tiny"), seed=2)


def _task(directory: Path, world: Path, batch_size: int = 6) -> OfaVeTask:
    data = load_statements(world / "statements.jsonl", ofa_transform(directory))
    return OfaVeTask(NativeSetup("ofa-ve", directory, data, batch_size, 0, 20))


def _held_loss(task: OfaVeTask) -> float:
    with torch.no_grad():
        return float(np.mean([float(task.loss(step)) for step in range(3)]))


def test_the_loss_is_the_traverse_score_of_the_true_answer(tiny_dir: Path, world: Path) -> None:
    task = _task(tiny_dir, world)
    engine = OfaVisualEntailment(task.model.eval(), task.processor, task.processor.task)
    rng, rows = task.rng(0), task.indices(0)
    picked = [task.data.qa[i][rng.integers(len(task.data.qa[i]))] for i in rows]
    expected = []
    for i, (statement, answer) in zip(rows, picked, strict=True):
        text = engine.processor.text(statement)
        with torch.no_grad():
            scored = engine.traverse(engine.encode(task.pixels[i].numpy(), text), text)
        expected.append(-float(scored.scores[engine.answers.index(answer)]))
    with torch.no_grad():
        batched = float(task.loss(0))  # padded prompts of several lengths in one batch
    assert batched == pytest.approx(np.mean(expected), rel=1e-5)


def test_fine_tune_lowers_the_loss_keeps_the_layout_and_reloads(tiny_dir: Path, world: Path, tmp_path: Path) -> None:
    task = _task(tiny_dir, world)
    before = _held_loss(task)
    train(task, tmp_path, TrainOptions(steps=12, lr=2e-3, warmup=2, checkpoint_every=100, log_every=100))
    assert _held_loss(task) < 0.5 * before

    source, saved = read_state_dict(tiny_dir / "pytorch_model.bin"), read_state_dict(tmp_path / "pytorch_model.bin")
    assert list(saved) == list(source)
    assert all(saved[k].shape == v.shape and saved[k].dtype == v.dtype for k, v in source.items())
    assert not torch.equal(saved["encoder.image_proj.weight"], source["encoder.image_proj.weight"])
    for name in ("config.json", "configuration.json", "answer2label.json", "vocab.json", "merges.txt"):
        assert (tmp_path / name).read_bytes() == (tiny_dir / name).read_bytes()

    engine = OfaVisualEntailment(task.model.eval(), task.processor, task.processor.task)
    entailer = create(f"ofa-ve:{tmp_path}", Role.ENTAILER)
    image = Image.open(task.data.images[0]).convert("RGB")
    for statement in ("a small red circle", "the shapes were drawn by a child"):
        probs = engine.run(image, statement, generation=False).traverse.probs.double()
        judged = entailer.judge(image, statement)
        got = [judged[relation] for relation in ("contradiction", "entailment", "neutral")]  # no, yes, maybe
        np.testing.assert_allclose(got, (probs / probs.sum()).numpy(), rtol=0, atol=1e-6)


@pytest.mark.skipif(not OFA_FIXTURE.exists(), reason="OFA conformance fixture absent")
def test_modelscope_float16_folder_keeps_its_layout_and_resumes_bit_for_bit(world: Path, tmp_path: Path) -> None:
    def job(output: Path) -> TrainJob:
        options = TrainOptions(steps=3, lr=1e-3, warmup=1, checkpoint_every=1, log_every=1)
        data = world / "statements.jsonl"
        return TrainJob("ofa-ve", data, output, init=str(OFA_FIXTURE), batch_size=3, options=options)

    run_job(job(tmp_path / "whole"))

    with pytest.raises(Interrupt):
        run_job(job(tmp_path / "cut"), stop_at(2))
    checkpoint = last_checkpoint(tmp_path / "cut")
    assert checkpoint is not None and (checkpoint / MASTER_WEIGHTS).exists()  # float16 would round the weights
    assert run_job(job(tmp_path / "cut")).resumed_from == 1

    source = read_state_dict(OFA_FIXTURE / "pytorch_model.bin")
    whole, cut = (read_state_dict(tmp_path / name / "pytorch_model.bin") for name in ("whole", "cut"))
    assert list(whole) == list(cut) == list(source)
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    for key, tensor in source.items():
        assert whole[key].shape == tensor.shape and whole[key].dtype == tensor.dtype, key
        if tensor.dtype == torch.int64:  # the bucket buffers ModelScope stores: written back unchanged
            assert torch.equal(whole[key], tensor), key
    assert {t.dtype for t in whole.values()} == {torch.float16, torch.int64}
    assert create(f"ofa-ve:{tmp_path / 'whole'}").judge(Image.new("RGB", (40, 30)), "a red circle")


def test_statements_file_bad_rows_and_eval(
    tiny_dir: Path, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "statements.csv"
    path.write_text(
        "image,statement,label\n"
        f"{world}/images/train/scene_000000.png,a red circle,YES\n"
        f"{world}/images/train/scene_000000.png,a blue square,perhaps\n"
        f"{world}/images/train/scene_000000.png,,no\n"
        f"{world}/missing.png,a red circle,maybe\n"
    )
    read = read_statements(path)
    assert [(q.question, q.answers) for q in read.questions] == [("a red circle", ("yes",))]
    assert [(row.line, row.reason.split(":")[0]) for row in read.bad] == [
        (3, "label 'perhaps' is not one of yes, no, maybe, entailment, contradiction, neutral"),
        (4, "needs 'image' and a statement (statement / hypothesis / text / sentence2)"),
        (5, f"{world}/missing.png"),
    ]
    with pytest.raises(DataSetError, match="statements.csv"):
        load_statements(path, ofa_transform(tiny_dir), split=None, policy=BadRowPolicy.STOP)

    # eval skips the bad rows (naming them) and scores the rest
    results = tmp_path / "results.json"
    args = ["--statements", str(path), "--entailer", f"ofa-ve:{tiny_dir}", "--split", "all", "--json", str(results)]
    assert main(["eval", *args]) == 0
    assert "entailment ve_accuracy" in capsys.readouterr().out
    scored = json.loads(results.read_text())["entailment"]
    assert scored["statements"] == 1 and scored["ve_accuracy"] in (0.0, 1.0)
    assert [row.split(", line ")[1][:1] for row in scored["skipped_rows"]] == ["3", "4", "5"]
