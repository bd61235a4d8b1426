"""Retrieval recall, VQAv2 soft accuracy, BLEU-4 and CIDEr-D, written from their published definitions."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt

# -- retrieval ------------------------------------------------------------------------------


def recall_at_k(
    rankings: Sequence[Sequence[Hashable]], relevant: Sequence[set[Hashable]], ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Share of queries with at least one relevant item among their first k results, for each k.

    Args:
        rankings: per query, result ids best first.
        relevant: per query, the ids that count as a hit.

    Returns:
        {k: recall in [0, 1]}; 0 for every k when there are no queries.
    """
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(relevant)} relevant sets")
    if not rankings:
        return {k: 0.0 for k in ks}
    first = [_first_hit(ranking, wanted) for ranking, wanted in zip(rankings, relevant, strict=True)]
    return {k: sum(1 for rank in first if rank is not None and rank < k) / len(first) for k in ks}


def _first_hit(ranking: Sequence[Hashable], wanted: set[Hashable]) -> int | None:
    return next((rank for rank, item in enumerate(ranking) if item in wanted), None)


def rank_matrix(similarity: npt.NDArray[np.floating], depth: int) -> list[list[int]]:
    """Column indices of each row's `depth` highest similarities, best first (ties: lower index first)."""
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :depth]
    return [row.tolist() for row in order]


# -- VQA ------------------------------------------------------------------------------------

_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:']")


def normalise_answer(answer: str) -> str:
    """VQAv2's answer normalisation: lower case, punctuation dropped (a period only outside numbers),
    number words as digits, articles removed."""
    text = answer.lower().replace("\n", " ").replace("\t", " ").strip()
    text = _PUNCTUATION.sub("", text)
    text = re.sub(r"(?<!\d)\.(?!\d)", "", text)
    words = [_NUMBERS.get(word, word) for word in text.split() if word not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 soft accuracy of one prediction against the human answers.

    min(1, matches / 3), averaged over the answer sets that leave out one human answer each
    (so with ten answers, three matching ones give 0.9 and four or more give 1.0).
    """
    if not answers:
        raise ValueError("a question needs at least one reference answer")
    predicted = normalise_answer(prediction)
    matches = [normalise_answer(a) == predicted for a in answers]
    if len(answers) == 1:
        return min(1.0, matches[0] / 3)
    total = sum(matches)
    return sum(min(1.0, (total - hit) / 3) for hit in matches) / len(answers)


# -- captions -------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lower-cased words with punctuation dropped (what COCO's PTB tokenizer step leaves, closely)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002): clipped n-gram precisions pooled over the corpus,
    geometric mean for n = 1..max_n, brevity penalty against the closest reference lengths.

    Returns:
        in [0, 1]; 0 when some n-gram order has no match at all (no smoothing, as in COCO's scorer).
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    matched, guessed = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for candidate, refs in zip(candidates, references, strict=True):
        words = tokenize(candidate)
        ref_words = [tokenize(r) for r in refs]
        if not ref_words:
            raise ValueError("every candidate needs at least one reference")
        cand_len += len(words)
        # the closest reference length; the shorter one on a tie
        ref_len += min((abs(len(r) - len(words)), len(r)) for r in ref_words)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(words, n)
            most = Counter()
            for r in ref_words:
                most |= _ngrams(r, n)
            matched[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            guessed[n - 1] += max(len(words) - n + 1, 0)
    if cand_len == 0 or min(matched) == 0:
        return 0.0
    log_precision = sum(math.log(m / g) for m, g in zip(matched, guessed, strict=True)) / max_n
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return brevity * math.exp(log_precision)


def cider(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015, the variant COCO reports as "CIDEr"), times 10 as COCO does.

    TF-IDF n-gram vectors with document frequencies over the corpus's reference sets; per n the
    clipped cosine between candidate and each reference times a Gaussian penalty on the length
    difference, averaged over references, then over n = 1..4, then over the corpus.
    """
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"{len(candidates)} candidates and {len(references)} reference lists (need equal, > 0)")
    cand_counts = [_all_ngrams(tokenize(c), n) for c in candidates]
    ref_counts = [[_all_ngrams(tokenize(r), n) for r in refs] for refs in references]
    frequency: Counter[tuple[str, ...]] = Counter()
    for refs in ref_counts:
        frequency.update({gram for counts in refs for gram in counts})
    log_docs = math.log(len(candidates))
    scores = []
    for counts, refs in zip(cand_counts, ref_counts, strict=True):
        vec, norms, length = _tfidf(counts, frequency, log_docs, n)
        total = np.zeros(n)
        for ref in refs:
            ref_vec, ref_norms, ref_length = _tfidf(ref, frequency, log_docs, n)
            total += _similarity(vec, ref_vec, norms, ref_norms, length - ref_length, sigma)
        scores.append(float(np.mean(total)) / len(refs) * 10.0)
    return float(np.mean(scores))


def _all_ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        counts.update(_ngrams(words, k))
    return counts


def _tfidf(counts: Counter[tuple[str, ...]], frequency: Counter[tuple[str, ...]], log_docs: float, n: int):
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    norms = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        order = len(gram) - 1
        value = tf * (log_docs - math.log(max(1.0, frequency[gram])))
        vec[order][gram] = value
        norms[order] += value * value
        if order == 1:
            # the reference scorer measures length in bigrams; kept so scores match published ones
            length += tf
    return vec, [math.sqrt(x) for x in norms], length


def _similarity(vec, ref_vec, norms, ref_norms, delta: float, sigma: float) -> np.ndarray:
    values = np.zeros(len(vec))
    for order, grams in enumerate(vec):
        for gram, value in grams.items():
            ref_value = ref_vec[order].get(gram, 0.0)
            values[order] += min(value, ref_value) * ref_value
        if norms[order] != 0 and ref_norms[order] != 0:
            values[order] /= norms[order] * ref_norms[order]
        values[order] *= math.exp(-(delta**2) / (2 * sigma**2))
    return values
