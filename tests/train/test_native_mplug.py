"""Fine-tuning native mPLUG (`pixsearch train mplug-itm / mplug-vqa / mplug-caption`) on tiny random
checkpoints in ModelScope's layout: the loss falls, the output folder has exactly the input's keys,
shapes and dtypes, it reloads to the same outputs, and a killed run resumes bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pixsearch.errors import ConfigError, ModelLoadError
from pixsearch.evaluation.readers import BadRowPolicy, DataSetError
from pixsearch.models import Role, create
from pixsearch.models.mplug.config import CAPTION, RETRIEVAL, VQA
from pixsearch.models.mplug.loading import load_model
from pixsearch.models.mplug.modeling import RUN_PARTS
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import TrainJob, TrainOptions, last_checkpoint, run_job, train
from pixsearch.train.data import attach_negatives
from pixsearch.train.mplug_tiny import build_tiny_mplug
from pixsearch.train.native import (
    MASTER_WEIGHTS,
    NativeSetup,
    check_same_layout,
    native_backend,
    read_state_dict,
    write_weights,
)
from pixsearch.train.tiny import TinyConfig
from pixsearch.train.tokenizer import words_of

TINY = TinyConfig(image_size=8, patch_size=4, hidden=64, layers=1, heads=2, projection_dim=16)  # 32 px, 2x2 patches
BACKENDS = {RETRIEVAL: "mplug-itm", VQA: "mplug-vqa", CAPTION: "mplug-caption"}
DATA = {RETRIEVAL: "captions.jsonl", VQA: "questions.jsonl", CAPTION: "captions.jsonl"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mplug-world")
    write_dataset(root, SynthOptions(seed=2, train=16, val=0, test=4, image_size=32))
    chinese = [
        {"image": row["image"], "caption": text, "split": "train"}
        for row, text in zip(
            (json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()),
            ["一只红色的圆", "一只蓝色的方块", "两个绿色的三角"] * 40,
            strict=False,
        )
    ]
    (root / "captions_zh.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chinese))
    return root


def _words(world: Path) -> list[str]:
    texts = [
        json.loads(line)
        for name in ("captions.jsonl", "questions.jsonl", "captions_zh.jsonl")
        for line in (world / name).read_text().splitlines()
    ]
    return words_of(row.get("caption") or f"{row['question']} {row['answer']}" for row in texts)


@pytest.fixture(scope="module")
def checkpoints(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random folder per task, its weights drawn as the conformance fixtures' are (so outputs
    differ per input, like a trained model's). The retrieval one also holds keys inference never reads
    (CLIP's projection, a momentum copy), which a fine-tune must write back unchanged."""
    root = tmp_path_factory.mktemp("mplug-init")
    words = _words(world)
    folders = {task: build_tiny_mplug(task, root / task, words, TINY, seed) for seed, task in enumerate(BACKENDS)}
    generator = torch.Generator().manual_seed(0)
    for task, folder in folders.items():
        path = folder / "pytorch_model.bin"
        state = torch.load(path, weights_only=True)
        for key, value in state.items():
            if value.is_floating_point() and "queue" not in key and key != "model.temp":
                state[key] = _drawn(key, value, generator)
        if task == RETRIEVAL:
            state["model.visual_encoder.visual.proj"] = torch.randn(64, 16, generator=generator)
            state["model.text_proj_m.weight"] = torch.randn(16, 64, generator=generator)
        torch.save(state, path)
    return folders


def _drawn(key: str, value: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(value.shape, generator=generator)
    if value.ndim >= 2:
        return noise / value[0].numel() ** 0.5
    if "LayerNorm" in key or ".ln_" in key:
        return 1 + 0.2 * noise if key.endswith("weight") else 0.1 * noise
    return 0.1 * noise


def _task(task: str, folder: Path, world: Path, steps: int, data: str | None = None, batch_size: int = 8):
    backend = native_backend(BACKENDS[task])
    rows = backend.loader(world / (data or DATA[task]), backend.transform(folder), split="train")
    return backend.task(NativeSetup(BACKENDS[task], folder, rows, batch_size, seed=3, steps=steps))


def _options(steps: int, **changes) -> TrainOptions:
    return TrainOptions(**{"steps": steps, "lr": 2e-3, "warmup": 2, "checkpoint_every": 100, "log_every": 5, **changes})


@pytest.mark.parametrize("task", [RETRIEVAL, VQA, CAPTION])
def test_training_lowers_the_loss_and_saves_the_input_layout(
    task: str, checkpoints: dict[str, Path], world: Path, tmp_path: Path
) -> None:
    trained = _task(task, checkpoints[task], world, steps=30)
    with torch.no_grad():
        before = [float(trained.loss(step)) for step in range(4)]
    train(trained, tmp_path / "out", _options(30))
    with torch.no_grad():
        after = [float(trained.loss(step)) for step in range(4)]
    assert sum(after) < 0.9 * sum(before), (before, after)

    source, saved = (
        read_state_dict(checkpoints[task] / "pytorch_model.bin"),
        read_state_dict(tmp_path / "out" / "pytorch_model.bin"),
    )
    assert list(saved) == list(source)  # the same keys, in the same order
    assert all(saved[k].shape == source[k].shape and saved[k].dtype == source[k].dtype for k in source)
    for name in ("configuration.json", "config.yaml", "config_bert.json", "vocab.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (checkpoints[task] / name).read_bytes()
    trained_keys = {f"model.{k}" for k in trained.model.state_dict()}
    assert any(not torch.equal(saved[k], source[k]) for k in trained_keys)
    assert all(torch.equal(saved[k], source[k]) for k in source if k not in trained_keys)  # queues, momentum copies

    # the saved folder reloads (by the loader the backends use) to the in-memory model's outputs
    reloaded = load_model(tmp_path / "out", task, RUN_PARTS[task])
    trained.model.eval()
    ids, mask = trained.tokens(["a red circle", "what shape is the blue one?", "a small square"])
    with torch.no_grad():
        expected = _outputs(trained.model, trained.pixels[:3], ids, mask, task)
        actual = _outputs(reloaded, trained.pixels[:3], ids, mask, task)
    for a, b in zip(expected, actual, strict=True):
        assert torch.equal(a, b)
    if task == RETRIEVAL:
        assert float(saved["model.temp"]) == float(trained.model.temp.detach())
    _serves(BACKENDS[task], tmp_path / "out", world)


def _outputs(model, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, task: str) -> list[torch.Tensor]:
    image = model.image_embeds(pixels)
    if task == CAPTION:
        memory, memory_mask = model.caption_memory(image)
    else:
        text = model.text_hidden(ids, mask)
        if task == RETRIEVAL:
            return [model.itc_image(image), model.itc_text(text), model.itm_logits(image, text, mask)]
        memory, memory_mask = model.answer_memory(image, text, mask)
    kv, memory_add = model.decoder_inputs(memory, memory_mask)
    return [model.text_decoder(ids, kv, memory_add)]


def _serves(backend: str, folder: Path, world: Path) -> None:
    """The saved folder loads by the same spec as the input, in the role the backend serves."""
    image = Image.open(next((world / "images" / "test").glob("*.png")))
    if backend == "mplug-itm":
        assert create(f"{backend}:{folder}", Role.RERANKER).score("a red circle", [image, image]).shape == (2,)
    elif backend == "mplug-vqa":
        assert isinstance(create(f"{backend}:{folder}", Role.ANSWERER).answer(image, "what shape?", 1)[0][0], str)
    else:
        assert isinstance(create(f"{backend}:{folder}", Role.CAPTIONER).caption([image])[0], str)


class Interrupt(Exception):
    pass


def _half(folder: Path, target: Path) -> Path:
    """A copy of `folder` with its weights stored in float16, as published mPLUG checkpoints are."""
    shutil.copytree(folder, target)
    state = torch.load(target / "pytorch_model.bin", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, target / "pytorch_model.bin")
    return target


@pytest.mark.parametrize(("task", "float16"), [(RETRIEVAL, True), (VQA, False)])
def test_a_killed_run_resumes_bit_for_bit(
    task: str, float16: bool, checkpoints: dict[str, Path], world: Path, tmp_path: Path, clip_spec: str
) -> None:
    init = _half(checkpoints[task], tmp_path / "init") if float16 else checkpoints[task]

    def job(output: Path) -> TrainJob:
        options = _options(6, checkpoint_every=2, log_every=1)
        # the reranker also learns from the world's swapped-attribute captions and a miner's negatives
        negatives, miner = (world / "negatives.jsonl", clip_spec) if task == RETRIEVAL else (None, None)
        return TrainJob(
            BACKENDS[task],
            world / DATA[task],
            output,
            init=str(init),
            batch_size=8,
            miner=miner,
            negatives=negatives,
            options=options,
        )

    whole = run_job(job(tmp_path / "whole"))

    def stop_at_five(phase: str, done: int, total: int, loss: float | None) -> None:
        if phase == "train" and done == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_job(job(tmp_path / "cut"), stop_at_five)
    checkpoint = last_checkpoint(tmp_path / "cut")
    assert checkpoint is not None and checkpoint.name == "step-00000004"
    # float16 would round the weights: the checkpoint keeps the float32 ones beside the publisher's copy
    assert (checkpoint / MASTER_WEIGHTS).exists() == float16
    assert not (tmp_path / "cut" / "pytorch_model.bin").exists()
    resumed = run_job(job(tmp_path / "cut"))
    assert resumed.resumed_from == 4 and whole.resumed_from == 0
    a, b = (
        read_state_dict(tmp_path / "whole" / "pytorch_model.bin"),
        read_state_dict(tmp_path / "cut" / "pytorch_model.bin"),
    )
    assert list(a) == list(b) == list(read_state_dict(init / "pytorch_model.bin"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    if float16:
        assert {v.dtype for v in b.values() if v.is_floating_point()} == {torch.float16}
    assert not (tmp_path / "cut" / MASTER_WEIGHTS).exists()


def test_weights_that_do_not_fit_the_input_layout_are_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    source = checkpoints[CAPTION] / "pytorch_model.bin"
    with pytest.raises(ModelLoadError, match=r"other shapes: model\.text_decoder\.cls\.predictions\.bias \(checkpoint"):
        write_weights(source, tmp_path / "w.bin", {"model.text_decoder.cls.predictions.bias": torch.zeros(3)})
    with pytest.raises(ModelLoadError, match=r"keys it lacks: model\.nowhere"):
        write_weights(source, tmp_path / "w.bin", {"model.nowhere": torch.zeros(3)})
    assert not (tmp_path / "w.bin").exists()
    with pytest.raises(ModelLoadError, match=r"x\.bin does not match the input checkpoint: missing: b; changed: a"):
        check_same_layout(
            {"a": torch.zeros(2, dtype=torch.float16), "b": torch.zeros(1)}, {"a": torch.zeros(2)}, "x.bin"
        )


def test_bad_rows_are_named_and_the_input_folder_is_never_the_output(
    checkpoints: dict[str, Path], world: Path, tmp_path: Path
) -> None:
    rows = (world / "questions.jsonl").read_text().splitlines()
    rows.insert(2, "{broken")
    rows.insert(
        4, json.dumps({"image": "images/train/gone.png", "question": "what?", "answer": "red", "split": "train"})
    )
    data = tmp_path / "questions.jsonl"
    data.write_text("\n".join(rows) + "\n")
    (tmp_path / "images").symlink_to(world / "images")
    job = TrainJob("mplug-vqa", data, tmp_path / "out", init=str(checkpoints[VQA]), policy=BadRowPolicy.STOP)
    with pytest.raises(DataSetError) as error:
        run_job(job)
    assert f"{data}, line 3: not valid JSON" in str(error.value)
    assert f"{data}, line 5: {tmp_path / 'images' / 'train' / 'gone.png'}: " in str(error.value)
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()
    with pytest.raises(ConfigError, match="is the --init folder"):
        run_job(TrainJob("mplug-vqa", world / "questions.jsonl", checkpoints[VQA], init=str(checkpoints[VQA])))


def test_from_scratch_in_chinese(world: Path, tmp_path: Path) -> None:
    """Without --init a tiny random mPLUG is built from the data's words; CJK captions train like any."""
    losses: list[float] = []

    def record(phase: str, done: int, total: int, loss: float | None) -> None:
        if phase == "train" and loss is not None:
            losses.append(loss)

    options = _options(25)
    run_job(TrainJob("mplug-caption", world / "captions_zh.jsonl", tmp_path / "zh", tiny=TINY, options=options), record)
    assert (tmp_path / "zh" / "init" / "configuration.json").exists()
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    captioner = create(f"mplug-caption:{tmp_path / 'zh'}", Role.CAPTIONER)
    ids = captioner.tokenizer.encode(["一只红色的圆"])[0][0].tolist()
    assert captioner.tokenizer.vocab["[UNK]"] not in ids
    assert captioner.tokenizer.decode(ids, cjk=True) == "一只红色的圆"


def test_hard_negatives_come_in_gradually_only_from_scratch(checkpoints: dict[str, Path], world: Path) -> None:
    fine_tune = _task(RETRIEVAL, checkpoints[RETRIEVAL], world, steps=100)
    assert [fine_tune.hard_share(step) for step in (0, 50, 99)] == [1.0, 1.0, 1.0]
    backend = native_backend("mplug-itm")
    rows = backend.loader(world / "captions.jsonl", backend.transform(checkpoints[RETRIEVAL]), split="train")
    setup = NativeSetup("mplug-itm", checkpoints[RETRIEVAL], rows, 8, seed=3, steps=100, from_scratch=True)
    scratch = backend.task(setup)
    assert [scratch.hard_share(step) for step in (0, 30, 40, 50, 99)] == [0.0, 0.0, 0.25, 0.5, 0.5]
    # a caption listed as false of an image that is another image's own (a swapped twin) makes the
    # first image a hard negative for it
    attach_negatives(rows, world / "negatives.jsonl")
    ranked = backend.task(setup)
    twins = {c: images for c, images in ranked.false_of.items() if any(c in own for own in rows.captions)}
    assert twins and all(c not in rows.captions[i] for c, images in twins.items() for i in images)
