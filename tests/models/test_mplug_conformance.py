"""Native mPLUG against the outputs of ModelScope's own mPLUG code (fixtures in ../shared/fixtures/mplug).

The fixture README and mplug/manifest.json describe the checkpoints, the preprocessing, the beam
search and every array; tolerances are the ones they advise (floats 1e-4, pixels 1e-6, ids exact).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixsearch.errors import ModelLoadError
from pixsearch.models.mplug.config import CAPTION, RETRIEVAL, VQA
from pixsearch.models.mplug.generation import DecodeSettings, beam_search
from pixsearch.models.mplug.loading import load_model
from pixsearch.models.mplug.modeling import RUN_PARTS, TASK_PARTS, MplugModel
from pixsearch.models.mplug.pipeline import MplugPipeline
from pixsearch.models.mplug.processor import image_transform, pixels_of
from pixsearch.models.mplug.tokenizer import MplugTokenizer

FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)
MPLUG = FIXTURES / "mplug"
ATOL = 1e-4

if not (MPLUG / "manifest.json").is_file():
    pytest.skip(f"mPLUG conformance fixtures folder absent: {MPLUG}", allow_module_level=True)

MANIFEST = json.loads((MPLUG / "manifest.json").read_text())
INPUTS = json.loads((FIXTURES / "inputs.json").read_text())
TEXTS: list[str] = INPUTS["texts"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run many small ops: one thread is faster, and far faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def max_diff(ours: torch.Tensor | np.ndarray, reference: np.ndarray) -> float:
    ours = ours.detach().float().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    assert ours.shape == reference.shape, f"shape {ours.shape} != reference {reference.shape}"
    return float(np.abs(ours.astype(np.float64) - reference.astype(np.float64)).max())


def unpad(ids: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in ids if i >= 0)


class Loaded:
    """One fixture task: its model (all parts ModelScope builds for the task), tokenizer and arrays."""

    def __init__(self, task: str) -> None:
        self.dir = MPLUG / task
        self.model: MplugModel = load_model(self.dir, task, TASK_PARTS[task])
        self.tokenizer = MplugTokenizer.from_dir(self.dir)
        self.ref = np.load(MPLUG / f"{task}.npz")
        self.images = [Image.open(FIXTURES / entry["file"]).convert("RGB") for entry in INPUTS["images"]]

    def pixels(self, image_index: np.ndarray) -> torch.Tensor:
        return pixels_of(image_transform(self.model.config), [self.images[i] for i in image_index])


@pytest.fixture(scope="module")
def retrieval() -> Loaded:
    return Loaded(RETRIEVAL)


@pytest.fixture(scope="module")
def vqa() -> Loaded:
    return Loaded(VQA)


@pytest.fixture(scope="module")
def caption() -> Loaded:
    return Loaded(CAPTION)


@pytest.fixture(scope="module")
def retrieval_outputs(retrieval: Loaded) -> dict[str, torch.Tensor]:
    model, ref = retrieval.model, retrieval.ref
    ids, mask = retrieval.tokenizer.encode(TEXTS)
    with torch.inference_mode():
        tokens = model.vision_tokens(retrieval.pixels(np.arange(len(retrieval.images))))
        embeds = model.project_vision(tokens)
        text = model.text_hidden(ids, mask)
        image_itc = torch.nn.functional.normalize(model.itc_image(embeds), dim=-1)
        text_itc = torch.nn.functional.normalize(model.itc_text(text), dim=-1)
        rows_i, rows_t = torch.from_numpy(ref["pair_image_index"]), torch.from_numpy(ref["pair_text_index"])
        logits = model.itm_logits(embeds[rows_i], text[rows_t], mask[rows_t])
    return {
        "vision_tower_output": tokens,
        "image_embeds": embeds,
        "text_hidden": text,
        "itc_image_embeds": image_itc,
        "itc_text_embeds": text_itc,
        "itc_cosine": image_itc @ text_itc.T,
        "itm_logits": logits,
        "itm_probs": logits.softmax(dim=-1),
    }


def texts_for(loaded: Loaded) -> list[str]:
    if "pair_text_index" in loaded.ref.files:
        return [TEXTS[j] for j in loaded.ref["pair_text_index"]]
    return [""] * len(loaded.ref["pair_image_index"])  # captioning: the empty prompt


def decoder_run(loaded: Loaded, task: str) -> dict[str, object]:
    """Decoder memory, step-0 logits and the beam n-best, computed the way the backends do."""
    model, ref = loaded.model, loaded.ref
    ids, mask = loaded.tokenizer.encode(texts_for(loaded))
    with torch.inference_mode():
        embeds = model.image_embeds(loaded.pixels(ref["pair_image_index"]))
        if task == VQA:
            memory, memory_mask = model.answer_memory(embeds, model.text_hidden(ids, mask), mask)
        else:
            memory, memory_mask = model.caption_memory(embeds)
        kv, mask_add = model.decoder_inputs(memory, memory_mask)

        def step(prefixes: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            return model.text_decoder(prefixes, [(k[items], v[items]) for k, v in kv], mask_add[items])[:, -1]

        rows = memory.shape[0]
        step0 = step(torch.full((rows, 1), loaded.tokenizer.cls_id), torch.arange(rows))
        nbest = beam_search(step, rows, DecodeSettings(), memory.device)
    return {"memory": memory, "memory_mask": memory_mask, "step0": step0, "nbest": nbest, "ids": ids, "mask": mask}


@pytest.fixture(scope="module")
def vqa_run(vqa: Loaded) -> dict[str, object]:
    return decoder_run(vqa, VQA)


@pytest.fixture(scope="module")
def caption_run(caption: Loaded) -> dict[str, object]:
    return decoder_run(caption, CAPTION)


@pytest.mark.parametrize("task", [RETRIEVAL, VQA, CAPTION])
def test_every_fixture_checkpoint_loads_without_missing_or_unexpected_keys(task: str) -> None:
    model = load_model(MPLUG / task, task, TASK_PARTS[task])
    assert model.parts == TASK_PARTS[task]
    assert not model.training


def test_retrieval_preprocessing_matches(retrieval: Loaded) -> None:
    ids, mask = retrieval.tokenizer.encode(TEXTS)
    np.testing.assert_array_equal(ids.numpy(), retrieval.ref["input_ids"])
    np.testing.assert_array_equal(mask.numpy(), retrieval.ref["attention_mask"])
    assert max_diff(retrieval.pixels(np.arange(3)), retrieval.ref["pixel_values"]) <= 1e-6


@pytest.mark.parametrize(
    "name",
    [
        "vision_tower_output",
        "image_embeds",
        "text_hidden",
        "itc_image_embeds",
        "itc_text_embeds",
        "itc_cosine",
        "itm_logits",
        "itm_probs",
    ],
)
def test_retrieval_arrays_match(retrieval: Loaded, retrieval_outputs: dict[str, torch.Tensor], name: str) -> None:
    assert max_diff(retrieval_outputs[name], retrieval.ref[name]) <= ATOL


@pytest.mark.parametrize("task", [VQA, CAPTION])
def test_generation_preprocessing_and_decoder_inputs_match(task: str, request: pytest.FixtureRequest) -> None:
    loaded: Loaded = request.getfixturevalue({VQA: "vqa", CAPTION: "caption"}[task])
    run = request.getfixturevalue({VQA: "vqa_run", CAPTION: "caption_run"}[task])
    ref = loaded.ref
    np.testing.assert_array_equal(run["ids"].numpy(), ref["input_ids"])
    np.testing.assert_array_equal(run["mask"].numpy(), ref["attention_mask"])
    assert max_diff(loaded.pixels(ref["pair_image_index"]), ref["pixel_values"]) <= 1e-6
    np.testing.assert_array_equal(run["memory_mask"].numpy(), ref["decoder_memory_mask"])
    assert max_diff(run["memory"], ref["decoder_memory"]) <= ATOL
    assert max_diff(run["step0"], ref["step0_logits"]) <= ATOL


@pytest.mark.parametrize("task", [VQA, CAPTION])
def test_beam_search_reproduces_ids_texts_and_scores(task: str, request: pytest.FixtureRequest) -> None:
    loaded: Loaded = request.getfixturevalue({VQA: "vqa", CAPTION: "caption"}[task])
    run = request.getfixturevalue({VQA: "vqa_run", CAPTION: "caption_run"}[task])
    ref = loaded.ref
    for row, hyps in enumerate(run["nbest"]):
        assert len(hyps) == ref["nbest_count"][row]
        assert hyps[0].ids == unpad(ref["generated_ids"][row]), f"row {row}"
        assert [h.ids for h in hyps] == [unpad(ids) for ids in ref["nbest_ids"][row][: len(hyps)]], f"row {row}"
        assert loaded.tokenizer.decode(hyps[0].ids) == str(ref["generated_text"][row])
        assert abs(hyps[0].score - float(ref["generated_score"][row])) <= ATOL
        assert max_diff(np.array([h.score for h in hyps]), ref["nbest_scores"][row][: len(hyps)]) <= ATOL


@pytest.mark.parametrize("task", [RETRIEVAL, VQA, CAPTION])
def test_pipeline_outputs_match_modelscope_pipeline(task: str) -> None:
    pipe = MplugPipeline(task, MPLUG / task)
    for case in MANIFEST["tasks"][task]["pipeline_results"]:
        image = FIXTURES / INPUTS["images"][case["image"]]["file"]
        inputs = image if task == CAPTION else {"image": str(image), "text": TEXTS[case["text"]]}
        expected = case["output"]
        got = pipe(inputs)
        assert got.keys() == expected.keys()
        if task == RETRIEVAL:
            assert max_diff(np.array(got["scores"]), np.array(expected["scores"])) <= ATOL
        else:
            assert got == expected, f"image {case['image']}, text {case.get('text')}"


def _copy_with_state(tmp_path: Path, change: dict[str, torch.Tensor | None]) -> Path:
    """A copy of the retrieval fixture whose checkpoint has keys added (tensor) or removed (None)."""
    target = tmp_path / RETRIEVAL
    shutil.copytree(MPLUG / RETRIEVAL, target, ignore=shutil.ignore_patterns("pytorch_model.bin"))
    state = torch.load(MPLUG / RETRIEVAL / "pytorch_model.bin", map_location="cpu", weights_only=True)
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save(state, target / "pytorch_model.bin")
    return target


def test_a_stray_key_is_a_load_error_naming_it(tmp_path: Path) -> None:
    directory = _copy_with_state(tmp_path, {"model.itm_head.extra_bias": torch.zeros(2)})
    with pytest.raises(ModelLoadError, match=r"unexpected keys: itm_head\.extra_bias"):
        load_model(directory, RETRIEVAL, RUN_PARTS["itm"])


def test_a_missing_key_is_a_load_error_naming_it(tmp_path: Path) -> None:
    directory = _copy_with_state(tmp_path, {"model.text_proj.bias": None})
    with pytest.raises(ModelLoadError, match=r"missing keys: text_proj\.bias"):
        load_model(directory, RETRIEVAL, RUN_PARTS["itc"])
    # a model that does not run the text projection loads the same checkpoint fine
    assert load_model(directory, RETRIEVAL, RUN_PARTS["itm"]).parts == RUN_PARTS["itm"]
