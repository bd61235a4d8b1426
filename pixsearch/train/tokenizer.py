"""A small word-level tokenizer for models trained from scratch, saved as a BERT WordPiece vocabulary
(`BertTokenizer`), which both the CLIP and the BLIP loaders read with `AutoTokenizer`.

Whole words of the training texts are single tokens; any other lower-case word still tokenises,
into letters (`d ##o ##g`), so a query outside the vocabulary is not one [UNK].
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct words and punctuation marks of `texts` as BERT's basic tokenizer splits them, in order."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall(text.lower()):
            seen.setdefault(word, None)
    return list(seen)


def vocabulary(words: Iterable[str]) -> list[str]:
    """Special tokens, the given words, then single characters and their continuations."""
    chars = list(string.ascii_lowercase + string.digits)
    pieces = chars + [f"##{c}" for c in chars] + list("?.,!'\"-:;()")
    return list(dict.fromkeys(SPECIALS + [w.lower() for w in words] + pieces))


def save_tokenizer(directory: Path, words: Iterable[str]) -> Any:
    """Write vocab.txt and the tokenizer files into `directory`; returns the tokenizer.

    [CLS] starts every text and [SEP] ends it; [DEC] is the bos token BLIP's decoders start from.
    """
    from transformers import BertTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocabulary(words)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True, bos_token="[DEC]")
    tokenizer.save_pretrained(directory)
    return tokenizer
