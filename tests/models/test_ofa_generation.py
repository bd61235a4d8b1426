"""OFA answer scoring, beam search, position tables and caption clean-up, without weights.

A fake decoder stands in for the network: its logits at position t are a deterministic function
of the ids up to t (so it is causal, like the real decoder) and favour tokens outside the answers.
"""

from __future__ import annotations

import math

import pytest
import torch

from pixsearch.models.ofa import positions
from pixsearch.models.ofa.config import BeamSettings
from pixsearch.models.ofa.generation import AnswerTrie, BeamSearch, traverse
from pixsearch.models.ofa.processor import pre_caption

BOS, PAD, EOS, UNK = 0, 1, 2, 3
VOCAB = 16
ANSWERS = [[5], [6, 7], [8]]  # one two-token answer, so paths end at different steps
PREFIX = [BOS, 10, 11, 12]


def fake_decoder(seed: int, favoured: int = 13):
    def decode(ids: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in ids.tolist():
            steps = []
            for t in range(len(row)):
                generator = torch.Generator().manual_seed(hash((seed, *row[: t + 1])) % (2**31))
                logits = torch.randn(VOCAB, generator=generator) * 3
                logits[favoured] += 40.0  # a token no answer contains
                steps.append(logits)
            rows.append(torch.stack(steps))
        return torch.stack(rows)

    return decode


def path_log_prob(decode, path: list[int], trie: AnswerTrie) -> float:
    """Brute force: forced prefix log-probs (unmasked), then trie-masked answer and </s> log-probs."""
    full = [BOS, *path]
    logits = decode(torch.tensor([full[:-1]]))[0]
    total = 0.0
    for t, target in enumerate(full[1:]):
        step = logits[t].clone()
        if t >= len(PREFIX):
            allowed = trie.next_tokens([BOS, *full[len(PREFIX) + 1 : t + 1]])
            mask = torch.ones(VOCAB, dtype=torch.bool)
            mask[allowed] = False
            step[mask] = -math.inf
        total += float(torch.log_softmax(step, -1)[target])
    return total


def test_trie_allows_only_answer_continuations() -> None:
    trie = AnswerTrie([[5], [6, 7], [6, 9]], BOS, EOS)
    assert sorted(trie.next_tokens([BOS])) == [5, 6]
    assert sorted(trie.next_tokens([BOS, 6])) == [7, 9]
    assert trie.next_tokens([BOS, 5]) == [EOS]
    assert trie.next_tokens([BOS, 4]) == [EOS]  # off the trie: only </s>


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_only_finishes_answers_with_fairseq_scores(seed: int) -> None:
    trie = AnswerTrie(ANSWERS, BOS, EOS)
    decode = fake_decoder(seed)
    search = BeamSearch(BeamSettings(beam_size=3, max_len_b=32, no_repeat_ngram_size=3), trie, PAD, UNK, max_beam=3)
    result = search.run(decode, PREFIX, source_length=6)
    assert len(result.hypotheses) == 3
    scores = [h.score for h in result.hypotheses]
    assert scores == sorted(scores, reverse=True)
    found = []
    for hypothesis in result.hypotheses:
        assert hypothesis.tokens[: len(PREFIX)] == PREFIX and hypothesis.tokens[-1] == EOS
        answer = hypothesis.tokens[len(PREFIX) : -1]
        assert answer in ANSWERS
        found.append(answer)
        expected = path_log_prob(decode, hypothesis.tokens, trie)
        assert float(hypothesis.positional_scores.sum()) == pytest.approx(expected, abs=1e-4)
        assert hypothesis.score == pytest.approx(expected / len(hypothesis.tokens), abs=1e-5)
        assert hypothesis.positional_scores[-1] == 0.0  # </s> is the only allowed token after an answer
    assert sorted(found) == sorted(ANSWERS)
    torch.testing.assert_close(result.first_step_logits, decode(torch.tensor([[BOS]]))[0, 0])
    torch.testing.assert_close(result.answer_step_logits, decode(torch.tensor([[BOS, *PREFIX]]))[0, -1])


def test_smaller_beams_keep_the_best_answers() -> None:
    trie = AnswerTrie([[5], [6], [8]], BOS, EOS)
    decode = fake_decoder(3)
    wide = BeamSearch(BeamSettings(beam_size=3, max_len_b=32), trie, PAD, UNK, max_beam=3).run(decode, PREFIX, 6)
    narrow = BeamSearch(BeamSettings(beam_size=1, max_len_b=32), trie, PAD, UNK, max_beam=3).run(decode, PREFIX, 6)
    assert [h.tokens for h in narrow.hypotheses] == [wide.hypotheses[0].tokens]


def test_beam_size_is_capped_at_the_number_of_answers() -> None:
    search = BeamSearch(BeamSettings(beam_size=5), AnswerTrie(ANSWERS, BOS, EOS), PAD, UNK, max_beam=3)
    assert search.beam_size == 3


def test_repeated_ngram_at_the_prompt_end_finishes_nothing() -> None:
    # the forced last prompt token would repeat the trigram (10, 11, 12): fairseq blocks it, so no
    # beam survives (ModelScope then fails an assertion; the pipeline falls back, see conformance)
    prefix = [BOS, 10, 11, 12, 10, 11, 12]
    search = BeamSearch(BeamSettings(beam_size=3, no_repeat_ngram_size=3), AnswerTrie(ANSWERS, BOS, EOS), PAD, UNK, 3)
    assert search.run(fake_decoder(0), prefix, 8).hypotheses == []
    unblocked = BeamSearch(
        BeamSettings(beam_size=3, no_repeat_ngram_size=0), AnswerTrie(ANSWERS, BOS, EOS), PAD, UNK, 3
    )
    assert len(unblocked.run(fake_decoder(0), prefix, 8).hypotheses) == 3


@pytest.mark.parametrize("seed", range(3))
def test_traverse_scores_each_answer_in_full(seed: int) -> None:
    trie = AnswerTrie(ANSWERS, BOS, EOS)
    decode = fake_decoder(seed)
    prompt = PREFIX
    result = traverse(decode, prompt, ANSWERS, trie, PAD)
    assert result.probs.sum() == pytest.approx(1.0, abs=1e-6)
    for score, answer in zip(result.scores.tolist(), ANSWERS, strict=True):
        logits = decode(torch.tensor([[*prompt, *answer]]))[0]
        expected = 0.0
        for offset, target in enumerate([*answer, EOS]):
            allowed = trie.next_tokens([BOS, *answer[:offset]])
            step = torch.full((VOCAB,), -math.inf)
            step[allowed] = logits[len(prompt) - 1 + offset, allowed]
            expected += float(torch.log_softmax(step, -1)[target])
        assert score == pytest.approx(expected, abs=1e-5)
    torch.testing.assert_close(result.answer_step_logits, decode(torch.tensor([prompt]))[0, -1])


def test_token_buckets() -> None:
    table = positions.token_bucket_table(16, max_position=64)
    assert table.shape == (64, 64) and table.dtype == torch.int64
    assert (table.diagonal() == 15).all()
    assert table[10, 3] == 15 + 7 and table[3, 10] == 15 - 7  # near offsets keep their own bucket
    assert table.min() >= 0 and table.max() <= 2 * 16 - 2
    assert table[63, 0] == table.max() and table[0, 63] == table.min()


def test_image_buckets_and_position_ids() -> None:
    table = positions.image_bucket_table(3)
    count = positions.image_bucket_count(3)
    assert table.shape == (10, 10) and count == 28
    assert table[0, 0] == count - 1 and table[0, 5] == count - 3 and table[5, 0] == count - 2
    assert (table[1:, 1:].diagonal() == 2 * 5 + 2).all()  # zero offset: (0 + 2) * 5 + (0 + 2)
    assert positions.image_position_ids(2, 3, bucket_size=7).tolist() == [1, 2, 3, 8, 9, 10]
    window = positions.decoder_image_position_table(code_image_size=16, bucket_size=7)
    assert window[:5].tolist() == [0, 1, 2, 8, 9] and len(window) == 1 + 4 + 768


def test_pre_caption() -> None:
    assert pre_caption(",.A Red-Circle on  the/LEFT\n") == "a red circle on the left"
    assert pre_caption("  ,.a") == ",.a"  # leading punctuation goes only before whitespace is trimmed
    assert pre_caption("one two three four", max_words=2) == "one two"
    assert pre_caption("<person> smiles") == "person smiles"


def test_a_prompt_longer_than_max_len_still_reaches_an_answer() -> None:
    # fairseq would force </s> inside the prefix (ModelScope then answers ''); the limit is raised instead
    prefix = [BOS, 9, 10, 11, 12, 13, 14, 15]
    search = BeamSearch(BeamSettings(beam_size=3, max_len_b=4), AnswerTrie(ANSWERS, BOS, EOS), PAD, UNK, 3)
    result = search.run(fake_decoder(1), prefix, source_length=9)
    assert len(result.hypotheses) == 3
    assert all(h.tokens[: len(prefix)] == prefix and h.tokens[len(prefix) : -1] in ANSWERS for h in result.hypotheses)
