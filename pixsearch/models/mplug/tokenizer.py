"""The BERT WordPiece tokenizer mPLUG uses, built on `tokenizers` from the directory's `vocab.txt`.

Encoding follows transformers' `BertTokenizer` with its defaults (lower-case, accents stripped,
CJK characters split, `[CLS] .. [SEP]`), padded and truncated the way ModelScope's
`MPlugPreprocessor` asks: `padding='max_length'`, `max_length=25`. Decoding restates the slow
`BertTokenizer.decode(ids, skip_special_tokens=True)` that ModelScope calls: drop special ids, join
with spaces, glue `##` pieces, then the English clean-up (" ." -> ".", " 's" -> "'s", ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from pixsearch.errors import ModelLoadError

MAX_TEXT_TOKENS = 25
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# transformers' clean_up_tokenization, in its order
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"))
_CLEAN_UP += ((" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))

# CJK ideographs (BERT's _is_chinese_char ranges), CJK punctuation, kana and full-width forms
_CJK = (
    "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0002a6df\U0002a700-\U0002b81f\U0002b820-\U0002ceaf\U0002f800-\U0002fa1f"
)
_SPACE_NEXT_TO_CJK = re.compile(f"(?<=[{_CJK}]) +| +(?=[{_CJK}])")


def read_vocab(path: Path) -> dict[str, int]:
    """token -> id, one token a line; a repeated token keeps its last line, as BertTokenizer does."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as error:
        raise ModelLoadError(f"cannot read vocabulary {path}: {error}") from error
    if lines and lines[-1] == "":
        lines.pop()
    return {token: index for index, token in enumerate(lines)}


def join_cjk(text: str) -> str:
    """Remove the spaces WordPiece decoding puts next to CJK characters ("一 只 狗" -> "一只狗")."""
    return _SPACE_NEXT_TO_CJK.sub("", text)


class MplugTokenizer:
    """Encodes questions/queries to fixed-length id arrays and decodes generated ids to text."""

    def __init__(self, vocab: dict[str, int], max_length: int = MAX_TEXT_TOKENS) -> None:
        missing = [token for token in SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ModelLoadError(f"mPLUG vocabulary lacks the special tokens {', '.join(missing)}")
        self.vocab = vocab
        self.id_to_token = {index: token for token, index in vocab.items()}
        self.max_length = max_length
        self.pad_id = vocab["[PAD]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.special_ids = frozenset(vocab[token] for token in SPECIAL_TOKENS)
        self._tokenizer = self._build(vocab, max_length)

    @classmethod
    def from_dir(cls, model_dir: Path, max_length: int = MAX_TEXT_TOKENS) -> MplugTokenizer:
        """The tokenizer of a model directory's `vocab.txt` (raises ModelLoadError when unreadable)."""
        return cls(read_vocab(model_dir / "vocab.txt"), max_length)

    def _build(self, vocab: dict[str, int], max_length: int) -> Tokenizer:
        tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)]
        )
        tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(length=max_length, pad_id=self.pad_id, pad_token="[PAD]")
        return tokenizer

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise lower-cased texts as ModelScope does.

        Returns:
            (input_ids, attention_mask), both int64 [n, max_length].
        """
        encodings = self._tokenizer.encode_batch([text.lower() for text in texts])
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids.reshape(len(texts), self.max_length), mask.reshape(len(texts), self.max_length)

    def decode(self, ids: Iterable[int], cjk: bool = False) -> str:
        """`BertTokenizer.decode(ids, skip_special_tokens=True)`; with `cjk`, also `join_cjk`.

        Ids outside the vocabulary decode as `[UNK]` and are therefore skipped, as in BertTokenizer.
        """
        tokens = [self.id_to_token.get(int(i), "[UNK]") for i in ids if int(i) not in self.special_ids]
        tokens = [token for token in tokens if token not in SPECIAL_TOKENS]
        text = " ".join(tokens).replace(" ##", "").strip()
        for before, after in _CLEAN_UP:
            text = text.replace(before, after)
        return join_cjk(text) if cjk else text
