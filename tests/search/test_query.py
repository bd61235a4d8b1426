from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from pixsearch.errors import ConfigError
from pixsearch.search.fusion import group_near_duplicates, reciprocal_rank_fusion
from pixsearch.search.query import Filters, parse_query


def test_plain_words_are_a_vector_query_and_optional_keywords() -> None:
    parsed = parse_query("a dog on a beach")
    assert parsed.terms == ((1.0, "a dog on a beach"),)
    assert parsed.words == ("a", "dog", "on", "a", "beach") and parsed.phrases == ()


def test_phrases_exclusions_and_filters() -> None:
    parsed = parse_query(
        '"red car" -snow tag:beach tag:summer_holiday camera:Canon folder:trips has:text orientation:portrait'
    )
    assert parsed.phrases == ("red car",) and parsed.exclude == ("snow",)
    assert parsed.filters == Filters(
        folder="trips", tags=("beach", "summer holiday"), camera="Canon", has_text=True, orientation="portrait"
    )
    assert parsed.terms == ((1.0, "red car"),)


def test_dates() -> None:
    parsed = parse_query("after:2020-03 before:2021-06-15 party")
    assert parsed.filters.after == datetime(2020, 3, 1) and parsed.filters.before == datetime(2021, 6, 15)


def test_weights_and_arithmetic() -> None:
    assert parse_query("2:cat dog").terms == ((2.0, "cat"), (1.0, "dog"))
    assert parse_query("0.5:sunset").terms == ((0.5, "sunset"),)
    assert parse_query('"cat" + "hat" - "dog"').terms == ((1.0, "cat"), (1.0, "hat"), (-1.0, "dog"))


@pytest.mark.parametrize(
    "text, message",
    [
        ('"unclosed', "unclosed quote"),
        ("after:yesterday", "YYYY"),
        ("orientation:round", "portrait"),
        ("has:faces", "has:text"),
    ],
)
def test_bad_syntax_is_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_query(text)


def test_reciprocal_rank_fusion_on_constructed_rankings() -> None:
    # 3 is second in both lists and so beats 1 and 2, each first in one list only
    assert reciprocal_rank_fusion([[1, 3, 4], [2, 3]], [1.0, 1.0], k=1)[0] == 3
    assert reciprocal_rank_fusion([[1, 3, 4], [2, 3]], [1.0, 1.0], k=60) == [3, 1, 2, 4]
    assert reciprocal_rank_fusion([[1, 2], [2, 1]], [1.0, 0.0]) == [1, 2]  # a zero weight ignores a list
    assert reciprocal_rank_fusion([[], [5, 6]], [1.0, 1.0]) == [5, 6]


def test_near_duplicates_collapse_onto_the_first() -> None:
    a, b = np.eye(3, dtype=np.float32)[:2]
    near_a = (a + 0.01 * b) / np.linalg.norm(a + 0.01 * b)
    assert group_near_duplicates(np.stack([a, b, near_a]), 0.95) == [0, 1, 0]
