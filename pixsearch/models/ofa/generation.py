"""Answer scoring constrained to the answer trie, in ModelScope's two modes.

traverse: the decoder reads `decoder_prompt + answer` once per answer; at each answer position the
logits are masked to the trie's allowed tokens, log-softmaxed, and the target log-probs summed
(the final `</s>` is then the only allowed token, so it adds 0). The softmax over the summed
scores is a full distribution over the answers.

generation: fairseq-style beam search from `<s>`, forced through `prefix_tokens` (which starts with
`<s>` again, so the decoder reads `<s> <s> prompt ...`), then restricted to the trie. Hypotheses
score sum(positional log-probs) / length**len_penalty, the forced prefix included. One deliberate
difference: the length limit is raised to fit prefix + longest answer, where fairseq would cut a
long prompt short and ModelScope would answer ''.

Only trie paths ever get a finite score, so both modes can only ever answer one of the answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixsearch.models.ofa.config import BeamSettings

# decoder input ids [n, T] -> logits [n, T, V]
DecodeFn = Callable[[torch.Tensor], torch.Tensor]


class AnswerTrie:
    """Token trie of `<s> answer </s>` paths (ModelScope's `Trie`): which tokens may come next."""

    def __init__(self, answers: Sequence[Sequence[int]], bos: int, eos: int) -> None:
        self.bos, self.eos = bos, eos
        self._root: dict[int, dict] = {}
        self.longest = max((len(answer) for answer in answers), default=0)
        for answer in answers:
            node = self._root
            for token in [bos, *answer, eos]:
                node = node.setdefault(token, {})

    def next_tokens(self, path: Sequence[int]) -> list[int]:
        """Children of `path` (which starts with `<s>`); a path off the trie allows only `</s>`."""
        node = self._root
        for token in path:
            if token not in node:
                return [self.eos]
            node = node[token]
        return list(node)


def _allowed_mask(allowed: Sequence[int], vocab_size: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[list(allowed)] = True
    return mask


@dataclass
class TraverseResult:
    """scores [A]: summed constrained log-probs per answer (ModelScope's `valid_result`);
    probs [A] = softmax(scores); answer_step_logits [V]: raw logits where the answer is predicted."""

    scores: torch.Tensor
    probs: torch.Tensor
    answer_step_logits: torch.Tensor

    @property
    def best(self) -> int:
        return int(self.scores.argmax())


def traverse(
    decode: DecodeFn, decoder_prompt: Sequence[int], answers: Sequence[Sequence[int]], trie: AnswerTrie, pad: int
) -> TraverseResult:
    """Score every answer after `decoder_prompt` (one example)."""
    start = len(decoder_prompt) - 1  # logits here predict the first answer token
    rows = [[*decoder_prompt, *answer] for answer in answers]
    width = max(len(row) for row in rows)
    # Right-padding is harmless without a padding mask: attention is causal, and no scored
    # position comes after a pad.
    inputs = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    logits = decode(inputs).float()
    vocab = logits.shape[-1]
    scores = []
    for row, answer in enumerate(answers):
        targets = [*answer, trie.eos]
        total = logits.new_zeros(())
        for offset, target in enumerate(targets):
            allowed = _allowed_mask(trie.next_tokens([trie.bos, *answer[:offset]]), vocab, logits.device)
            step = logits[row, start + offset].masked_fill(~allowed, -math.inf)
            total = total + F.log_softmax(step, dim=-1)[target]
        scores.append(total)
    result = torch.stack(scores)
    return TraverseResult(result, F.softmax(result, dim=-1), logits[0, start])


@dataclass
class Hypothesis:
    """A finished beam: tokens = prefix + answer + </s> (no leading <s>), per-token log-probs, score."""

    tokens: list[int]
    positional_scores: torch.Tensor
    score: float


@dataclass
class GenerationResult:
    """Finished hypotheses best first, plus raw logits of the first step (decoder input `<s>`) and of
    the step that picks the answer (decoder input `<s>` + prefix)."""

    hypotheses: list[Hypothesis]
    first_step_logits: torch.Tensor
    answer_step_logits: torch.Tensor


@dataclass
class _Beam:
    tokens: list[int]  # starts with <s>
    cumulative: list[torch.Tensor]  # float32 running score after each chosen token


def _banned(tokens: Sequence[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram of `tokens` (fairseq's no_repeat_ngram rule)."""
    key = tuple(tokens[len(tokens) - (n - 1) :])
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == key]


class BeamSearch:
    """ModelScope's `SequenceGenerator` with a constraint trie and forced prefix, for one example.

    Beams whose score is -inf (the padding beams fairseq carries while the prefix is forced) can
    never finish, so only finite beams are kept; candidates are otherwise chosen, finished and
    ordered exactly as fairseq's BeamSearch does (top 2*beam, `</s>` finishes only among the first
    `beam` candidates, the first `beam` others continue).
    """

    def __init__(self, settings: BeamSettings, trie: AnswerTrie, pad: int, unk: int, max_beam: int) -> None:
        self.settings = settings
        self.trie = trie
        self.pad, self.unk = pad, unk
        # ModelScope asserts beam_size <= number of answers; more beams could only be filled with -inf.
        self.beam_size = max(1, min(settings.beam_size, max_beam))

    def _lprobs(self, logits: torch.Tensor, beam: _Beam, step: int, prefix: Sequence[int], max_len: int):
        s = self.settings
        logits = logits.float() / s.temperature
        bos, eos = self.trie.bos, self.trie.eos
        if len(beam.tokens) > len(prefix):
            allowed = self.trie.next_tokens([bos, *beam.tokens[len(prefix) + 1 :]])
            logits = logits.masked_fill(~_allowed_mask(allowed, logits.shape[-1], logits.device), -math.inf)
        lprobs = F.log_softmax(logits, dim=-1)
        if step < len(prefix) and step < max_len:
            forced = prefix[step]
            kept = lprobs[forced].clone()
            lprobs = torch.full_like(lprobs, -math.inf)
            lprobs[forced] = kept
        elif step < s.min_len:
            lprobs[eos] = -math.inf
        lprobs = lprobs.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        lprobs[self.pad] = -math.inf
        lprobs[self.unk] -= s.unk_penalty
        if step >= max_len:
            eos_value = lprobs[eos].clone()
            lprobs = torch.full_like(lprobs, -math.inf)
            lprobs[eos] = eos_value
        n = s.no_repeat_ngram_size
        # fairseq blocks repeats only once the step reaches the end of the forced prefix
        if n > 0 and len(prefix) < step + n - 1 and step + 2 - n >= 0:
            banned = _banned(beam.tokens, n)
            if banned:
                lprobs[banned] = -math.inf
        return lprobs

    def _finish(self, beam: _Beam, score: torch.Tensor, step: int) -> Hypothesis:
        cumulative = torch.stack([*beam.cumulative, score])
        positional = torch.cat([cumulative[:1], cumulative[1:] - cumulative[:-1]])
        final = score / (step + 1) ** self.settings.len_penalty if self.settings.normalize_scores else score
        return Hypothesis([*beam.tokens[1:], self.trie.eos], positional, float(final))

    def run(self, decode: DecodeFn, prefix: Sequence[int], source_length: int) -> GenerationResult:
        """Search for one example; `decode` must already hold its encoder output."""
        s, eos = self.settings, self.trie.eos
        max_len = int(s.max_len_a * source_length + s.max_len_b)
        # fairseq forces </s> at step max_len even inside the prefix, so a prompt longer than
        # max_len_b would end before any answer (ModelScope then labels it ''); leave room instead.
        max_len = max(max_len, len(prefix) + self.trie.longest)
        forced_path = torch.tensor([[self.trie.bos, *prefix]])
        # The forced steps all extend the one live beam, so a single causal pass over <s> + prefix
        # yields the logits of every prefix step and of the answer step.
        path_logits = decode(forced_path)[0]
        beams = [_Beam([self.trie.bos], [])]
        finished: list[Hypothesis] = []
        for step in range(max_len + 1):
            if step <= len(prefix) and len(beams) == 1 and beams[0].tokens == forced_path[0, : step + 1].tolist():
                step_logits = path_logits[step : step + 1]
            else:
                step_logits = decode(torch.tensor([beam.tokens for beam in beams]))[:, -1]
            candidates = []
            for beam, logits in zip(beams, step_logits, strict=True):
                lprobs = self._lprobs(logits, beam, step, prefix, max_len)
                base = beam.cumulative[-1] if beam.cumulative else lprobs.new_zeros(())
                # the overall top 2*beam can only come from each beam's own top 2*beam
                values, tokens = (base + lprobs).topk(min(2 * self.beam_size, lprobs.shape[-1]))
                for value, token in zip(values, tokens.tolist(), strict=True):
                    if torch.isfinite(value):
                        candidates.append((value, beam, token))
            candidates.sort(key=lambda c: float(c[0]), reverse=True)
            candidates = candidates[: 2 * self.beam_size]
            for score, beam, token in candidates[: self.beam_size]:
                if token == eos and len(finished) < self.beam_size:
                    finished.append(self._finish(beam, score, step))
            if len(finished) >= self.beam_size or step >= max_len:
                break
            beams = [_Beam([*b.tokens, t], [*b.cumulative, sc]) for sc, b, t in candidates if t != eos]
            beams = beams[: self.beam_size]
            if not beams:
                break  # fairseq would now fail an assertion; return what has finished
        finished.sort(key=lambda h: h.score, reverse=True)
        return GenerationResult(finished, path_logits[0], path_logits[len(prefix)])
