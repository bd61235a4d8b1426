"""mPLUG pieces that need no weights: tokenizer, beam/greedy search rules, checkpoint key handling."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pixsearch.errors import ModelLoadError
from pixsearch.models.mplug.config import RETRIEVAL
from pixsearch.models.mplug.generation import DecodeSettings, beam_search, greedy_search, length_penalty
from pixsearch.models.mplug.loading import read_checkpoint
from pixsearch.models.mplug.tokenizer import MplugTokenizer, join_cjk

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "dog", "##s", "run", "?", "'", "s", "狗", "在", "跑", "。"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run many small ops: one thread is faster, and far faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer() -> MplugTokenizer:
    return MplugTokenizer({token: i for i, token in enumerate(SPECIALS + WORDS)})


def ids_of(tokenizer: MplugTokenizer, *tokens: str) -> list[int]:
    return [tokenizer.vocab[t] for t in tokens]


def test_encode_lowercases_wraps_and_pads_to_25(tokenizer: MplugTokenizer) -> None:
    ids, mask = tokenizer.encode(["A DOGS run?", ""])
    assert ids.shape == mask.shape == (2, 25)
    assert ids[0, :7].tolist() == ids_of(tokenizer, "[CLS]", "a", "dog", "##s", "run", "?", "[SEP]")
    assert ids[0, 7:].eq(tokenizer.pad_id).all() and mask[0].tolist() == [1] * 7 + [0] * 18
    assert ids[1, :2].tolist() == [tokenizer.cls_id, tokenizer.sep_id] and int(mask[1].sum()) == 2


def test_encode_truncates_long_text_keeping_sep(tokenizer: MplugTokenizer) -> None:
    ids, mask = tokenizer.encode(["dog " * 40])
    assert int(mask.sum()) == 25 and ids[0, -1].item() == tokenizer.sep_id


def test_decode_skips_specials_glues_pieces_and_cleans_up(tokenizer: MplugTokenizer) -> None:
    ids = ids_of(tokenizer, "[CLS]", "a", "dog", "##s", "run", "?", "[SEP]", "[PAD]")
    assert tokenizer.decode(ids) == "a dogs run?"
    assert tokenizer.decode(ids_of(tokenizer, "dog", "'", "s")) == "dog's"
    assert tokenizer.decode([10_000, *ids_of(tokenizer, "dog")]) == "dog"  # out-of-vocabulary ids are [UNK]


def test_decode_joins_cjk_only_when_asked(tokenizer: MplugTokenizer) -> None:
    ids = ids_of(tokenizer, "[CLS]", "狗", "在", "跑", "。", "[SEP]")
    assert tokenizer.decode(ids) == "狗 在 跑 。"  # what ModelScope's BertTokenizer.decode returns
    assert tokenizer.decode(ids, cjk=True) == "狗在跑。"
    assert join_cjk("a dog 在 跑 fast") == "a dog在跑fast"


def test_tokenizer_needs_the_special_tokens() -> None:
    with pytest.raises(ModelLoadError, match=r"\[SEP\]"):
        MplugTokenizer({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[MASK]": 3})


# a 4-token language: start, end, a, b; the next-token logits depend only on the last token
START, END, A, B = 0, 1, 2, 3


def table_step(table: list[list[float]], calls: list[tuple[int, ...]]):
    logits = torch.tensor(table)

    def step(prefixes: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(prefixes.shape))
        assert prefixes.shape[0] % items.shape[0] == 0
        return logits[prefixes[:, -1]]

    return step


SETTINGS = DecodeSettings(beam_size=3, min_length=1, max_length=4, start_id=START, end_id=END)


def test_length_penalty_is_modelscope_formula() -> None:
    assert length_penalty(0, 0.6) == 1.0
    assert math.isclose(length_penalty(3, 0.6), (9 / 6) ** 0.6)


def test_end_is_blocked_at_step_zero_and_an_item_stops_when_its_top_beam_ends() -> None:
    calls: list[tuple[int, ...]] = []
    # end is the likeliest token everywhere
    step = table_step([[0.0, 5.0, 1.0, 0.5], [0, 5, 1, 0.5], [0, 5, 1, 0.5], [0, 5, 1, 0.5]], calls)
    results = beam_search(step, 2, SETTINGS, torch.device("cpu"))
    assert len(calls) == 2  # step 0 cannot end; at step 1 the top beam emits end
    for hyps in results:
        assert len(hyps) == 3
        assert all(h.ids[1] != END for h in hyps)
        assert hyps[0].ids == (START, A, END)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_finished_beams_are_recorded_and_keep_running() -> None:
    calls: list[tuple[int, ...]] = []
    table = [[0.0, 5.0, 2.0, 1.9], [0.0, 0.0, 0.0, 0.0], [0.0, -2.0, 3.0, 0.0], [0.0, 3.0, 0.0, 0.0]]
    results = beam_search(table_step(table, calls), 1, SETTINGS, torch.device("cpu"))
    ids = [h.ids for h in results[0]]
    assert len(calls) == SETTINGS.max_length  # the top beam (a a a ...) never ends: runs to max_length
    assert ids[0] == (START, A, A, A, A)
    assert (START, B, END) in ids  # recorded when it ended at step 1 ...
    assert any(END in h[1:-1] for h in ids)  # ... and the same beam went on past its end token
    for h in results[0]:
        assert math.isclose(h.score, h.log_prob / length_penalty(len(h.ids) - 2, 0.6), rel_tol=1e-5)


def test_greedy_search_stops_each_row_after_its_end_token() -> None:
    table = [[0.0, 5.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    (hyp,) = greedy_search(table_step(table, []), 1, SETTINGS, torch.device("cpu"))
    assert hyp.ids == (START, A, END)
    # as in beam search, end is blocked after normalising, so step 0's log-prob is not renormalised
    first = torch.log_softmax(torch.tensor(table[START]), 0)[A]
    expected = first + torch.log_softmax(torch.tensor(table[A]), 0)[END]
    assert math.isclose(hyp.log_prob, float(expected), rel_tol=1e-5)


@pytest.mark.parametrize("wrapper", [None, "model", "module"])
def test_read_checkpoint_unwraps_and_strips_model_prefix(tmp_path: Path, wrapper: str | None) -> None:
    state = {"model.itm_head.bias": torch.zeros(2), "model.text_encoder.embeddings.position_ids": torch.arange(4)}
    torch.save(state if wrapper is None else {wrapper: state}, tmp_path / "pytorch_model.bin")
    assert sorted(read_checkpoint(tmp_path / "pytorch_model.bin")) == [
        "itm_head.bias",
        "text_encoder.embeddings.position_ids",
    ]


def test_read_checkpoint_reports_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read mPLUG checkpoint"):
        read_checkpoint(tmp_path / "pytorch_model.bin")


def test_task_names_are_modelscope_names() -> None:
    assert RETRIEVAL == "image-text-retrieval"
