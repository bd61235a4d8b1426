"""OFA's English tokenizer: BART's byte-level BPE plus the image-code and location-bin tokens.

The original is transformers' (slow) BartTokenizer over `vocab.json`/`merges.txt`, to which
ModelScope adds `<code_0>`..`<code_8191>` and `<bin_0>`..`<bin_999>` at load time; those ids
follow the BPE vocabulary, so the full vocabulary matches the model's `vocab_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from pixsearch.errors import ModelLoadError

NUM_CODES = 8192
NUM_BINS = 1000
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


class OfaTokenizer:
    """Byte-level BPE with OFA's added tokens. Build it with `from_dir`."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        ids = [tokenizer.token_to_id(token) for token in _SPECIALS]
        if None in ids:
            missing = [t for t, i in zip(_SPECIALS, ids, strict=True) if i is None]
            raise ModelLoadError(f"OFA vocab.json lacks the special tokens {missing}")
        self.bos_token_id, self.pad_token_id, self.eos_token_id, self.unk_token_id = ids

    @classmethod
    def from_dir(cls, model_dir: Path) -> OfaTokenizer:
        """Read `vocab.json` and `merges.txt` and add the code and bin tokens, as ModelScope does.

        Raises:
            ModelLoadError: the files are missing or unreadable.
        """
        vocab, merges = model_dir / "vocab.json", model_dir / "merges.txt"
        try:
            bpe = models.BPE.from_file(str(vocab), str(merges))
        except Exception as error:  # tokenizers raises plain Exceptions for bad files
            raise ModelLoadError(f"cannot read the OFA BPE files in {model_dir}: {error}") from error
        tokenizer = Tokenizer(bpe)
        # GPT-2/BART pre-tokenisation: the GPT-2 split regex, bytes mapped to printable characters,
        # and no space added in front (the prompt brings its own leading space).
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        specials = [AddedToken(token, special=True) for token in _SPECIALS]
        # BART's <mask> swallows the space before it.
        specials.append(AddedToken("<mask>", lstrip=True, special=True))
        tokenizer.add_special_tokens(specials)
        tokenizer.add_tokens([f"<code_{i}>" for i in range(NUM_CODES)])
        tokenizer.add_tokens([f"<bin_{i}>" for i in range(NUM_BINS)])
        return cls(tokenizer)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Token ids of `text` without special tokens, cut to `max_length` ids."""
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids[:max_length] if max_length is not None else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
