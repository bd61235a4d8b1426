"""Decoding for mPLUG: the beam search of ModelScope's `TextGenerator`, and greedy search.

Beam search, step by step, as `TextGenerator._fast_translate_batch` does it (no sampling):
- every item starts with beam_size copies of the start token; only the first beam is live
  (the others start at -inf);
- log-probs are log(softmax(logits)); before min_length the end token gets -1e20;
- candidates score (cumulative log-prob) / ((5 + step + 1) / 6) ** 0.6 and the best beam_size of
  beam_size * vocab are kept; the cumulative log-prob carried on is score * penalty;
- a beam that emits the end token is recorded as a hypothesis but stays in the beam, so later
  hypotheses can hold the end token in the middle;
- an item ends when its top beam emits the end token, or at the last step (then all its beams are
  recorded); its hypotheses are sorted by score (stable, best first) and the first beam_size kept.

The decoder is run on the whole prefix each step. `StepFn(prefixes, items)` gets the live prefixes
[n * k, t] (the k rows of an item consecutive) and the item index of each group, and returns the
next-token logits [n * k, vocab].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DecodeSettings:
    beam_size: int = 5
    min_length: int = 1
    max_length: int = 10
    start_id: int = 101
    end_id: int = 102
    length_alpha: float = 0.6


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence: `ids` start with the start token; `score` ranks it (see module doc)."""

    ids: tuple[int, ...]
    score: float
    log_prob: float  # cumulative log-probability of ids[1:], no length penalty


def length_penalty(step: int, alpha: float) -> float:
    """TextGenerator's penalty at 0-based `step`: ((5 + step + 1) / 6) ** alpha."""
    return ((5.0 + (step + 1)) / 6.0) ** alpha


def _record(
    found: list[Hypothesis], sequences: torch.Tensor, scores: torch.Tensor, log_probs: torch.Tensor, beams: torch.Tensor
) -> None:
    for j in beams.tolist():
        found.append(Hypothesis(tuple(sequences[j].tolist()), float(scores[j]), float(log_probs[j])))


def beam_search(step_fn: StepFn, batch: int, settings: DecodeSettings, device: torch.device) -> list[list[Hypothesis]]:
    """The n-best hypotheses (at most beam_size, best first) for each of `batch` items."""
    k = settings.beam_size
    items = torch.arange(batch, device=device)
    sequences = torch.full((batch * k, 1), settings.start_id, dtype=torch.long, device=device)
    cumulative = torch.tensor([0.0] + [float("-inf")] * (k - 1), device=device).repeat(batch)
    found: list[list[Hypothesis]] = [[] for _ in range(batch)]
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for step in range(settings.max_length):
        logits = step_fn(sequences, items).float()
        vocab = logits.shape[-1]
        log_probs = torch.log(torch.softmax(logits, dim=-1))
        if step < settings.min_length:
            log_probs[:, settings.end_id] = -1e20
        penalty = length_penalty(step, settings.length_alpha)
        log_probs += cumulative.view(-1).unsqueeze(1)
        scores, flat_ids = (log_probs / penalty).reshape(-1, k * vocab).topk(k, dim=-1)
        cumulative = scores * penalty
        origin = torch.div(flat_ids, vocab, rounding_mode="floor")
        tokens = flat_ids.fmod(vocab)
        rows = (origin + torch.arange(0, origin.shape[0] * k, k, device=device).unsqueeze(1)).view(-1)
        sequences = torch.cat([sequences.index_select(0, rows), tokens.view(-1, 1)], dim=-1)
        finished = tokens.eq(settings.end_id)
        if step + 1 == settings.max_length:
            finished.fill_(True)
        ended = finished[:, 0].clone()
        if not finished.any():
            continue
        grouped = sequences.view(-1, k, sequences.shape[-1])
        for i, item in enumerate(items.tolist()):
            beams = torch.arange(k) if ended[i] else finished[i].nonzero().view(-1)
            _record(found[item], grouped[i], scores[i], cumulative[i], beams)
            if ended[i]:
                results[item] = sorted(found[item], key=lambda h: h.score, reverse=True)[:k]
        alive = (~ended).nonzero().view(-1)
        if alive.numel() == 0:
            break
        cumulative = cumulative.index_select(0, alive)
        items = items.index_select(0, alive)
        sequences = grouped.index_select(0, alive).view(-1, sequences.shape[-1])
    return results


def greedy_search(step_fn: StepFn, batch: int, settings: DecodeSettings, device: torch.device) -> list[Hypothesis]:
    """Arg-max decoding with the same start/end tokens, min_length and max_length as beam search.

    A sequence stops after its end token; its score is its cumulative log-probability, with log-probs
    taken as in beam search (the end token is blocked after normalising, not renormalised away).
    """
    items = torch.arange(batch, device=device)
    sequences = torch.full((batch, 1), settings.start_id, dtype=torch.long, device=device)
    total = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), settings.max_length + 1, dtype=torch.long, device=device)
    for step in range(settings.max_length):
        log_probs = torch.log_softmax(step_fn(sequences, items).float(), dim=-1)
        if step < settings.min_length:
            log_probs[:, settings.end_id] = float("-inf")
        best, tokens = log_probs.max(dim=-1)
        total = torch.where(done, total, total + best)
        sequences = torch.cat([sequences, tokens.unsqueeze(1)], dim=-1)
        newly = ~done & tokens.eq(settings.end_id)
        lengths[newly] = step + 2
        done |= newly
        if bool(done.all()):
            break
    out = []
    for row in range(batch):
        ids = tuple(sequences[row, : int(lengths[row])].tolist())
        out.append(Hypothesis(ids, float(total[row]), float(total[row])))
    return out
