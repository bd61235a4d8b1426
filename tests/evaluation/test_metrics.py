from __future__ import annotations

import math

import pytest

from pixsearch.evaluation.metrics import bleu, cider, normalise_answer, rank_matrix, recall_at_k, vqa_accuracy


def test_recall_counts_a_hit_within_k() -> None:
    rankings = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"]]
    relevant = [{"a"}, {"a"}, {"x"}]
    assert recall_at_k(rankings, relevant, (1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3}


def test_recall_with_several_relevant_items_uses_the_best_ranked() -> None:
    assert recall_at_k([[5, 7, 9]], [{9, 7}], (1, 2)) == {1: 0.0, 2: 1.0}


def test_rank_matrix_orders_by_similarity() -> None:
    import numpy as np

    assert rank_matrix(np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]]), 2) == [[1, 2], [0, 1]]


def test_vqa_soft_accuracy_by_hand() -> None:
    # ten humans; 3 said "2": leaving one out at a time gives 2/3 (3 times) or 1 (7 times)
    answers = ["2", "2", "2"] + ["3"] * 7
    assert vqa_accuracy("two", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("3", answers) == 1.0
    assert vqa_accuracy("1", ["1"] + ["0"] * 9) == pytest.approx(9 * (1 / 3) / 10)
    assert vqa_accuracy("dog", ["cat"] * 10) == 0.0


def test_vqa_answer_normalisation() -> None:
    assert normalise_answer("The Red!") == "red"
    assert normalise_answer("  Three ") == "3"
    assert normalise_answer("2.5") == "2.5"


def test_bleu4_by_hand() -> None:
    assert bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(1.0)
    # precisions 5/6, 3/5, 2/4, 1/3; same length as the reference, so no brevity penalty
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["the cat sat on a mat"], [["the cat sat on the mat"]]) == pytest.approx(expected)


def test_bleu4_brevity_penalty_and_clipping() -> None:
    # candidate of 4 words, closest reference 6 words: BP = exp(1 - 6/4); all n-grams match
    assert bleu(["the cat sat on"], [["the cat sat on the mat", "a dog sat on the mat and the cat"]]) == pytest.approx(
        math.exp(1 - 6 / 4)
    )
    # "the the the the": unigram clipped to 2 matches of 4, no bigram match -> 0
    assert bleu(["the the the the"], [["the cat the mat"]]) == 0.0


def test_cider_by_hand() -> None:
    # two images; every n-gram of image 1 appears only in image 1's references (df 1 of 2),
    # so each candidate equal to its single reference scores exactly 10 (cosine 1 at every n)
    candidates = ["a red circle left of a blue square", "a green triangle above a small yellow circle"]
    references = [[candidates[0]], [candidates[1]]]
    assert cider(candidates, references) == pytest.approx(10.0)
    # a candidate sharing nothing with its references scores 0
    assert cider(["zebra", candidates[1]], references) == pytest.approx(5.0)


def test_cider_length_penalty_and_idf() -> None:
    refs = [["a red circle"], ["a blue square"]]
    # "a" is in both reference sets (idf log(2/2) = 0) but cosines of exact copies are still 1 for
    # n = 1..3; a three-word caption has no 4-grams, so the mean over n is 3/4: 7.5
    exact = cider(["a red circle", "a blue square"], refs)
    assert exact == pytest.approx(7.5)
    # one extra word: 4-grams still empty, the others' cosines drop and the length penalty applies
    assert cider(["a red circle circle", "a blue square"], refs) < exact
